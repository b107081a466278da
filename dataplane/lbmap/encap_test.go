package lbmap

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/govcloud/govcloud/dataplane/bpfobj"
	"github.com/govcloud/govcloud/lb"
)

// Issue 12 sections 3-6: encapsulation by RFC 2003/2473/4213/6040 and GUE entropy, too-big
// answered by the program, the IPv6 extension-header chain, nat ICMP (RFC 5508), jumbo
// frames (xdp.frags). Every row runs through prog.Run with the state set through the
// production API (Set, SetConfig, SetDecapAddrs, ...), and checks the verdict, the exact
// output bytes, the drop counter that moves and the backend counters.

// issue12Services adds to testServices a v6 VIP with an IPv4 backend host (6in4) and a nat
// UDP service over IPv4.
func issue12Services() []lb.Service {
	return append(testServices(),
		svc("web6in4", 0, "2001:db8:f::16", 80, lb.TCP, lb.DSR, be(hostA4, 0, 1)),
		svc("nat4udp", 0, "203.0.113.16", 53, lb.UDP, lb.NAT, be(natBE4, 5353, 1)),
		svc("nat6tcp", 0, "2001:db8:f::17", 80, lb.TCP, lb.NAT, be(natBE6, 8080, 1)),
	)
}

var ext = mac("02:00:00:00:00:fe") // the ToR's MAC: source of client frames

// pktRow is one frame through a program.
type pktRow struct {
	name    string
	in      []byte
	verdict uint32 // 0: PASS
	out     []byte // nil: the input unchanged (not checked for drops)
	drop    string // the drop counter that moves by one ("" none)
	sent    bool   // the backend counters move by one packet (it left toward a backend)
	decap   bool   // the decapsulation counter moves by one
}

func (r *rig) backendPackets(t testing.TB) uint64 {
	t.Helper()
	c, err := r.dp.BackendCounters()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, x := range c {
		n += x.Packets
	}
	return n
}

func (r *rig) checkRow(t *testing.T, prog *ebpf.Program, row pktRow) {
	t.Helper()
	before, err := r.dp.Drops()
	if err != nil {
		t.Fatal(err)
	}
	beBefore := r.backendPackets(t)
	decBefore, _ := r.dp.Decapsulated()
	v, out := r.run(t, prog, row.in)
	want := row.verdict
	if want == 0 {
		want = xdpPass
	}
	if v != want {
		t.Fatalf("verdict %s, want %s", verdictName[v], verdictName[want])
	}
	wantOut := row.out
	if wantOut == nil && want != xdpDrop {
		wantOut = row.in
	}
	if wantOut != nil && !bytes.Equal(out, wantOut) {
		t.Fatalf("output differs (%d bytes, want %d)\n got  %s\n want %s", len(out), len(wantOut), hexCut(out), hexCut(wantOut))
	}
	after, _ := r.dp.Drops()
	for reason := range after {
		d := after[reason].Packets - before[reason].Packets
		if reason == row.drop && d != 1 {
			t.Errorf("drop counter %s moved by %d, want 1", reason, d)
		}
		if reason != row.drop && d != 0 {
			t.Errorf("drop counter %s moved by %d, want 0", reason, d)
		}
	}
	if d, w := r.backendPackets(t)-beBefore, map[bool]uint64{true: 1}[row.sent]; d != w {
		t.Errorf("backend counters moved by %d packets, want %d", d, w)
	}
	decAfter, _ := r.dp.Decapsulated()
	if d, w := decAfter.Packets-decBefore.Packets, map[bool]uint64{true: 1}[row.decap]; d != w {
		t.Errorf("decapsulated counter moved by %d, want %d", d, w)
	}
}

// hexCut shows the first 160 bytes of a long frame in hex.
func hexCut(b []byte) string {
	if len(b) > 160 {
		return hex.EncodeToString(b[:160]) + "..."
	}
	return hex.EncodeToString(b)
}

func runRows(t *testing.T, r *rig, prog *ebpf.Program, rows []pktRow) {
	t.Helper()
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) { r.checkRow(t, prog, row) })
	}
}

// big is a TCP (or UDP) packet of exactly n bytes (IP header included).
func big(t testing.TB, f flow, n int) []byte {
	t.Helper()
	hdr := 40
	if netip.MustParseAddr(f.src).Is6() {
		hdr = 60
	}
	if f.udp {
		hdr -= 12
	}
	f.payload = strings.Repeat("x", n-hdr)
	p := ipPacket(t, f)
	if len(p) != n {
		t.Fatalf("built %d bytes, want %d", len(p), n)
	}
	return p
}

// gueTo is what the LB sends in GUE mode: the outer header, UDP from the flow's hashed source
// port to the GUE port, the client's packet.
func gueTo(t testing.TB, host string, vlan uint16, inner []byte) []byte {
	outerSrc := self4
	if netip.MustParseAddr(host).Is6() {
		outerSrc = self6
	}
	lt := layers.LayerTypeIPv4
	if inner[0]>>4 == 6 {
		lt = layers.LayerTypeIPv6
	}
	s, d, sp, dp, pr := flowOf(gopacket.NewPacket(inner, lt, gopacket.Default))
	return encapsulatedGUE(t, upMAC, neighbors[host], vlan, outerSrc, host, EntropyHash(s, d, sp, dp, pr), GUESourcePort(s, d, sp, dp, pr), inner)
}

// tooBigReply is the program's answer to frame (whose IP packet did not fit, mtu the largest
// that does): ICMP frag-needed / ICMPv6 packet-too-big from the packet's destination to its
// source, quoting its first 548 / 1232 bytes, back out the port it came in on.
func tooBigReply(t testing.TB, frame []byte, vlan uint16, mtu int) []byte {
	t.Helper()
	l2len := 14
	if vlan != 0 {
		l2len = 18
	}
	pkt := frame[l2len:]
	src, dst := net2(frame[0:6]), net2(frame[6:12]) // back where it came from
	if pkt[0]>>4 == 4 {
		o := &layers.IPv4{Version: 4, IHL: 5, TOS: 0xc0, Id: testIPID, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: pkt[16:20], DstIP: pkt[12:16]}
		ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded), Seq: uint16(mtu)}
		return serialize(t, append(l2(src, dst, vlan, layers.EthernetTypeIPv4), o, ic, gopacket.Payload(pkt[:548]))...)
	}
	o := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: pkt[24:40], DstIP: pkt[8:24]}
	ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypePacketTooBig, 0)}
	_ = ic.SetNetworkLayerForChecksum(o)
	m := binary.BigEndian.AppendUint32(nil, uint32(mtu))
	return serialize(t, append(l2(src, dst, vlan, layers.EthernetTypeIPv6), o, ic, gopacket.Payload(append(m, pkt[:1232]...)))...)
}

func net2(b []byte) []byte { return append([]byte(nil), b...) }

// Section 3: the outer header by the RFCs, in both encapsulations.
func TestEncapOuterHeaderRFC(t *testing.T) {
	r := newRig(t, Options{})
	mustSet(t, r.dp, issue12Services())
	web4 := func(f flow) []byte {
		f.src, f.dst, f.dport = client4, "203.0.113.10", 80
		return ipPacket(t, f)
	}
	web6 := func(f flow) []byte {
		f.src, f.dst, f.dport = client6, "2001:db8:f::10", 80
		return ipPacket(t, f)
	}
	in4in6 := func(f flow) []byte {
		f.src, f.dst, f.dport = client4, "203.0.113.15", 80
		return ipPacket(t, f)
	}
	in6in4 := func(f flow) []byte {
		f.src, f.dst, f.dport = client6, "2001:db8:f::16", 80
		return ipPacket(t, f)
	}
	dfEF := web4(flow{sport: 42000, df: true, tos: 0xba, payload: "df, EF + ECT(0)"})
	noDF := web4(flow{sport: 42001, tos: 0x01, payload: "no DF, ECT(1)"})
	ce := web4(flow{sport: 42002, df: true, tos: 0x2b, payload: "AF11 + CE"})
	v6EF := web6(flow{sport: 42003, tos: 0xba, payload: "6in6 EF"})
	v6CS1 := web6(flow{sport: 42004, tos: 0x21, payload: "6in6 CS1 + ECT(1)"})
	v4in6 := in4in6(flow{sport: 42005, df: true, tos: 0xba, payload: "4in6 EF"})
	v6in4 := in6in4(flow{sport: 42006, tos: 0xba, payload: "6in4 EF"})
	dns4 := ipPacket(t, flow{src: client4, dst: "203.0.113.11", sport: 42007, dport: 53, udp: true, df: true, tos: 0x48, payload: "AF21 query"})
	lands := ipPacket(t, flow{src: "198.19.1.5", dst: "198.19.0.10", sport: 42008, dport: 80, df: true, tos: 0xb8, payload: "lands EF"})

	for _, enc := range []Encapsulation{EncapIPIP, EncapGUE} {
		t.Run(string(enc), func(t *testing.T) {
			if err := r.dp.SetConfig(rigConfig(enc)); err != nil {
				t.Fatal(err)
			}
			to := func(host string, vlan uint16, inner []byte) []byte {
				if enc == EncapGUE {
					return gueTo(t, host, vlan, inner)
				}
				return dsrTo(t, host, vlan, inner)
			}
			rows := []pktRow{
				{name: "v4 DF set, DSCP EF + ECT(0): outer DF, TOS 0xba, IP ID (issue input)", in: frame(t, ext, upMAC, 0, dfEF), verdict: xdpTX, out: to(hostA4, 0, dfEF), sent: true},
				{name: "v4 DF clear, ECT(1): outer DF clear, TOS 0x01", in: frame(t, ext, upMAC, 0, noDF), verdict: xdpTX, out: to(hostA4, 0, noDF), sent: true},
				{name: "v4 CE: copied as is (RFC 6040 normal mode)", in: frame(t, ext, upMAC, 0, ce), verdict: xdpTX, out: to(hostA4, 0, ce), sent: true},
				{name: "v4 UDP AF21 DF", in: frame(t, ext, upMAC, 0, dns4), verdict: xdpTX, out: to(hostB4, 0, dns4), sent: true},
				{name: "v4 department VLAN 120 EF: tag kept", in: frame(t, ext, upMAC, 120, lands), verdict: xdpTX, out: to(hostA4, 120, lands), sent: true},
				{name: "6in6 traffic class 0xba (issue input)", in: frame(t, ext, upMAC, 0, v6EF), verdict: xdpTX, out: to(hostA6, 0, v6EF), sent: true},
				{name: "6in6 traffic class 0x21", in: frame(t, ext, upMAC, 0, v6CS1), verdict: xdpTX, out: to(hostA6, 0, v6CS1), sent: true},
				{name: "4in6 TOS 0xba -> traffic class 0xba (issue input)", in: frame(t, ext, upMAC, 0, v4in6), verdict: xdpTX, out: to(hostA6, 0, v4in6), sent: true},
				{name: "6in4 traffic class 0xba -> TOS 0xba, DF set", in: frame(t, ext, upMAC, 0, v6in4), verdict: xdpTX, out: to(hostA4, 0, v6in4), sent: true},
			}
			runRows(t, r, r.dp.Program(), rows)
		})
	}
}

// Section 3: a packet that no longer fits the egress MTU once encapsulated is answered with
// frag-needed / packet-too-big carrying the MTU that fits, and counted as too_big; the backend
// counters do not move. The rig's uplink has MTU 1500.
func TestEncapTooBig(t *testing.T) {
	r := newRig(t, Options{})
	mustSet(t, r.dp, issue12Services())
	tcp4 := func(dst string, sport uint16, n int, df bool) []byte {
		return big(t, flow{src: client4, dst: dst, sport: sport, dport: 80, df: df}, n)
	}
	tcp6 := func(dst string, sport uint16, n int) []byte {
		return big(t, flow{src: client6, dst: dst, sport: sport, dport: 80}, n)
	}
	issue := tcp4("203.0.113.10", 43000, 1500, true) // 1500-byte DF TCP segment (issue input)
	noDF := tcp4("203.0.113.10", 43002, 1500, false)
	v6 := tcp6("2001:db8:f::10", 43003, 1500)
	v4in6 := tcp4("203.0.113.15", 43005, 1490, true)
	v6in4 := tcp6("2001:db8:f::16", 43006, 1481)
	udp4 := big(t, flow{src: client4, dst: "203.0.113.11", sport: 43007, dport: 53, udp: true, df: true}, 1500)
	lands := big(t, flow{src: "198.19.1.5", dst: "198.19.0.10", sport: 43008, dport: 80, df: true}, 1500)
	// An ICMP error about a VIP flow that no longer fits: dropped, never answered.
	icmpBig := func() []byte {
		q := big(t, flow{src: "203.0.113.10", dst: client4, sport: 80, dport: 43009, df: true}, 1472)
		o := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: ip("198.51.100.1"), DstIP: ip("203.0.113.10")}
		ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded), Seq: 1400}
		return serialize(t, o, ic, gopacket.Payload(q))
	}()

	for _, enc := range []struct {
		e   Encapsulation
		udp int
	}{{EncapIPIP, 0}, {EncapGUE, 8}} {
		t.Run(string(enc.e), func(t *testing.T) {
			if err := r.dp.SetConfig(rigConfig(enc.e)); err != nil {
				t.Fatal(err)
			}
			to := func(host string, vlan uint16, inner []byte) []byte {
				if enc.e == EncapGUE {
					return gueTo(t, host, vlan, inner)
				}
				return dsrTo(t, host, vlan, inner)
			}
			u := enc.udp
			fits4 := tcp4("203.0.113.10", 43001, 1480-u, true)
			fits6 := tcp6("2001:db8:f::10", 43004, 1460-u)
			rows := []pktRow{
				{name: "v4 1500-byte DF TCP -> frag-needed (issue input)", in: frame(t, ext, upMAC, 0, issue), verdict: xdpTX, out: tooBigReply(t, frame(t, ext, upMAC, 0, issue), 0, 1480-u), drop: "too_big"},
				{name: "v4 that just fits is encapsulated", in: frame(t, ext, upMAC, 0, fits4), verdict: xdpTX, out: to(hostA4, 0, fits4), sent: true},
				{name: "v4 DF clear, too big -> frag-needed all the same (no fragmenting in XDP)", in: frame(t, ext, upMAC, 0, noDF), verdict: xdpTX, out: tooBigReply(t, frame(t, ext, upMAC, 0, noDF), 0, 1480-u), drop: "too_big"},
				{name: "v4 UDP too big -> frag-needed", in: frame(t, ext, upMAC, 0, udp4), verdict: xdpTX, out: tooBigReply(t, frame(t, ext, upMAC, 0, udp4), 0, 1480-u), drop: "too_big"},
				{name: "v4 department VLAN 120 too big -> frag-needed, tag kept", in: frame(t, ext, upMAC, 120, lands), verdict: xdpTX, out: tooBigReply(t, frame(t, ext, upMAC, 120, lands), 120, 1480-u), drop: "too_big"},
				{name: "6in6 1500 -> packet-too-big 1460", in: frame(t, ext, upMAC, 0, v6), verdict: xdpTX, out: tooBigReply(t, frame(t, ext, upMAC, 0, v6), 0, 1460-u), drop: "too_big"},
				{name: "6in6 that just fits is encapsulated", in: frame(t, ext, upMAC, 0, fits6), verdict: xdpTX, out: to(hostA6, 0, fits6), sent: true},
				{name: "4in6 (40-byte outer) -> frag-needed 1460", in: frame(t, ext, upMAC, 0, v4in6), verdict: xdpTX, out: tooBigReply(t, frame(t, ext, upMAC, 0, v4in6), 0, 1460-u), drop: "too_big"},
				{name: "6in4 (20-byte outer) -> packet-too-big 1480", in: frame(t, ext, upMAC, 0, v6in4), verdict: xdpTX, out: tooBigReply(t, frame(t, ext, upMAC, 0, v6in4), 0, 1480-u), drop: "too_big"},
				{name: "ICMP error too big to forward: dropped, never answered", in: frame(t, ext, upMAC, 0, icmpBig), verdict: xdpDrop, drop: "too_big"},
			}
			runRows(t, r, r.dp.Program(), rows)
		})
	}
	// A configured MTU below the device's caps the tunnel.
	cfg := rigConfig(EncapIPIP)
	cfg.MTU = 1400
	if err := r.dp.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	capped := tcp4("203.0.113.10", 43010, 1381, true)
	under := tcp4("203.0.113.10", 43011, 1380, true)
	runRows(t, r, r.dp.Program(), []pktRow{
		{name: "MTU 1400 configured: 1381 -> frag-needed 1380", in: frame(t, ext, upMAC, 0, capped), verdict: xdpTX, out: tooBigReply(t, frame(t, ext, upMAC, 0, capped), 0, 1380), drop: "too_big"},
		{name: "MTU 1400 configured: 1380 fits", in: frame(t, ext, upMAC, 0, under), verdict: xdpTX, out: dsrTo(t, hostA4, 0, under), sent: true},
	})
	for _, bad := range []uint32{1279, 65536} {
		cfg.MTU = bad
		if err := r.dp.SetConfig(cfg); err == nil {
			t.Errorf("SetConfig with MTU %d: no error", bad)
		}
	}
	if err := r.dp.SetConfig(Config{Encap: "gre"}); err == nil || !strings.Contains(err.Error(), `"gre"`) {
		t.Errorf("SetConfig with encapsulation gre: %v, want an error naming it", err)
	}
}

// Section 3: per-flow entropy. 64 client flows to one backend host: in GUE mode they leave
// with many outer UDP source ports (NIC RSS and ECMP hash them), over IPv6 with many flow
// labels; plain IPIP over IPv4 has one outer tuple.
func TestEncapEntropySpread(t *testing.T) {
	r := newRig(t, Options{})
	mustSet(t, r.dp, issue12Services())
	spread := func(enc Encapsulation, vip, client string, v6 bool) int {
		if err := r.dp.SetConfig(rigConfig(enc)); err != nil {
			t.Fatal(err)
		}
		tuples := map[string]bool{}
		for i := range 64 {
			p := ipPacket(t, flow{src: client, dst: vip, sport: uint16(44000 + i), dport: 80, payload: "GET /"})
			v, out := r.run(t, r.dp.Program(), frame(t, ext, upMAC, 0, p))
			if v != xdpTX {
				t.Fatalf("flow %d: verdict %s", i, verdictName[v])
			}
			var key string
			switch {
			case !v6 && enc == EncapIPIP:
				key = hex.EncodeToString(out[14+9:14+10]) + hex.EncodeToString(out[14+12:14+20]) // proto, src, dst
			case !v6:
				key = hex.EncodeToString(out[14+20 : 14+24]) // UDP ports
			case enc == EncapIPIP:
				key = fmt.Sprintf("%x", binary.BigEndian.Uint32(out[14:18])&0xfffff) // flow label
			default:
				key = hex.EncodeToString(out[14+40:14+44]) + fmt.Sprintf("/%x", binary.BigEndian.Uint32(out[14:18])&0xfffff)
			}
			tuples[key] = true
		}
		return len(tuples)
	}
	ipip4 := spread(EncapIPIP, "203.0.113.10", client4, false)
	gue4 := spread(EncapGUE, "203.0.113.10", client4, false)
	ipip6 := spread(EncapIPIP, "2001:db8:f::10", client6, true)
	gue6 := spread(EncapGUE, "2001:db8:f::10", client6, true)
	fmt.Printf("64 client flows to one backend host: distinct outer tuples IPIP/IPv4 %d, GUE/IPv4 %d (UDP source ports), IP6IP6 %d (flow labels), GUE/IPv6 %d\n", ipip4, gue4, ipip6, gue6)
	if ipip4 != 1 {
		t.Errorf("IPIP over IPv4: %d outer tuples, want 1 (the issue's finding, kept as the control)", ipip4)
	}
	for name, n := range map[string]int{"GUE/IPv4": gue4, "IP6IP6": ipip6, "GUE/IPv6": gue6} {
		if n < 32 {
			t.Errorf("%s: %d distinct outer tuples for 64 flows, want >= 32", name, n)
		}
	}
	// One flow keeps one tuple: its first packet (no connection-table entry yet) and its
	// later ones leave alike, so nothing reorders it.
	if err := r.dp.SetConfig(rigConfig(EncapGUE)); err != nil {
		t.Fatal(err)
	}
	syn := ipPacket(t, flow{src: client4, dst: "203.0.113.10", sport: 44999, dport: 80, syn: true})
	ack := ipPacket(t, flow{src: client4, dst: "203.0.113.10", sport: 44999, dport: 80, payload: "a"})
	_, o1 := r.run(t, r.dp.Program(), frame(t, ext, upMAC, 0, syn))
	_, o2 := r.run(t, r.dp.Program(), frame(t, ext, upMAC, 0, ack))
	_, o3 := r.run(t, r.dp.Program(), frame(t, ext, upMAC, 0, ack))
	if !bytes.Equal(o1[34:36], o2[34:36]) || !bytes.Equal(o2[34:36], o3[34:36]) {
		t.Errorf("one flow left from source ports %x, %x, %x: want one", o1[34:36], o2[34:36], o3[34:36])
	}
}

// setupDecap makes the rig a backend host: endpoints self4/self6, tunnels from hostA, the
// decap tests' local VIPs.
func setupDecap(t *testing.T, r *rig) {
	t.Helper()
	if err := r.dp.SetDecapAddrs([]netip.Addr{netip.MustParseAddr(self4), netip.MustParseAddr(self6)}); err != nil {
		t.Fatal(err)
	}
	if err := r.dp.SetTunnelSources([]netip.Addr{netip.MustParseAddr(lbHost4), netip.MustParseAddr(lbHost6)}); err != nil {
		t.Fatal(err)
	}
	if err := r.dp.SetLocalVIPs(decapLocalVIPs()); err != nil {
		t.Fatal(err)
	}
}

// withTOS sets an IPv4 packet's TOS (checksum fixed) or an IPv6 packet's traffic class.
func withTOS(p []byte, tos uint8) []byte {
	q := append([]byte(nil), p...)
	if q[0]>>4 == 6 {
		q[0] = 0x60 | tos>>4
		q[1] = tos<<4 | q[1]&0x0f
		return q
	}
	q[1] = tos
	q[10], q[11] = 0, 0
	var s uint32
	for i := 0; i < int(q[0]&0xf)*4; i += 2 {
		s += uint32(binary.BigEndian.Uint16(q[i:]))
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	binary.BigEndian.PutUint16(q[10:], ^uint16(s))
	return q
}

// gueHdr is a GUE (variant 1) UDP header to port in front of inner, checksum zero.
func gueHdr(sport, port uint16, inner []byte) []byte {
	u := make([]byte, 8, 8+len(inner))
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], port)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(inner)))
	return append(u, inner...)
}

// Section 3 on the backend host: GUE decapsulated in XDP with the same source / VIP /
// department checks as IPIP; the outer ECN field merged into the inner header (RFC 6040 §4.2).
func TestDecapGUEAndECN(t *testing.T) {
	r := newRig(t, Options{})
	mustSet(t, r.dp, issue12Services())
	setupDecap(t, r)
	fr := func(vlan uint16, l3 []byte) []byte { return frame(t, ext, upMAC, vlan, l3) }
	decapped := func(vlan uint16, inner []byte) []byte {
		l2len := 14
		if vlan != 0 {
			l2len = 18
		}
		return fr(vlan, inner)[:l2len+len(inner)]
	}
	web4 := ipPacket(t, flow{src: client4, dst: localTCP4, sport: 45000, dport: 80, payload: "GET /"})
	web6 := ipPacket(t, flow{src: client6, dst: localTCP6, sport: 45001, dport: 80, payload: "GET /"})
	dns4 := ipPacket(t, flow{src: client4, dst: localUDP4, sport: 45002, dport: 53, udp: true, payload: "q"})
	lands4 := ipPacket(t, flow{src: client4, dst: landsVIP4, sport: 45003, dport: 80, payload: "lands"})
	guest := ipPacket(t, flow{src: client4, dst: guest4, sport: 45004, dport: 22})
	g4 := func(src string, inner []byte, mut func([]byte)) []byte {
		return ipv4Hdr(src, self4, 17, nil, gueHdr(50000, DefaultGUEPort, inner), mut)
	}
	g6 := func(src string, inner []byte) []byte {
		return ipv6Hdr(src, self6, 17, nil, gueHdr(50000, DefaultGUEPort, inner))
	}
	tos := func(t uint8) func([]byte) { return func(h []byte) { h[1] = t } }
	ect0, ect1, ce := uint8(0xb8|2), uint8(0xb8|1), uint8(0xb8|3)
	rows := []pktRow{
		{name: "GUE/IPv4: TCP to local VIP from an LB host", in: fr(0, g4(lbHost4, web4, nil)), out: decapped(0, web4), decap: true},
		{name: "GUE/IPv4: UDP to local VIP", in: fr(0, g4(lbHost4, dns4, nil)), out: decapped(0, dns4), decap: true},
		{name: "GUE/IPv4: 6in4", in: fr(0, g4(lbHost4, web6, nil)), out: decapped(0, web6), decap: true},
		{name: "GUE/IPv6: IPv6 inner", in: fr(0, g6(lbHost6, web6)), out: decapped(0, web6), decap: true},
		{name: "GUE/IPv6: 4in6", in: fr(0, g6(lbHost6, web4)), out: decapped(0, web4), decap: true},
		{name: "GUE/IPv4: department VIP in its VLAN", in: fr(120, g4(lbHost4, lands4, nil)), out: decapped(120, lands4), decap: true},
		{name: "GUE/IPv4: department VIP untagged", in: fr(0, g4(lbHost4, lands4, nil)), verdict: xdpDrop, drop: "decap_not_local_vip"},
		{name: "GUE/IPv4: from outside (not an LB host)", in: fr(0, g4(outsider4, web4, nil)), verdict: xdpDrop, drop: "decap_source"},
		{name: "GUE/IPv6: from outside", in: fr(0, g6(outsider6, web6)), verdict: xdpDrop, drop: "decap_source"},
		{name: "GUE/IPv4: inner to a guest address", in: fr(0, g4(lbHost4, guest, nil)), verdict: xdpDrop, drop: "decap_not_local_vip"},
		{name: "GUE/IPv4: variant 0 (GUE header) is not what the LB sends", in: fr(0, ipv4Hdr(lbHost4, self4, 17, nil, gueHdr(50000, DefaultGUEPort, append([]byte{0, 4, 0, 0}, web4...)), nil)), verdict: xdpDrop, drop: "decap_malformed"},
		{name: "GUE/IPv4: UDP length not the datagram's", in: fr(0, ipv4Hdr(lbHost4, self4, 17, nil, func() []byte { g := gueHdr(50000, DefaultGUEPort, web4); g[5]++; return g }(), nil)), verdict: xdpDrop, drop: "decap_malformed"},
		{name: "GUE/IPv4: outer fragment", in: fr(0, g4(lbHost4, web4, func(h []byte) { h[6] = 0x20 })), verdict: xdpDrop, drop: "decap_fragment"},
		{name: "UDP to another port of the endpoint is no tunnel", in: fr(0, ipv4Hdr(lbHost4, self4, 17, nil, gueHdr(50000, 6081, web4), nil))},
		{name: "GUE to another host is no tunnel here", in: fr(0, ipv4Hdr(lbHost4, hostB4, 17, nil, gueHdr(50000, DefaultGUEPort, web4), nil))},
		// RFC 6040 §4.2, IPIP and GUE alike.
		{name: "ECN: outer CE over inner ECT(0) -> inner CE, checksum fixed", in: fr(0, tunnel4(lbHost4, self4, withTOS(web4, ect0), tos(ce))), out: decapped(0, withTOS(web4, ce)), decap: true},
		{name: "ECN: outer CE over inner ECT(1) -> inner CE (GUE)", in: fr(0, g4(lbHost4, withTOS(web4, ect1), tos(ce))), out: decapped(0, withTOS(web4, ce)), decap: true},
		{name: "ECN: outer ECT(1) over inner ECT(0) -> inner ECT(1)", in: fr(0, tunnel4(lbHost4, self4, withTOS(dns4, ect0), tos(ect1))), out: decapped(0, withTOS(dns4, ect1)), decap: true},
		{name: "ECN: outer ECT(0) over inner ECT(1) -> unchanged", in: fr(0, tunnel4(lbHost4, self4, withTOS(web4, ect1), tos(ect0))), out: decapped(0, withTOS(web4, ect1)), decap: true},
		{name: "ECN: outer Not-ECT over inner CE -> unchanged", in: fr(0, tunnel4(lbHost4, self4, withTOS(web4, ce), tos(0))), out: decapped(0, withTOS(web4, ce)), decap: true},
		{name: "ECN: outer CE over inner Not-ECT -> dropped", in: fr(0, tunnel4(lbHost4, self4, withTOS(web4, 0xb8), tos(ce))), verdict: xdpDrop, drop: "decap_ecn"},
		{name: "ECN: IP6IP6 outer CE over inner ECT(0) -> inner CE", in: fr(0, withTOS(tunnel6(lbHost6, self6, withTOS(web6, ect0)), ce)), out: decapped(0, withTOS(web6, ce)), decap: true},
		{name: "ECN: GUE/IPv6 outer CE over inner Not-ECT -> dropped", in: fr(0, withTOS(g6(lbHost6, web6), ce)), verdict: xdpDrop, drop: "decap_ecn"},
		{name: "ECN: 4in6 outer CE over inner ECT(0) -> inner CE, checksum fixed", in: fr(0, withTOS(tunnel6(lbHost6, self6, withTOS(web4, ect0)), ce)), out: decapped(0, withTOS(web4, ce)), decap: true},
	}
	for _, p := range []struct {
		name string
		prog *ebpf.Program
	}{{"xdp_lb", r.dp.Program()}, {"xdp_decap", r.dp.DecapProgram()}} {
		t.Run(p.name, func(t *testing.T) { runRows(t, r, p.prog, rows) })
	}
}

// dsrFlow is dsrTo for a packet whose flow gopacket cannot read (behind an atomic fragment):
// the outer flow label comes from the given flow.
func dsrFlow(t testing.TB, host string, inner []byte, src, dst string, sport, dport uint16, proto lb.Protocol) []byte {
	e := EntropyHash(netip.MustParseAddr(src), netip.MustParseAddr(dst), sport, dport, proto)
	outerSrc := self4
	if netip.MustParseAddr(host).Is6() {
		outerSrc = self6
	}
	return encapsulated(t, upMAC, neighbors[host], 0, outerSrc, host, e, inner)
}

// Section 4: the IPv6 extension-header chain (RFC 8200 §4, RFC 7045) is walked to a bound;
// fragments are judged by offset and M, not by the header's presence.
func TestIPv6ExtensionHeaderChain(t *testing.T) {
	r := newRig(t, Options{})
	mustSet(t, r.dp, issue12Services())
	const vip, dnsVIP = "2001:db8:f::10", "2001:db8:f::11"
	tcp := ipPacket(t, flow{src: client6, dst: vip, sport: 46000, dport: 80, payload: "GET /"})[40:]
	udp := ipPacket(t, flow{src: client6, dst: dnsVIP, sport: 46001, dport: 53, udp: true, payload: "query"})[40:]
	hop := func(nh byte) []byte { return []byte{nh, 0, 1, 4, 0, 0, 0, 0} }
	routing := func(nh, left byte) []byte { return []byte{nh, 0, 4, left, 0, 0, 0, 0} }
	ah := func(nh byte) []byte {
		return append([]byte{nh, 4, 0, 0, 0, 0, 0x10, 0x01, 0, 0, 0, 1}, make([]byte, 12)...)
	} // (4+2)*4 = 24 bytes
	chain := func(hs ...[]byte) []byte { return bytes.Join(hs, nil) }
	v6 := func(dst string, nh byte, ext, l4 []byte) []byte { return ipv6Hdr(client6, dst, nh, ext, l4) }

	destTCP := v6(vip, 60, dstOpts(6), tcp)
	hopDestTCP := v6(vip, 0, chain(hop(60), dstOpts(6)), tcp)
	rh0 := v6(vip, 43, routing(6, 0), tcp)
	atomic := v6(vip, 44, fragHdr(6, 0, false), tcp)
	ahTCP := v6(vip, 51, ah(6), tcp)
	destUDP := v6(dnsVIP, 60, dstOpts(17), udp)
	sixDest := v6(vip, 60, chain(dstOpts(60), dstOpts(60), dstOpts(60), dstOpts(60), dstOpts(60), dstOpts(6)), tcp)
	sevenDest := v6(vip, 60, chain(dstOpts(60), dstOpts(60), dstOpts(60), dstOpts(60), dstOpts(60), dstOpts(60), dstOpts(6)), tcp)
	tooBig := func() []byte {
		tb := icmpTooBig(t, "2001:db8:1::fe", vip, client6, 80, 46002)
		return ipv6Hdr("2001:db8:1::fe", vip, 60, dstOpts(58), tb[40:])
	}()
	rows := []pktRow{
		{name: "destination options (8 bytes) before TCP to a VIP is balanced (issue input)", in: frame(t, ext, upMAC, 0, destTCP), verdict: xdpTX, out: dsrFlow(t, hostA6, destTCP, client6, vip, 46000, 80, lb.TCP), sent: true},
		{name: "hop-by-hop, destination options, TCP", in: frame(t, ext, upMAC, 0, hopDestTCP), verdict: xdpTX, out: dsrFlow(t, hostA6, hopDestTCP, client6, vip, 46000, 80, lb.TCP), sent: true},
		{name: "routing header, no segments left: this is the final destination", in: frame(t, ext, upMAC, 0, rh0), verdict: xdpTX, out: dsrFlow(t, hostA6, rh0, client6, vip, 46000, 80, lb.TCP), sent: true},
		{name: "atomic fragment (offset 0, M clear) is no fragment", in: frame(t, ext, upMAC, 0, atomic), verdict: xdpTX, out: dsrFlow(t, hostA6, atomic, client6, vip, 46000, 80, lb.TCP), sent: true},
		{name: "AH before TCP", in: frame(t, ext, upMAC, 0, ahTCP), verdict: xdpTX, out: dsrFlow(t, hostA6, ahTCP, client6, vip, 46000, 80, lb.TCP), sent: true},
		{name: "destination options before UDP", in: frame(t, ext, upMAC, 0, destUDP), verdict: xdpTX, out: dsrFlow(t, hostB6, destUDP, client6, dnsVIP, 46001, 53, lb.UDP), sent: true},
		{name: "six extension headers (the bound) are walked", in: frame(t, ext, upMAC, 0, sixDest), verdict: xdpTX, out: dsrFlow(t, hostA6, sixDest, client6, vip, 46000, 80, lb.TCP), sent: true},
		{name: "packet-too-big behind destination options follows its flow", in: frame(t, ext, upMAC, 0, tooBig), verdict: xdpTX, out: dsrFlow(t, hostA6, tooBig, client6, vip, 46002, 80, lb.TCP), sent: true},
		{name: "first fragment (offset 0, M set) to a VIP dropped", in: frame(t, ext, upMAC, 0, v6(vip, 44, fragHdr(6, 0, true), tcp)), verdict: xdpDrop, drop: "fragment"},
		{name: "later fragment (offset 3) to a VIP dropped", in: frame(t, ext, upMAC, 0, v6(vip, 44, fragHdr(6, 3, false), tcp[:16])), verdict: xdpDrop, drop: "fragment"},
		{name: "fragment behind destination options to a VIP dropped", in: frame(t, ext, upMAC, 0, v6(vip, 60, chain(dstOpts(44), fragHdr(6, 3, true)), tcp[:16])), verdict: xdpDrop, drop: "fragment"},
		{name: "routing header with segments left: not the final destination", in: frame(t, ext, upMAC, 0, v6(vip, 43, routing(6, 1), tcp)), verdict: xdpDrop, drop: "unsupported"},
		{name: "seven extension headers: beyond the bound", in: frame(t, ext, upMAC, 0, sevenDest), verdict: xdpDrop, drop: "unsupported"},
		{name: "hop-by-hop not first: malformed", in: frame(t, ext, upMAC, 0, v6(vip, 60, chain(dstOpts(0), hop(6)), tcp)), verdict: xdpDrop, drop: "malformed"},
		{name: "extension header runs past the packet: malformed", in: frame(t, ext, upMAC, 0, v6(vip, 60, []byte{6, 8, 1, 4, 0, 0, 0, 0}, tcp)), verdict: xdpDrop, drop: "malformed"},
		{name: "ESP to a VIP: no ports to balance by", in: frame(t, ext, upMAC, 0, v6(vip, 50, nil, make([]byte, 24))), verdict: xdpDrop, drop: "unsupported"},
		{name: "destination options before TCP to another address pass", in: frame(t, ext, upMAC, 0, v6("2001:db8:f::99", 60, dstOpts(6), tcp))},
		{name: "fragment to another address passes", in: frame(t, ext, upMAC, 0, v6("2001:db8:f::99", 44, fragHdr(6, 0, true), tcp))},
	}
	runRows(t, r, r.dp.Program(), rows)

	// The backend's host accepts what the LB sent: the inner chain is walked alike.
	setupDecap(t, r)
	inner := ipv6Hdr(client6, localTCP6, 60, dstOpts(6), tcp)
	innerUDP := ipv6Hdr(client6, localUDP6, 0, hop(17), udp)
	decapped := func(inner []byte) []byte { return frame(t, ext, upMAC, 0, inner)[:14+len(inner)] }
	drows := []pktRow{
		{name: "decap: IP6IP6, inner destination options before TCP to a local VIP", in: frame(t, ext, upMAC, 0, tunnel6(lbHost6, self6, inner)), out: decapped(inner), decap: true},
		{name: "decap: GUE/IPv4, inner hop-by-hop before UDP to a local VIP", in: frame(t, ext, upMAC, 0, ipv4Hdr(lbHost4, self4, 17, nil, gueHdr(50000, DefaultGUEPort, innerUDP), nil)), out: decapped(innerUDP), decap: true},
		{name: "decap: inner atomic fragment", in: frame(t, ext, upMAC, 0, tunnel6(lbHost6, self6, ipv6Hdr(client6, localTCP6, 44, fragHdr(6, 0, false), tcp))), out: decapped(ipv6Hdr(client6, localTCP6, 44, fragHdr(6, 0, false), tcp)), decap: true},
		{name: "decap: inner real fragment behind destination options", in: frame(t, ext, upMAC, 0, tunnel6(lbHost6, self6, ipv6Hdr(client6, localTCP6, 60, chain(dstOpts(44), fragHdr(6, 0, true)), tcp))), verdict: xdpDrop, drop: "decap_fragment"},
		{name: "decap: inner routing header with segments left", in: frame(t, ext, upMAC, 0, tunnel6(lbHost6, self6, ipv6Hdr(client6, localTCP6, 43, routing(6, 2), tcp))), verdict: xdpDrop, drop: "decap_not_local_vip"},
	}
	for _, p := range []*ebpf.Program{r.dp.Program(), r.dp.DecapProgram()} {
		runRows(t, r, p, drows)
	}
}

// ipOnly is the IP packet without the Ethernet padding behind it.
func ipOnly(p []byte) []byte {
	if p[0]>>4 == 4 {
		return p[:binary.BigEndian.Uint16(p[2:])]
	}
	return p[:40+int(binary.BigEndian.Uint16(p[4:]))]
}

// icmpErr is an ICMP / ICMPv6 error from src to dst, its second word (frag-needed MTU,
// packet-too-big MTU, or unused) word, quoting quote.
func icmpErr(t testing.TB, src, dst string, typ, code uint8, word uint32, quote []byte) []byte {
	t.Helper()
	if netip.MustParseAddr(src).Is4() {
		o := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: ip(src), DstIP: ip(dst)}
		ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Id: uint16(word >> 16), Seq: uint16(word)}
		return serialize(t, o, ic, gopacket.Payload(quote))
	}
	o := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: ip(src), DstIP: ip(dst)}
	ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, code)}
	_ = ic.SetNetworkLayerForChecksum(o)
	return serialize(t, o, ic, gopacket.Payload(append(binary.BigEndian.AppendUint32(nil, word), quote...)))
}

// Section 5: nat mode translates ICMP errors both ways (RFC 5508): an error from the backend's
// side about what the LB sent it reaches the client in the VIP's view; an error from the
// client's side about the VIP's reply reaches the backend in its view. Outer header, quoted IP
// header, quoted TCP/UDP checksum (when quoted) and ICMP checksum are all checked, by comparing
// with packets gopacket builds whole: the translated quote must equal what the other side sent.
func TestNATICMPTranslation(t *testing.T) {
	r := newRig(t, Options{})
	mustSet(t, r.dp, issue12Services())
	const router4, router6 = "198.51.100.1", "2001:db8:1::fe"
	type natFlow struct {
		client, vip, be, self string
		cport, vport, bport   uint16
		udp                   bool
		// req is the client's packet, fwd what the LB sent the backend; rep the backend's
		// reply, back what the LB sent the client.
		req, fwd, rep, back []byte
	}
	// open sends the client's first packet and a backend reply through the program.
	open := func(client, vip, be string, cport, vport, bport uint16, udp bool) natFlow {
		t.Helper()
		f := natFlow{client: client, vip: vip, be: be, self: self4, cport: cport, vport: vport, bport: bport, udp: udp}
		if netip.MustParseAddr(vip).Is6() {
			f.self = self6
		}
		f.req = ipPacket(t, flow{src: client, dst: vip, sport: cport, dport: vport, udp: udp, payload: "a request of some length"})
		v, out := r.run(t, r.dp.Program(), frame(t, ext, upMAC, 0, f.req))
		if v != xdpTX {
			t.Fatalf("request %s -> %s: verdict %s", client, vip, verdictName[v])
		}
		f.fwd = ipOnly(out[14:])
		sp := binary.BigEndian.Uint16(f.fwd[map[bool]int{true: 40, false: 20}[netip.MustParseAddr(vip).Is6()]:])
		f.rep = ipPacket(t, flow{src: be, dst: f.self, sport: bport, dport: sp, udp: udp, payload: "the reply"})
		v, out = r.run(t, r.dp.Program(), frame(t, neighbors[be], upMAC, 0, f.rep))
		if v != xdpTX {
			t.Fatalf("reply %s -> %s: verdict %s", be, f.self, verdictName[v])
		}
		f.back = ipOnly(out[14:])
		return f
	}
	u4 := open(client4, "203.0.113.16", natBE4, 47000, 53, 5353, true)
	t4 := open(client4, "203.0.113.12", natBE4, 47001, 80, 8080, false)
	u6 := open(client6, "2001:db8:f::12", natBE6, 47002, 53, 5353, true)
	t6 := open(client6, "2001:db8:f::17", natBE6, 47003, 80, 8080, false)
	fromBE := func(l3 []byte) []byte { return frame(t, neighbors[natBE4], upMAC, 0, l3) }
	toClient := func(l3 []byte) []byte { return frame(t, upMAC, clientMAC, 0, l3) }
	toBE := func(be string, l3 []byte) []byte { return frame(t, upMAC, neighbors[be], 0, l3) }
	cut := func(p []byte, n int) []byte { return p[:n] }

	rows := []pktRow{
		// Backend side -> client.
		{name: "v4 port-unreachable from the nat backend quoting the NATed UDP datagram (issue input)",
			in: fromBE(icmpErr(t, natBE4, self4, 3, 3, 0, u4.fwd)), verdict: xdpTX, out: toClient(icmpErr(t, u4.vip, client4, 3, 3, 0, u4.req))},
		{name: "v4 host-unreachable from a router behind the LB, quote cut after 8 bytes of TCP: router address kept",
			in: fromBE(icmpErr(t, router4, self4, 3, 1, 0, cut(t4.fwd, 28))), verdict: xdpTX, out: toClient(icmpErr(t, router4, client4, 3, 1, 0, cut(t4.req, 28)))},
		{name: "v4 time-exceeded from a router quoting the whole TCP segment (TCP checksum in the quote)",
			in: fromBE(icmpErr(t, router4, self4, 11, 0, 0, t4.fwd)), verdict: xdpTX, out: toClient(icmpErr(t, router4, client4, 11, 0, 0, t4.req))},
		{name: "v6 port-unreachable from the nat backend quoting the NATed UDP datagram",
			in: fromBE(icmpErr(t, natBE6, self6, 1, 4, 0, u6.fwd)), verdict: xdpTX, out: toClient(icmpErr(t, u6.vip, client6, 1, 4, 0, u6.req))},
		{name: "v6 time-exceeded from a router quoting the whole TCP segment",
			in: fromBE(icmpErr(t, router6, self6, 3, 0, 0, t6.fwd)), verdict: xdpTX, out: toClient(icmpErr(t, router6, client6, 3, 0, 0, t6.req))},
		{name: "v6 packet-too-big from the backend's side",
			in: fromBE(icmpErr(t, router6, self6, 2, 0, 1400, t6.fwd)), verdict: xdpTX, out: toClient(icmpErr(t, router6, client6, 2, 0, 1400, t6.req))},
		// Client side -> backend.
		{name: "v4 frag-needed to a nat VIP about its reply: to the backend, quote translated (issue input)",
			in: frame(t, ext, upMAC, 0, icmpErr(t, router4, t4.vip, 3, 4, 1400, t4.back)), verdict: xdpTX, out: toBE(natBE4, icmpErr(t, router4, natBE4, 3, 4, 1400, t4.rep)), sent: true},
		{name: "v4 port-unreachable from the client itself about the VIP's UDP reply: from the SNAT address",
			in: frame(t, ext, upMAC, 0, icmpErr(t, client4, u4.vip, 3, 3, 0, u4.back)), verdict: xdpTX, out: toBE(natBE4, icmpErr(t, self4, natBE4, 3, 3, 0, u4.rep)), sent: true},
		{name: "v6 packet-too-big to a nat VIP about its UDP reply",
			in: frame(t, ext, upMAC, 0, icmpErr(t, router6, u6.vip, 2, 0, 1280, u6.back)), verdict: xdpTX, out: toBE(natBE6, icmpErr(t, router6, natBE6, 2, 0, 1280, u6.rep)), sent: true},
		{name: "v6 time-exceeded to a nat VIP about its TCP reply, quote cut short",
			in: frame(t, ext, upMAC, 0, icmpErr(t, router6, t6.vip, 3, 0, 0, cut(t6.back, 48))), verdict: xdpTX, out: toBE(natBE6, icmpErr(t, router6, natBE6, 3, 0, 0, cut(t6.rep, 48))), sent: true},
		// Not ours to translate.
		{name: "frag-needed to a nat VIP about a flow it never saw: dropped",
			in: frame(t, ext, upMAC, 0, icmpErr(t, router4, t4.vip, 3, 4, 1400, ipPacket(t, flow{src: t4.vip, dst: client4, sport: 80, dport: 9})[:28])), verdict: xdpDrop, drop: "no_backend"},
		{name: "error to the SNAT address about a port nobody reserved passes",
			in: fromBE(icmpErr(t, natBE4, self4, 3, 3, 0, ipPacket(t, flow{src: self4, dst: natBE4, sport: 9, dport: 5353, udp: true})))},
		{name: "error to the SNAT address quoting another source passes",
			in: fromBE(icmpErr(t, natBE4, self4, 3, 3, 0, ipPacket(t, flow{src: "198.18.0.77", dst: natBE4, sport: 9, dport: 5353, udp: true})))},
	}
	runRows(t, r, r.dp.Program(), rows)
}

// TestEncapEntropyKept: an established flow's outer entropy comes from its connection-table
// entry (the packet is not hashed again); an entry without it (an older agent's, ehash 0) is
// hashed, so both leave with the source port its first packet had.
func TestEncapEntropyKept(t *testing.T) {
	r := newRig(t, Options{})
	mustSet(t, r.dp, issue12Services())
	if err := r.dp.SetConfig(rigConfig(EncapGUE)); err != nil {
		t.Fatal(err)
	}
	id := r.dp.state.BackendIDs()[netip.AddrPortFrom(netip.MustParseAddr(hostA4), 0).String()]
	for _, row := range []struct {
		name  string
		sport uint16
		ehash uint32 // planted in the entry
		want  uint16 // GUE source port
	}{
		{"entry without entropy (older agent): hashed", 45001, 0, GUESourcePort(netip.MustParseAddr(client4), netip.MustParseAddr("203.0.113.10"), 45001, 80, lb.TCP)},
		{"entry with entropy: taken from it", 45002, 0x1234, 49152 | 0x1234},
		{"entry with entropy, high bits masked", 45003, 0xffffabcd, 49152 | (0xabcd & 0x3fff)},
	} {
		t.Run(row.name, func(t *testing.T) {
			// The flow's first packet makes its entry; the row's entropy is then planted in it.
			p := ipPacket(t, flow{src: client4, dst: "203.0.113.10", sport: row.sport, dport: 80, payload: "a"})
			if v, _ := r.run(t, r.dp.Program(), frame(t, ext, upMAC, 0, p)); v != xdpTX {
				t.Fatalf("first packet: verdict %s", verdictName[v])
			}
			k := bpfobj.LbFlowKey{Src: addrWords(netip.MustParseAddr(client4)), Dst: addrWords(netip.MustParseAddr("203.0.113.10")),
				Sport: htons(row.sport), Dport: htons(80), Proto: 6, Family: 4}
			var e bpfobj.LbCtEntry
			if err := r.dp.objs.Conntrack.Lookup(k, &e); err != nil {
				t.Fatalf("entry of the flow: %v", err)
			}
			if e.BackendId != id {
				t.Fatalf("entry's backend %d, want %d", e.BackendId, id)
			}
			if want := EntropyHash(netip.MustParseAddr(client4), netip.MustParseAddr("203.0.113.10"), row.sport, 80, lb.TCP); e.Ehash != want {
				t.Errorf("entry keeps entropy %#x, want EntropyHash %#x", e.Ehash, want)
			}
			e.Ehash = row.ehash
			if err := r.dp.objs.Conntrack.Put(k, e); err != nil {
				t.Fatal(err)
			}
			v, out := r.run(t, r.dp.Program(), frame(t, ext, upMAC, 0, p))
			if v != xdpTX {
				t.Fatalf("verdict %s", verdictName[v])
			}
			if got := binary.BigEndian.Uint16(out[34:36]); got != row.want {
				t.Errorf("GUE source port %d, want %d", got, row.want)
			}
		})
	}
}
