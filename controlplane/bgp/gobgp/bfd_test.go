package gobgp

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/govcloud/govcloud/controlplane/bgp"
	"github.com/govcloud/govcloud/controlplane/bgp/frrtest"
	"github.com/govcloud/govcloud/dataplane/netnstest"
)

const bfddConf = `bfd
 profile fast
  transmit-interval 100
  receive-interval 100
  detect-multiplier 3
 !
!
`

// bfdFabric is a ToR (FRR bgpd + bfdd + zebra) and two hosts behind a switch (a bridge in its
// own namespace, so a dead host does not take the ToR's link down): hBFD peers with BFD at
// 100 ms x 3, hHold with the hold timer only (3 s); both advertise the same VIP.
type bfdFabric struct {
	tor, sw, hBFD, hHold *netnstest.NS
	frr                  *frrtest.Router
	spBFD, spHold        *remote
	cfgBFD, cfgHold      bgp.Config
}

var bfdVIP = netip.MustParsePrefix("198.18.117.1/32")

const (
	bfdTorAddr  = "198.18.17.1"
	bfdHostAddr = "198.18.17.2"
	holdHost    = "198.18.17.3"
)

func newBFDFabric(tb testing.TB) *bfdFabric {
	tb.Helper()
	netnstest.RequirePrivileged(tb)
	frrtest.Require(tb)
	f := &bfdFabric{tor: netnstest.New(tb, "gct-bft"), sw: netnstest.New(tb, "gct-bfs"),
		hBFD: netnstest.New(tb, "gct-bfa"), hHold: netnstest.New(tb, "gct-bfb")}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	must(tb, f.sw.Netlink().LinkAdd(br))
	for i, p := range []struct {
		ns   *netnstest.NS
		name string
		addr string
	}{{f.tor, "down", bfdTorAddr}, {f.hBFD, "up", bfdHostAddr}, {f.hHold, "up", holdHost}} {
		port := fmt.Sprintf("p%d", i)
		must(tb, netnstest.Veth(f.sw, port, p.ns, p.name))
		l, err := f.sw.Netlink().LinkByName(port)
		must(tb, err)
		must(tb, f.sw.Netlink().LinkSetMaster(l, br))
		must(tb, p.ns.AddrAdd(p.name, p.addr+"/24"))
	}
	must(tb, f.sw.Netlink().LinkSetUp(br))
	conf := frrConf(65000, bfdTorAddr, nil,
		torNeighbor{addr: bfdHostAddr, asn: 65117, extra: []string{"timers 1 3", "bfd", "bfd profile fast"}},
		torNeighbor{addr: holdHost, asn: 65118, extra: []string{"timers 1 3"}})
	f.frr = frrtest.StartWith(tb, f.tor, conf, frrtest.Options{Zebra: true, BFD: bfddConf})
	f.spBFD, f.spHold = startSpeaker(tb, f.hBFD), startSpeaker(tb, f.hHold)
	ads := []bgp.Advertisement{{Prefix: bfdVIP}}
	f.cfgBFD = bgp.Config{RouterID: netip.MustParseAddr(bfdHostAddr), ASN: 65117, Peers: []bgp.Peer{{Address: netip.MustParseAddr(bfdTorAddr), ASN: 65000,
		HoldTime: 3 * time.Second, Keepalive: time.Second, BFD: &bgp.BFD{MinTx: 100 * time.Millisecond, MinRx: 100 * time.Millisecond, Multiplier: 3}}}}
	f.cfgHold = bgp.Config{RouterID: netip.MustParseAddr(holdHost), ASN: 65118, Peers: []bgp.Peer{{Address: netip.MustParseAddr(bfdTorAddr), ASN: 65000,
		HoldTime: 3 * time.Second, Keepalive: time.Second}}}
	f.spBFD.MustSet(f.cfgBFD, ads)
	f.spHold.MustSet(f.cfgHold, ads)
	tb.Cleanup(func() {
		if tb.Failed() {
			out, _ := f.frr.Vtysh("show bfd peers", "show bgp neighbors "+bfdHostAddr)
			tb.Logf("FRR:\n%s", truncateS(out, 4000))
		}
	})
	f.waitBothUp(tb)
	return f
}

// nexthops returns the gateways of the ToR's kernel route to the VIP.
func (f *bfdFabric) nexthops() []string {
	rs, err := f.tor.Netlink().RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: netipNet(bfdVIP)}, netlink.RT_FILTER_DST)
	if err != nil {
		return nil
	}
	var out []string
	for _, r := range rs {
		if r.Gw != nil {
			out = append(out, r.Gw.String())
		}
		for _, nh := range r.MultiPath {
			out = append(out, nh.Gw.String())
		}
	}
	return out
}

// waitBothUp waits for both sessions, the BFD session (both ends) and both next hops in the
// ToR's kernel route.
func (f *bfdFabric) waitBothUp(tb testing.TB) {
	tb.Helper()
	frrtest.WaitFor(tb, "both hosts' next hops in the ToR's kernel route, BFD up", 30*time.Second, func() (bool, error) {
		nh := f.nexthops()
		st := f.spBFD.Peer(bfdTorAddr)
		ok := slices.Contains(nh, bfdHostAddr) && slices.Contains(nh, holdHost) && st.BFD != nil && st.BFD.State == "up"
		return ok, fmt.Errorf("next hops %v, speaker's BFD %+v", nh, st.BFD)
	})
}

// killRun takes both hosts' links down at once (the hosts die; the ToR's link stays up) and
// returns how long until the ToR's kernel route lost each host's next hop; then it brings
// the hosts back and waits until all is up again.
func (f *bfdFabric) killRun(tb testing.TB) (withBFD, holdOnly time.Duration) {
	tb.Helper()
	links := []netlink.Link{}
	for _, ns := range []*netnstest.NS{f.hBFD, f.hHold} {
		l, err := ns.Netlink().LinkByName("up")
		must(tb, err)
		links = append(links, l)
	}
	t0 := time.Now()
	must(tb, f.hBFD.Netlink().LinkSetDown(links[0]))
	must(tb, f.hHold.Netlink().LinkSetDown(links[1]))
	for time.Since(t0) < 10*time.Second && (withBFD == 0 || holdOnly == 0) {
		nh := f.nexthops()
		if withBFD == 0 && !slices.Contains(nh, bfdHostAddr) {
			withBFD = time.Since(t0)
		}
		if holdOnly == 0 && !slices.Contains(nh, holdHost) {
			holdOnly = time.Since(t0)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if withBFD == 0 || holdOnly == 0 {
		tb.Fatalf("next hops still in the ToR's route 10 s after the hosts died: %v", f.nexthops())
	}
	must(tb, f.hBFD.Netlink().LinkSetUp(links[0]))
	must(tb, f.hHold.Netlink().LinkSetUp(links[1]))
	f.waitBothUp(tb)
	return withBFD, holdOnly
}

// TestBFD: the speaker's BFD comes up with FRR's bfdd (100 ms x 3, a Poll Sequence on the way
// up), shows in Status, and a dead host leaves the ToR's route in under a second while the
// hold-timer-only host takes about the hold time.
func TestBFD(t *testing.T) {
	f := newBFDFabric(t)
	var peers []struct {
		Peer   string `json:"peer"`
		Status string `json:"status"`
		Timers struct {
			RequiredMinRx int `json:"requiredMinRxInterval"`
			DesiredMinTx  int `json:"desiredMinTxInterval"`
		} `json:"remote-timers"`
		RemoteReceive  int `json:"remote-receive-interval"`
		RemoteTransmit int `json:"remote-transmit-interval"`
		RemoteMult     int `json:"remote-detect-multiplier"`
	}
	must(t, f.frr.JSON("show bfd peers json", &peers))
	if len(peers) != 1 || peers[0].Peer != bfdHostAddr || peers[0].Status != "up" || peers[0].RemoteTransmit != 100 || peers[0].RemoteReceive != 100 || peers[0].RemoteMult != 3 {
		out, _ := f.frr.Vtysh("show bfd peers json")
		t.Fatalf("FRR's BFD peers: %s; want %s up with the speaker's 100 ms / 100 ms / 3", out, bfdHostAddr)
	}
	st := f.spBFD.Peer(bfdTorAddr)
	if st.BFD == nil || st.BFD.State != "up" || st.BFD.DetectTime != 300*time.Millisecond || st.BFD.TxInterval != 100*time.Millisecond {
		t.Errorf("speaker's BFD status %+v; want up, detect 300ms, tx 100ms", st.BFD)
	}
	if s := bgp.FormatStatus([]bgp.PeerStatus{st}); !strings.Contains(s, "bfd up (detect 300ms)") {
		t.Errorf("FormatStatus %q does not show the BFD session", s)
	}
	if st := f.spHold.Peer(bfdTorAddr); st.BFD != nil {
		t.Errorf("peer without BFD has BFD status %+v", st.BFD)
	}
	var bfdT, holdT []time.Duration
	for range 3 {
		b, h := f.killRun(t)
		bfdT, holdT = append(bfdT, b), append(holdT, h)
	}
	t.Logf("host killed, ToR removes its next hop: with BFD %v, hold timer only %v", bfdT, holdT)
	for i := range bfdT {
		if bfdT[i] >= time.Second {
			t.Errorf("run %d: with BFD the ToR took %s, want < 1s", i+1, bfdT[i])
		}
		if holdT[i] < 2*time.Second {
			t.Errorf("run %d: the hold-timer-only host left after %s; the comparison is broken (want about 3s)", i+1, holdT[i])
		}
	}
	// The speaker saw its side go down and come back each time.
	// (FRR may also take the BFD session down once more while its BGP session restarts.)
	if st := f.spBFD.Peer(bfdTorAddr); st.BFD == nil || st.BFD.State != "up" || st.BFD.Downs < 3 || st.BFD.Ups != st.BFD.Downs+1 {
		t.Errorf("speaker's BFD after 3 kills: %+v; want up, at least 3 downs, one more up", st.BFD)
	}
}

// BenchmarkBFDReport (make bench-bgp): 20 runs of "the hosts die" (links down behind the
// switch); for each, how long until the ToR's kernel route lost the BFD host's next hop and
// the hold-timer-only host's (hold 3 s), printed as p50/p99 side by side.
func BenchmarkBFDReport(b *testing.B) {
	f := newBFDFabric(b)
	b.ResetTimer()
	var bfdT, holdT []time.Duration
	for range 20 {
		x, y := f.killRun(b)
		bfdT, holdT = append(bfdT, x), append(holdT, y)
	}
	b.StopTimer()
	slices.Sort(bfdT)
	slices.Sort(holdT)
	pct := func(d []time.Duration, p int) time.Duration {
		return d[min(len(d)-1, len(d)*p/100)].Round(time.Millisecond)
	}
	fmt.Printf("bfd: host killed -> ToR removes its next hop, 20 runs: BFD 100ms x 3: p50 %s p99 %s max %s (goal < 1s) | hold timer only (3 s): p50 %s p99 %s max %s\n",
		pct(bfdT, 50), pct(bfdT, 99), bfdT[len(bfdT)-1].Round(time.Millisecond), pct(holdT, 50), pct(holdT, 99), holdT[len(holdT)-1].Round(time.Millisecond))
	b.ReportMetric(float64(pct(bfdT, 99))/1e6, "bfd-p99-ms")
	if pct(bfdT, 99) >= time.Second {
		b.Errorf("BFD p99 %s, want < 1s", pct(bfdT, 99))
	}
}
