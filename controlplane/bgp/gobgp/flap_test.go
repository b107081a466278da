package gobgp

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/bgp"
	"github.com/govcloud/govcloud/controlplane/bgp/frrtest"
	"github.com/govcloud/govcloud/dataplane/netnstest"
)

// TestFlapHysteresis: a VIP's health flaps 20 times in 10 s against a ToR running FRR with
// `bgp dampening` (default parameters). With the speaker's hold-down the ToR gets one
// withdrawal and one announcement and keeps the VIP usable (best path, kernel route); with
// the hold-down off it gets 40 UPDATEs and damps the VIP (the control row: the test can fail).
func TestFlapHysteresis(t *testing.T) {
	netnstest.RequirePrivileged(t)
	frrtest.Require(t)
	for _, tc := range []struct {
		name       string
		hd         bgp.HoldDown
		maxUpdates int
		wantUsable bool
	}{
		{"hold-down (defaults)", bgp.HoldDown{}, 2, true},
		{"hold-down off (control)", bgp.HoldDown{Off: true}, 40, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tor, h := netnstest.New(t, "gct-flt"), netnstest.New(t, "gct-flh")
			must(t, netnstest.Veth(tor, "t", h, "up"))
			must(t, tor.AddrAdd("t", "198.18.16.0/31"))
			must(t, h.AddrAdd("up", "198.18.16.1/31"))
			conf := strings.Replace(frrConf(65000, "198.18.16.0", nil, torNeighbor{addr: "198.18.16.1", asn: 65116}),
				" address-family ipv4 unicast\n", " address-family ipv4 unicast\n  bgp dampening\n", 1)
			frr := frrtest.Start(t, tor, conf, true)
			sp := startSpeaker(t, h)
			cfg := bgp.Config{RouterID: netip.MustParseAddr("198.18.16.1"), ASN: 65116, HoldDown: tc.hd, Peers: []bgp.Peer{
				{Address: netip.MustParseAddr("198.18.16.0"), ASN: 65000, HoldTime: 9 * time.Second}}}
			stable := deptAdvert(netip.MustParsePrefix("198.18.116.2/32"), 65116)
			vip := deptAdvert(netip.MustParsePrefix("198.18.116.1/32"), 65116)
			sp.MustSet(cfg, []bgp.Advertisement{stable, vip})
			waitEstablished(t, sp, "198.18.16.0")
			frrtest.WaitFor(t, "FRR to hold both VIPs", 10*time.Second, func() (bool, error) {
				n, err := frr.Count("ipv4")
				return n == 2, err
			})
			time.Sleep(300 * time.Millisecond)
			before := neighborUpdates(t, frr, "198.18.16.1")
			t0 := time.Now()
			for i := 0; i < 20; i++ {
				sp.MustSet(cfg, []bgp.Advertisement{stable})
				time.Sleep(250 * time.Millisecond)
				sp.MustSet(cfg, []bgp.Advertisement{stable, vip})
				time.Sleep(250 * time.Millisecond)
			}
			flapped := time.Since(t0)
			// Healthy for good now: wait out the hold-down.
			time.Sleep(bgp.DefaultHoldDownInitial + 500*time.Millisecond)
			updates := neighborUpdates(t, frr, "198.18.16.1") - before
			paths, err := frr.Paths(vip.Prefix.String())
			must(t, err)
			usable := len(paths) == 1 && paths[0].Valid && paths[0].Bestpath != nil && paths[0].Bestpath.Overall
			out, _ := tor.Run("ip", "route", "show", vip.Prefix.Addr().String())
			kernel := strings.Contains(out, "via 198.18.16.1")
			raw, _ := frr.Vtysh("show bgp ipv4 unicast " + vip.Prefix.String() + " json")
			damped := strings.Contains(raw, `"dampeningSuppressed":true`) || strings.Contains(raw, `"damped"`)
			t.Logf("20 flaps in %s: %d UPDATEs at FRR; VIP best path %v, kernel route %v, damped %v", flapped.Round(time.Millisecond), updates, usable, kernel, damped)
			if updates > tc.maxUpdates {
				t.Errorf("%d UPDATEs for 20 flaps, want at most %d", updates, tc.maxUpdates)
			}
			if usable != tc.wantUsable || kernel != tc.wantUsable {
				var v any
				_ = json.Unmarshal([]byte(raw), &v)
				t.Errorf("VIP usable at FRR: best path %v, kernel route %v; want %v\n%s", usable, kernel, tc.wantUsable, truncateS(raw, 1500))
			}
			if ok, _ := hasPath(frr, stable.Prefix.String()); !ok {
				t.Error("the stable VIP was disturbed by the flapping one")
			}
		})
	}
}

func neighborUpdates(t *testing.T, frr *frrtest.Router, addr string) int {
	t.Helper()
	n, err := frr.Neighbor(addr)
	must(t, err)
	return n.MessageStats.UpdatesRecv
}

func hasPath(frr *frrtest.Router, prefix string) (bool, error) {
	p, err := frr.Paths(prefix)
	return len(p) == 1 && p[0].Valid, err
}

func truncateS(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
