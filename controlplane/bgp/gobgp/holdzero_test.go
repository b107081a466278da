package gobgp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/bgp"
	"github.com/govcloud/govcloud/controlplane/bgp/frrtest"
	"github.com/govcloud/govcloud/dataplane/netnstest"
)

// TestHoldTimeZero: a ToR proposing hold time 0 (RFC 4271 §4.2: no KEEPALIVEs, no hold timer)
// gets a stable session and the VIPs. GoBGP v3.37.0 made every write's deadline "now + 0"
// and dropped the session at its first UPDATE; third_party/gobgp carries the fix.
func TestHoldTimeZero(t *testing.T) {
	netnstest.RequirePrivileged(t)
	frrtest.Require(t)
	tor, h := netnstest.New(t, "gct-h0t"), netnstest.New(t, "gct-h0h")
	must(t, netnstest.Veth(tor, "t", h, "up"))
	must(t, tor.AddrAdd("t", "198.18.14.0/31"))
	must(t, h.AddrAdd("up", "198.18.14.1/31"))
	frr := frrtest.Start(t, tor, frrConf(65000, "198.18.14.0", nil, torNeighbor{addr: "198.18.14.1", asn: 65114, extra: []string{"timers 0 0"}}), false)
	sp := startSpeaker(t, h)
	var ads []bgp.Advertisement
	for i := 1; i <= 50; i++ {
		ads = append(ads, deptAdvert(netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, 114, byte(i)}), 32), 65114))
	}
	cfg := bgp.Config{RouterID: netip.MustParseAddr("198.18.14.1"), ASN: 65114, Peers: []bgp.Peer{
		{Address: netip.MustParseAddr("198.18.14.0"), ASN: 65000, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second}}}
	sp.MustSet(cfg, ads[:25])
	waitEstablished(t, sp, "198.18.14.0")
	frrtest.WaitFor(t, "FRR to hold the first 25 VIPs", 10*time.Second, func() (bool, error) {
		n, err := frr.Count("ipv4")
		return n == 25, err
	})
	// More UPDATEs on the established session, then a quiet period longer than the
	// speaker's own hold time: nothing may drop.
	sp.MustSet(cfg, ads[10:])
	frrtest.WaitFor(t, "FRR to hold VIPs 11-50", 10*time.Second, func() (bool, error) {
		n, err := frr.Count("ipv4")
		return n == 40, err
	})
	time.Sleep(4 * time.Second)
	var m map[string]struct {
		State       string `json:"bgpState"`
		HoldMsecs   int    `json:"bgpTimerHoldTimeMsecs"`
		Established int    `json:"connectionsEstablished"`
		Dropped     int    `json:"connectionsDropped"`
	}
	must(t, frr.JSON("show bgp neighbors 198.18.14.1 json", &m))
	n := m["198.18.14.1"]
	if n.State != "Established" || n.Established != 1 || n.Dropped != 0 || n.HoldMsecs != 0 {
		t.Errorf("FRR's session with hold time 0: state %s, established %d times, dropped %d, hold %d ms; want Established once, never dropped, hold 0",
			n.State, n.Established, n.Dropped, n.HoldMsecs)
	}
	if c, err := frr.Count("ipv4"); err != nil || c != 40 {
		t.Errorf("FRR holds %d VIPs (%v), want 40", c, err)
	}
}
