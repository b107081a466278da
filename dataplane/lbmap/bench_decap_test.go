package lbmap

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/govcloud/govcloud/dataplane/bpfobj"
	"github.com/govcloud/govcloud/dataplane/netnstest"
)

// BenchmarkDecapChecks is the decapsulation part of 'make bench-lb' on its own.
func BenchmarkDecapChecks(b *testing.B) {
	netnstest.RequirePrivileged(b)
	for range b.N {
		benchDecapChecks(b)
	}
}

// benchDecapChecks prices the checks on two paths behind XDP: the cheapest the stack has (a
// blackhole route drops the decapsulated packet after the routing lookup) and the lab's (the
// packet is forwarded to a guest behind a veth, as the VIP route does on a backend host).
func benchDecapChecks(b *testing.B) {
	benchDecapPath(b, false)
	benchDecapPath(b, true)
}

// benchDecapRounds alternate the two builds so drift on the machine hits both alike.
const benchDecapRounds = 5

// benchDecapPath prices the checks of bpf/lb/decap.h (issue 20): the rate of xdp_lb's
// decapsulation path, IPIP from an LB host to a local VIP, built with and without the checks
// (LB_NO_DECAP_CHECKS), on the same maps, in alternating rounds of the same run. The
// decapsulated packets go up the stack (XDP_PASS) to a blackhole route or, toGuest, are
// forwarded to a guest whose veth counts and drops them in XDP. The ratio of medians is
// printed only when both builds pass the same frame to the same bytes and, in every round,
// decapsulated every packet the program saw, dropped none and (toGuest) delivered them all.
func benchDecapPath(b *testing.B, toGuest bool) {
	const (
		lbHost = "198.18.0.10" // the tunnel source
		self   = "198.18.0.1"  // this host's tunnel endpoint (the wire's up0)
		vip    = "203.0.113.10"
		nflows = 16
	)
	w := wire(b)
	path := "blackhole route for the VIP"
	if toGuest {
		path = "forwarded to a guest veth (xdp_sink)"
		guest := netnstest.New(b, "gct-guest")
		if err := netnstest.Veth(w.ns, "vg0", guest, "vg1"); err != nil {
			b.Fatal(err)
		}
		vg1, err := guest.Netlink().LinkByName("vg1")
		if err != nil {
			b.Fatal(err)
		}
		w.ns.MustRun(b, "ip", "route", "add", "203.0.113.0/24", "dev", "vg0")
		w.ns.MustRun(b, "ip", "neigh", "replace", vip, "lladdr", vg1.Attrs().HardwareAddr.String(), "dev", "vg0", "nud", "permanent")
		w.ns.MustRun(b, "sysctl", "-qw", "net.ipv4.conf.vg0.send_redirects=0")
		keepAttached(b, guest, &Dataplane{}, "vg1", w.objs.XdpSink)
	} else {
		w.ns.MustRun(b, "ip", "route", "add", "blackhole", "203.0.113.0/24")
	}
	dp, err := Load(Options{ConnTableSize: 1 << 12})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dp.Close() })
	a := netip.MustParseAddr
	if err := dp.SetConfig(Config{EncapSource4: a(self)}); err != nil {
		b.Fatal(err)
	}
	if err := dp.SetDecapAddrs([]netip.Addr{a(self)}); err != nil {
		b.Fatal(err)
	}
	if err := dp.SetTunnelSources([]netip.Addr{a(lbHost), a("198.18.0.11"), a("2001:db8::10")}); err != nil {
		b.Fatal(err)
	}
	if err := dp.SetLocalVIPs(decapLocalVIPs()); err != nil {
		b.Fatal(err)
	}
	unchecked, _, closeUnchecked := loadNoDecapChecks(b, dp)
	defer closeUnchecked()

	up0, err := w.ns.Netlink().LinkByName("up0")
	if err != nil {
		b.Fatal(err)
	}
	ext := mac("02:00:00:00:00:fe")
	var frames, want [][]byte
	for i := range nflows {
		inner := ipPacket(b, flow{src: fmt.Sprintf("198.51.100.%d", i+1), dst: vip, sport: uint16(20000 + i), dport: 80, payload: strings.Repeat("x", 64)})
		frames = append(frames, frame(b, ext, up0.Attrs().HardwareAddr, 0, tunnel4(lbHost, self, inner, nil)))
		want = append(want, frame(b, ext, up0.Attrs().HardwareAddr, 0, inner)[:14+len(inner)])
	}

	var problems []string
	// Sanity 1: one frame through each build (no live frames): PASS, the same bytes, exactly
	// the inner packet behind the original Ethernet header.
	for _, p := range []struct {
		name string
		prog *ebpf.Program
	}{{"with checks", dp.Program()}, {"without checks", unchecked}} {
		var v uint32
		out := make([]byte, len(frames[0])+64)
		err := w.ns.Do(func() error {
			opts := ebpf.RunOptions{Data: frames[0], DataOut: out, Context: xdpMd{DataEnd: uint32(len(frames[0])), IngressIfindex: uint32(w.ifindex)}}
			var err error
			v, err = p.prog.Run(&opts)
			out = opts.DataOut
			return err
		})
		if err != nil {
			b.Fatalf("%s: %v", p.name, err)
		}
		if v != xdpPass || !bytes.Equal(out, want[0]) {
			problems = append(problems, fmt.Sprintf("%s: verdict %s, output equal to the inner frame %v", p.name, verdictName[v], bytes.Equal(out, want[0])))
		}
	}

	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		b.Fatalf("enabling bpf_stats: %v", err)
	}
	defer stats.Close()
	// One round of one build: rate (pps, wall clock, stack included) and program cost
	// (bpf_stats ns per packet of xdp_gen + the tail-called program), with the counters checked.
	round := func(name string, prog *ebpf.Program) (pps, ns float64) {
		sink0 := sinkPackets(b, w)
		d0, _ := dp.Decapsulated()
		drops0, _ := dp.Drops()
		s0, _ := w.objs.XdpGen.Stats()
		in0 := w.injected
		pps, _ = w.rate(b, prog, frames)
		s1, _ := w.objs.XdpGen.Stats()
		d1, _ := dp.Decapsulated()
		drops1, _ := dp.Drops()
		// The live-frames runner may run a few frames past the repeat count it was given; the
		// program's own run count is exact.
		injected, ran := w.injected-in0, s1.RunCount-s0.RunCount
		if got := d1.Packets - d0.Packets; got != ran || ran < injected {
			problems = append(problems, fmt.Sprintf("%s: decapsulated %d packets, program ran %d times for %d injected", name, got, ran, injected))
		}
		for r, c := range drops1 {
			if n := c.Packets - drops0[r].Packets; n != 0 {
				problems = append(problems, fmt.Sprintf("%s: %d packets dropped as %s", name, n, r))
			}
		}
		// The guest's veth also counts its own few IPv6 neighbour/router packets.
		if got := sinkPackets(b, w) - sink0; toGuest && got < ran {
			problems = append(problems, fmt.Sprintf("%s: guest received %d of %d decapsulated packets", name, got, ran))
		}
		if s1.RunCount > s0.RunCount {
			ns = float64(s1.Runtime-s0.Runtime) / float64(s1.RunCount-s0.RunCount)
		}
		return pps, ns
	}
	var withPPS, withoutPPS, withNS, withoutNS []float64
	for i := range benchDecapRounds {
		// Alternate which build goes first, too.
		order := []bool{true, false}
		if i%2 == 1 {
			order = []bool{false, true}
		}
		for _, checks := range order {
			if checks {
				p, n := round("with checks", dp.Program())
				withPPS, withNS = append(withPPS, p), append(withNS, n)
			} else {
				p, n := round("without checks", unchecked)
				withoutPPS, withoutNS = append(withoutPPS, p), append(withoutNS, n)
			}
		}
	}
	mmm := func(xs []float64, scale float64) string {
		s := slices.Sorted(slices.Values(xs))
		return fmt.Sprintf("min %7.3f  median %7.3f  max %7.3f", s[0]/scale, s[len(s)/2]/scale, s[len(s)-1]/scale)
	}
	med := func(xs []float64) float64 { s := slices.Sorted(slices.Values(xs)); return s[len(s)/2] }
	fmt.Printf("-- decapsulation checks (bpf/lb/decap.h): xdp_lb decapsulating IPIP from an LB host to a local VIP, %d flows, TCP with 64-byte payload,\n", nflows)
	fmt.Printf("   live frames on CPU 0, XDP_PASS into the stack, %s; %d alternating rounds, same maps\n", path, benchDecapRounds)
	fmt.Printf("  rate with checks        Mpps: %s\n", mmm(withPPS, 1e6))
	fmt.Printf("  rate without checks     Mpps: %s\n", mmm(withoutPPS, 1e6))
	fmt.Printf("  gen+xdp_lb with checks    ns: %s  (bpf_stats, per packet)\n", mmm(withNS, 1))
	fmt.Printf("  gen+xdp_lb without checks ns: %s\n", mmm(withoutNS, 1))
	if len(problems) > 0 {
		fmt.Printf("  ratio withheld: sanity checks failed:\n    %s\n", strings.Join(problems, "\n    "))
		b.Errorf("decapsulation benchmark sanity: %s", strings.Join(problems, "; "))
		return
	}
	ratio := med(withPPS) / med(withoutPPS)
	fmt.Printf("  ratio of medians, rate with / without checks: %.3f  (checks cost %.1f%% of the decap path's rate; goal < 5%%)\n", ratio, 100*(1-ratio))
	fmt.Printf("  program cost of the checks (median ns difference): %+.1f ns/packet\n", med(withNS)-med(withoutNS))
}

// sinkPackets is what xdp_sink has counted and dropped so far (all CPUs).
func sinkPackets(b testing.TB, w *benchWire) uint64 {
	var vals []bpfobj.BenchSinkCounter
	if err := w.objs.SinkStats.Lookup(uint32(0), &vals); err != nil {
		b.Fatal(err)
	}
	var n uint64
	for _, v := range vals {
		n += v.Packets
	}
	return n
}
