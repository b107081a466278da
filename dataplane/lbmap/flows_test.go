package lbmap

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/govcloud/govcloud/lb"
)

func snatPort(client string, vip string, cport, vport uint16, proto lb.Protocol) uint16 {
	h := FlowHash(netip.MustParseAddr(client), netip.MustParseAddr(vip), cport, vport, proto)
	return uint16(1024 + h%(65536-1024))
}

// nat: the request is rewritten to backend:port from the SNAT address, the reply back to
// VIP -> client, checksums correct both ways (compared with gopacket's full recomputation).
func TestXDPNAT(t *testing.T) {
	r := newRig(t, Options{})
	mustSet(t, r.dp, testServices())
	ext := mac("02:00:00:00:00:fe")
	for _, tc := range []struct {
		name              string
		client, vip, be   string
		cport, vport, bpt uint16
		udp               bool
	}{
		{name: "v4 tcp", client: client4, vip: "203.0.113.12", be: natBE4, cport: 41000, vport: 80, bpt: 8080},
		{name: "v6 udp", client: client6, vip: "2001:db8:f::12", be: natBE6, cport: 41001, vport: 53, bpt: 5353, udp: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proto := lb.TCP
			if tc.udp {
				proto = lb.UDP
			}
			self := self4
			if netip.MustParseAddr(tc.vip).Is6() {
				self = self6
			}
			sp := snatPort(tc.client, tc.vip, tc.cport, tc.vport, proto)
			req := ipPacket(t, flow{src: tc.client, dst: tc.vip, sport: tc.cport, dport: tc.vport, udp: tc.udp, syn: !tc.udp, payload: "hello"})
			wantReq := ipPacket(t, flow{src: self, dst: tc.be, sport: sp, dport: tc.bpt, udp: tc.udp, syn: !tc.udp, payload: "hello"})
			v, out := r.run(t, r.dp.Program(), frame(t, ext, upMAC, 0, req))
			if v != xdpTX {
				t.Fatalf("request verdict %s, want TX", verdictName[v])
			}
			if want := frame(t, upMAC, neighbors[tc.be], 0, wantReq); !bytes.Equal(out, want) {
				t.Fatalf("request\n got  %s\n want %s", hex.EncodeToString(out), hex.EncodeToString(want))
			}
			reply := ipPacket(t, flow{src: tc.be, dst: self, sport: tc.bpt, dport: sp, udp: tc.udp, payload: "world"})
			wantReply := ipPacket(t, flow{src: tc.vip, dst: tc.client, sport: tc.vport, dport: tc.cport, udp: tc.udp, payload: "world"})
			v, out = r.run(t, r.dp.Program(), frame(t, neighbors[tc.be], upMAC, 0, reply))
			if v != xdpTX {
				t.Fatalf("reply verdict %s, want TX", verdictName[v])
			}
			if want := frame(t, upMAC, clientMAC, 0, wantReply); !bytes.Equal(out, want) {
				t.Fatalf("reply\n got  %s\n want %s", hex.EncodeToString(out), hex.EncodeToString(want))
			}
			// A reply to a port nobody reserved is not ours.
			stray := frame(t, neighbors[tc.be], upMAC, 0, ipPacket(t, flow{src: tc.be, dst: self, sport: tc.bpt, dport: sp + 1, udp: tc.udp}))
			if v, out := r.run(t, r.dp.Program(), stray); v != xdpPass || !bytes.Equal(out, stray) {
				t.Fatalf("stray reply: verdict %s, changed %v", verdictName[v], !bytes.Equal(out, stray))
			}
		})
	}
}

// ICMP frag-needed / packet-too-big about a VIP flow reaches the flow's backend: the one the
// client's packets go to, over many flows so both backends are exercised.
func TestXDPICMPTooBigFollowsFlow(t *testing.T) {
	r := newRig(t, Options{})
	mustSet(t, r.dp, testServices())
	ext := mac("02:00:00:00:00:fe")
	for _, c := range []struct{ vip, client, router string }{
		{"203.0.113.13", client4, "198.51.100.1"},
		{"2001:db8:f::13", client6, "2001:db8:1::fe"},
	} {
		seen := map[string]int{}
		for port := uint16(42000); port < 42032; port++ {
			data := ipPacket(t, flow{src: c.client, dst: c.vip, sport: port, dport: 80, payload: "data"})
			v, out := r.run(t, r.dp.Program(), frame(t, ext, upMAC, 0, data))
			if v != xdpTX {
				t.Fatalf("%s flow %d: verdict %s", c.vip, port, verdictName[v])
			}
			host := outerDst(t, out)
			seen[host]++
			icmp := icmpTooBig(t, c.router, c.vip, c.client, 80, port)
			v, out = r.run(t, r.dp.Program(), frame(t, ext, upMAC, 0, icmp))
			if v != xdpTX {
				t.Fatalf("%s icmp for flow %d: verdict %s", c.vip, port, verdictName[v])
			}
			if got := outerDst(t, out); got != host {
				t.Fatalf("%s icmp for flow %d went to %s, the flow goes to %s", c.vip, port, got, host)
			}
			// The error travels unchanged inside the tunnel (the outer v6 flow label is the flow's).
			if want := dsrTo(t, host, 0, icmp); len(out) != len(want) || !bytes.Equal(out[len(out)-len(icmp):], icmp) {
				t.Fatalf("icmp not carried unchanged inside the tunnel:\n got  %x\n want %x", out, want)
			}
		}
		if len(seen) != 2 {
			t.Fatalf("%s: flows used backends %v, want both", c.vip, seen)
		}
	}
}

// outerDst is the outer destination of a dsr-encapsulated frame.
func outerDst(t testing.TB, frame []byte) string {
	t.Helper()
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	switch l := p.NetworkLayer().(type) {
	case *layers.IPv4:
		return l.DstIP.String()
	case *layers.IPv6:
		return netip.AddrFrom16([16]byte(l.DstIP)).String()
	}
	t.Fatalf("no network layer in %x", frame)
	return ""
}

// Established flows keep their backend when the set changes; drained backends keep their
// flows and get no new ones; removed backends lose only their own flows; SYNs never fill the
// connection table.
func TestXDPConntrackDrainAndRemove(t *testing.T) {
	r := newRig(t, Options{})
	ext := mac("02:00:00:00:00:fe")
	vip := "203.0.113.13"
	three := []lb.Backend{be(hostA4, 0, 1), be(hostB4, 0, 1), be(natBE4, 0, 1)}
	mustSet(t, r.dp, []lb.Service{svc("two", 0, vip, 80, lb.TCP, lb.DSR, three...)})

	send := func(port uint16, syn bool) string {
		v, out := r.run(t, r.dp.Program(), frame(t, ext, upMAC, 0, ipPacket(t, flow{src: client4, dst: vip, sport: port, dport: 80, syn: syn})))
		if v != xdpTX {
			t.Fatalf("flow %d: verdict %s", port, verdictName[v])
		}
		return outerDst(t, out)
	}
	// 300 SYNs leave the connection table empty (SYN-flood guard).
	for p := uint16(1); p <= 300; p++ {
		send(50000+p, true)
	}
	if n := countEntries(t, r); n != 0 {
		t.Fatalf("connection table holds %d entries after SYNs only, want 0", n)
	}
	// Establish 300 flows (first ACK inserts).
	owner := map[uint16]string{}
	for p := uint16(1); p <= 300; p++ {
		owner[p] = send(50000+p, false)
	}
	if n := countEntries(t, r); n != 300 {
		t.Fatalf("connection table holds %d entries, want 300", n)
	}
	// Drain host A: its flows stay; no new flow goes to it.
	mustSet(t, r.dp, []lb.Service{svc("two", 0, vip, 80, lb.TCP, lb.DSR, be(hostA4, 0, 0), be(hostB4, 0, 1), be(natBE4, 0, 1))})
	for p := uint16(1); p <= 300; p++ {
		if got := send(50000+p, false); got != owner[p] {
			t.Fatalf("drain: established flow %d moved %s -> %s", p, owner[p], got)
		}
	}
	for p := uint16(1); p <= 200; p++ {
		if got := send(60000+p, true); got == hostA4 {
			t.Fatalf("drain: new flow %d went to the drained backend", p)
		}
	}
	// Remove host B: only its flows move.
	mustSet(t, r.dp, []lb.Service{svc("two", 0, vip, 80, lb.TCP, lb.DSR, be(hostA4, 0, 0), be(natBE4, 0, 1))})
	moved := 0
	for p := uint16(1); p <= 300; p++ {
		got := send(50000+p, false)
		if owner[p] != hostB4 && got != owner[p] {
			t.Fatalf("remove: flow %d on %s moved to %s", p, owner[p], got)
		}
		if owner[p] == hostB4 {
			if got == hostB4 {
				t.Fatalf("remove: flow %d still sent to removed backend", p)
			}
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("no flow was on the removed backend; the test proves nothing")
	}
	vc, err := r.dp.VIPCounters()
	if err != nil {
		t.Fatal(err)
	}
	c := vc[lb.VIP{Addr: netip.MustParseAddr(vip), Port: 80, Proto: lb.TCP}]
	if c.Conns != 300+uint64(moved) || c.Packets != 300+300+300+200+300 {
		t.Fatalf("VIP counters %+v, want conns %d packets %d", c, 300+moved, 1400)
	}
}

func countEntries(t testing.TB, r *rig) int {
	t.Helper()
	fl, err := r.dp.Flows()
	if err != nil {
		t.Fatal(err)
	}
	return len(fl)
}

// dsr backends on this host: IPIP/IP6IP6 from a load-balancer host to a local tunnel endpoint
// is decapsulated and the client's packet passed up unchanged; tunnels to other addresses pass
// untouched. (TestDecapAcceptsOnlyLBTraffic has every class the checks drop.)
func TestXDPDecap(t *testing.T) {
	r := newRig(t, Options{})
	if err := r.dp.SetDecapAddrs([]netip.Addr{netip.MustParseAddr(self4), netip.MustParseAddr(self6)}); err != nil {
		t.Fatal(err)
	}
	if err := r.dp.SetTunnelSources([]netip.Addr{netip.MustParseAddr("198.18.0.99"), netip.MustParseAddr("2001:db8::99")}); err != nil {
		t.Fatal(err)
	}
	if err := r.dp.SetLocalVIPs([]LocalVIP{
		{VIP: lb.VIP{Addr: netip.MustParseAddr("203.0.113.10"), Port: 80, Proto: lb.TCP}},
		{VIP: lb.VIP{Addr: netip.MustParseAddr("2001:db8:f::10"), Port: 80, Proto: lb.TCP}},
		{VIP: lb.VIP{Domain: 7, Addr: netip.MustParseAddr("2001:db8:f::10"), Port: 80, Proto: lb.TCP}, Department: 7},
	}); err != nil {
		t.Fatal(err)
	}
	ext := mac("02:00:00:00:00:fe")
	inner4 := ipPacket(t, flow{src: client4, dst: "203.0.113.10", sport: 43000, dport: 80, payload: "GET /"})
	inner6 := ipPacket(t, flow{src: client6, dst: "2001:db8:f::10", sport: 43001, dport: 80, payload: "GET /"})
	for _, tc := range []struct {
		name  string
		in    []byte
		out   []byte
		count bool
	}{
		{"IPIP to self", encapsulated(t, ext, upMAC, 0, "198.18.0.99", self4, 0, inner4), frame(t, ext, upMAC, 0, inner4)[:14+len(inner4)], true},
		{"IP6IP6 to self", encapsulated(t, ext, upMAC, 0, "2001:db8::99", self6, 7, inner6), frame(t, ext, upMAC, 0, inner6)[:14+len(inner6)], true},
		{"6in4 to self, tagged", encapsulated(t, ext, upMAC, 120, "198.18.0.99", self4, 0, inner6), frame(t, ext, upMAC, 120, inner6)[:18+len(inner6)], true},
		{"IPIP to another host passes", encapsulated(t, ext, upMAC, 0, "198.18.0.99", hostA4, 0, inner4), nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, prog := range []struct {
				name string
				p    interface{ String() string }
			}{{"xdp_lb", r.dp.Program()}, {"xdp_decap", r.dp.DecapProgram()}} {
				before, _ := r.dp.Decapsulated()
				p := r.dp.Program()
				if prog.name == "xdp_decap" {
					p = r.dp.DecapProgram()
				}
				v, out := r.run(t, p, tc.in)
				if v != xdpPass {
					t.Fatalf("%s: verdict %s", prog.name, verdictName[v])
				}
				want := tc.out
				if want == nil {
					want = tc.in
				}
				if !bytes.Equal(out, want) {
					t.Fatalf("%s:\n got  %s\n want %s", prog.name, hex.EncodeToString(out), hex.EncodeToString(want))
				}
				after, _ := r.dp.Decapsulated()
				if got := after.Packets - before.Packets; (got == 1) != tc.count {
					t.Fatalf("%s: decap counter moved by %d", prog.name, got)
				}
			}
		})
	}
}

// Per-VIP and per-backend counters count exactly what was sent.
func TestXDPCounters(t *testing.T) {
	r := newRig(t, Options{})
	mustSet(t, r.dp, testServices())
	ext := mac("02:00:00:00:00:fe")
	var bytesSent uint64
	for i := 0; i < 25; i++ {
		f := frame(t, ext, upMAC, 0, ipPacket(t, flow{src: client4, dst: "203.0.113.11", sport: 44000, dport: 53, udp: true, payload: string(make([]byte, i))}))
		bytesSent += uint64(len(f))
		if v, _ := r.run(t, r.dp.Program(), f); v != xdpTX {
			t.Fatalf("verdict %s", verdictName[v])
		}
	}
	vc, _ := r.dp.VIPCounters()
	got := vc[lb.VIP{Addr: netip.MustParseAddr("203.0.113.11"), Port: 53, Proto: lb.UDP}]
	if got.Packets != 25 || got.Bytes != bytesSent || got.Conns != 1 {
		t.Fatalf("VIP counter %+v, want 25 packets, %d bytes, 1 connection", got, bytesSent)
	}
	bc, _ := r.dp.BackendCounters()
	if b := bc[netip.AddrPortFrom(netip.MustParseAddr(hostB4), 0).String()]; b.Packets != 25 || b.Bytes != bytesSent {
		t.Fatalf("backend counter %+v, want 25 packets, %d bytes", b, bytesSent)
	}
	_ = binary.BigEndian
}

// A dsr backend on this very host: the packet goes up the stack unchanged (the kernel's VIP
// route delivers it), counted for the VIP; backends elsewhere are still tunnelled.
func TestXDPLocalBackendPassesUp(t *testing.T) {
	r := newRig(t, Options{})
	if err := r.dp.SetDecapAddrs([]netip.Addr{netip.MustParseAddr(self4)}); err != nil {
		t.Fatal(err)
	}
	mustSet(t, r.dp, []lb.Service{
		svc("here", 0, "203.0.113.30", 80, lb.TCP, lb.DSR, be(self4, 0, 1)),
		svc("there", 0, "203.0.113.31", 80, lb.TCP, lb.DSR, be(hostA4, 0, 1)),
	})
	ext := mac("02:00:00:00:00:fe")
	in := frame(t, ext, upMAC, 0, ipPacket(t, flow{src: client4, dst: "203.0.113.30", sport: 45000, dport: 80}))
	if v, out := r.run(t, r.dp.Program(), in); v != xdpPass || !bytes.Equal(out, in) {
		t.Fatalf("local backend: verdict %s, unchanged %v", verdictName[v], bytes.Equal(out, in))
	}
	inner := ipPacket(t, flow{src: client4, dst: "203.0.113.31", sport: 45001, dport: 80})
	if v, out := r.run(t, r.dp.Program(), frame(t, ext, upMAC, 0, inner)); v != xdpTX || !bytes.Equal(out, dsrTo(t, hostA4, 0, inner)) {
		t.Fatalf("remote backend: verdict %s", verdictName[v])
	}
	// The tunnel endpoint stops being local: the same backend is now tunnelled to.
	if err := r.dp.SetDecapAddrs(nil); err != nil {
		t.Fatal(err)
	}
	if v, _ := r.run(t, r.dp.Program(), in); v == xdpPass {
		t.Fatal("backend still treated as local after its address left the decap set")
	}
	vc, _ := r.dp.VIPCounters()
	if c := vc[lb.VIP{Addr: netip.MustParseAddr("203.0.113.30"), Port: 80, Proto: lb.TCP}]; c.Packets != 2 {
		t.Fatalf("VIP counter %+v, want 2 packets", c)
	}
}
