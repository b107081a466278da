package hostnet_test

import (
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/govcloud/govcloud/dataplane/hostnet"
	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/dataplane/trunk"
	tt "github.com/govcloud/govcloud/dataplane/trunk/trunktest"
)

// bwGuest is a guest namespace on the test host: port is its host-side veth end.
type bwGuest struct {
	ns        *netnstest.NS
	port, seg string
	addr, mac string
}

// bwHost is one host with lands (two segments: traffic between them is routed by the host,
// never touching the trunk) and health (one segment: bridged), two guests each.
func bwHost(t *testing.T) (*hostnet.Host, func(landsMbps int) hostnet.HostNetwork, map[string]*bwGuest) {
	t.Helper()
	host := netnstest.New(t, "gct-bwh")
	tor := netnstest.New(t, "gct-bwt")
	if err := netnstest.Veth(host, "up0", tor, "h1"); err != nil {
		t.Fatal(err)
	}
	guests := map[string]*bwGuest{
		"lands-web":  {port: "vlw", seg: "lands-web", addr: "198.18.20.10", mac: "02:00:00:00:20:10"},
		"lands-db":   {port: "vld", seg: "lands-db", addr: "198.18.21.10", mac: "02:00:00:00:21:10"},
		"lands-web2": {port: "vlw2", seg: "lands-web", addr: "198.18.20.11", mac: "02:00:00:00:20:11"},
		"health-a":   {port: "vha", seg: "health-web", addr: "198.18.30.10", mac: "02:00:00:00:30:10"},
		"health-b":   {port: "vhb", seg: "health-web", addr: "198.18.30.11", mac: "02:00:00:00:30:11"},
	}
	gw := map[string]string{"lands-web": "198.18.20.1", "lands-db": "198.18.21.1", "health-web": "198.18.30.1"}
	for _, g := range guests {
		g.ns = netnstest.New(t, "gct-bwg")
		if err := netnstest.Veth(host, g.port, g.ns, "eth0"); err != nil {
			t.Fatal(err)
		}
		g.ns.MustRun(t, "ip", "link", "set", "eth0", "address", g.mac)
		if err := g.ns.AddrAdd("eth0", g.addr+"/24"); err != nil {
			t.Fatal(err)
		}
		g.ns.MustRun(t, "ip", "route", "add", "default", "via", gw[g.seg])
	}
	h, err := hostnet.New(hostnet.Config{NetNS: host.Handle(), PinPath: filepath.Join(tt.BPFFS(t), "bw"), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	state := func(landsMbps int) hostnet.HostNetwork {
		d := hostnet.HostNetwork{Uplink: "up0",
			Departments: []hostnet.Department{{Name: "lands", ID: 3, Table: 100, BandwidthMbps: landsMbps}, {Name: "health", ID: 4, Table: 101, BandwidthMbps: 1000}},
			Segments: []hostnet.Segment{
				{Name: "lands-web", Department: "lands", VLAN: 120, IPv4: pfx("198.18.20.0/24"), Gateway: ip("198.18.20.1")},
				{Name: "lands-db", Department: "lands", VLAN: 121, IPv4: pfx("198.18.21.0/24"), Gateway: ip("198.18.21.1")},
				{Name: "health-web", Department: "health", VLAN: 130, IPv4: pfx("198.18.30.0/24"), Gateway: ip("198.18.30.1")},
			}}
		for _, g := range guests {
			d.Guests = append(d.Guests, hostnet.Guest{Segment: g.seg, Ifname: g.port, MAC: tt.MAC(g.mac), Addr: ip(g.addr)})
		}
		return d
	}
	return h, state, guests
}

// TestBandwidthLimit: lands at 100 Mbit/s gets 100 +-10% between its two segments on one host
// (the host routes between the bridges: no trunk on the path) and within one segment (bridged),
// while health, on the same host at the same time, is not held to it; lands' quota raised to 200 speeds the same connection
// up to 200 +-10%; the drops are counted as rate_limit of lands.
func TestBandwidthLimit(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "iperf3", "ss")
	h, state, g := bwHost(t)
	if err := h.Set(state(100)); err != nil {
		t.Fatal(err)
	}
	g["health-a"].ns.MustRun(t, "ping", "-c1", "-W5", g["health-b"].addr)

	// Both paths a department's traffic takes on one host; the trunk's is the lab's.
	for _, tc := range []struct{ name, from, to string }{
		{"routed by the host between two segments", "lands-db", "lands-web"},
		{"bridged within a segment", "lands-web2", "lands-web"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := h.Set(state(100)); err != nil {
				t.Fatal(err)
			}
			from, to := g[tc.from], g[tc.to]
			to.ns.MustRun(t, "ping", "-c1", "-W5", from.addr)
			dropsBefore := landsDrops(t, h)
			const secs, change = 16, 8
			lands := netnstest.StartIperf(t, to.ns.Name, from.ns.Name, from.addr, "5301", secs)
			health := netnstest.StartIperf(t, g["health-a"].ns.Name, g["health-b"].ns.Name, g["health-b"].addr, "5302", change-2)
			time.Sleep(change * time.Second)
			if err := h.Set(state(200)); err != nil {
				t.Fatal(err)
			}
			hv := health.Wait(t)
			lv := lands.Wait(t)
			t.Logf("lands Mbit/s per second: %.0f", scale(lv))
			t.Logf("health Mbit/s per second: %.0f", scale(hv))
			if len(lv) < secs || len(hv) < change-2 {
				t.Fatalf("iperf3 reported %d and %d one-second intervals, want %d and %d", len(lv), len(hv), secs, change-2)
			}
			// Leave out the first second (slow start, full bucket) and the seconds around the change.
			before, beforeMed, errBefore := netnstest.HeldAt(lv, 1, change-1, 100)
			after, afterMed, errAfter := netnstest.HeldAt(lv, change+1, secs, 200)
			healthMbps := netnstest.MeanMbps(hv, 1, change-2)
			t.Logf("lands at 100: mean %.1f, median %.1f Mbit/s; at 200: mean %.1f, median %.1f Mbit/s; health meanwhile %.1f Mbit/s",
				before, beforeMed, after, afterMed, healthMbps)
			if errBefore != nil {
				t.Errorf("lands at a 100 Mbit/s quota: %v", errBefore)
			}
			if errAfter != nil {
				t.Errorf("lands' same connection after the quota went to 200: %v", errAfter)
			}
			// health's own limit is 1000: at least twice lands' shows it was not held to lands'.
			if healthMbps < 200 {
				t.Errorf("health got %.1f Mbit/s next to lands, want >= 200 (not lands' limit)", healthMbps)
			}
			if d := landsDrops(t, h) - dropsBefore; d == 0 {
				t.Errorf("no rate_limit drops counted for lands")
			}
		})
	}
	rates, err := h.Trunk().Rates()
	if err != nil {
		t.Fatal(err)
	}
	if rates[3].BitsPerSecond != 200e6 || rates[4].BitsPerSecond != 1000e6 {
		t.Errorf("rates in the kernel %+v, want lands 200e6 and health 1000e6", rates)
	}
	// Unset: the limiter leaves the ports of lands.
	if err := h.Set(state(0)); err != nil {
		t.Fatal(err)
	}
	att, err := h.Trunk().Attached()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(att[trunk.RoleGuestTX]) + len(att[trunk.RoleGuestRX]); n != 4 { // health's two ports, each way
		t.Errorf("guest limiter attachments after lands' quota was unset: %v, want health's only", att)
	}
	if gp, err := h.Trunk().Guests(); err != nil || len(gp) != 2 {
		t.Errorf("policed guest ports after lands' quota was unset: %v (%v), want health's two", gp, err)
	}
	if r, err := h.Trunk().Rates(); err != nil || len(r) != 1 || r[4].BitsPerSecond != 1000e6 {
		t.Errorf("rates after lands' quota was unset: %v (%v), want health's only", r, err)
	}
}

// landsDrops is the rate_limit drops of lands (department 3), all segments.
func landsDrops(t *testing.T, h *hostnet.Host) uint64 {
	t.Helper()
	drops, err := h.Trunk().Drops()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for k, c := range drops {
		if k.Reason == trunk.DropRateLimit && k.Department == 3 {
			n += c.Packets
		}
	}
	return n
}

func scale(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = math.Round(x / 1e6)
	}
	return out
}
