package lbmap

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/govcloud/govcloud/dataplane/bpfobj"
	"github.com/govcloud/govcloud/lb"
)

// Addresses of the decapsulation tests: the LB hosts (tunnel sources), a host outside the
// fabric, guests' private addresses, and the VIPs served here (local) or elsewhere.
var (
	lbHost4, lbHost6       = hostA4, hostA6   // run the load balancer: tunnel sources
	outsider4, outsider6   = client4, client6 // gc-client: not a tunnel source
	guest4, guest6         = "198.18.20.11", "2001:db8:20::11"
	localTCP4, localTCP6   = "203.0.113.10", "2001:db8:f::10" // :80/tcp, backend here
	localUDP4, localUDP6   = "203.0.113.11", "2001:db8:f::11" // :53/udp, backend here
	remoteVIP4, remoteVIP6 = "203.0.113.13", "2001:db8:f::13" // :80/tcp, backends elsewhere only
	landsVIP4, landsVIP6   = "198.19.0.10", "2001:db8:19::10" // :80/tcp in domain 7 (vlan 120)
)

func decapLocalVIPs() []LocalVIP {
	v := func(dom uint32, a string, port uint16, p lb.Protocol) LocalVIP {
		return LocalVIP{VIP: lb.VIP{Domain: dom, Addr: netip.MustParseAddr(a), Port: port, Proto: p}, Department: max(dom, 3)}
	}
	return []LocalVIP{
		v(0, localTCP4, 80, lb.TCP), v(0, localTCP6, 80, lb.TCP),
		v(0, localUDP4, 53, lb.UDP), v(0, localUDP6, 53, lb.UDP),
		v(7, landsVIP4, 80, lb.TCP), v(7, landsVIP6, 80, lb.TCP),
	}
}

// ipv4Hdr is a 20-byte IPv4 header (plus opts) carrying payload, checksum computed after mut.
func ipv4Hdr(src, dst string, proto byte, opts, payload []byte, mut func(h []byte)) []byte {
	hl := 20 + len(opts)
	h := make([]byte, hl, hl+len(payload))
	h[0] = 0x40 | byte(hl/4)
	binary.BigEndian.PutUint16(h[2:], uint16(hl+len(payload)))
	h[8], h[9] = 64, proto
	copy(h[12:], netip.MustParseAddr(src).AsSlice())
	copy(h[16:], netip.MustParseAddr(dst).AsSlice())
	copy(h[20:], opts)
	if mut != nil {
		mut(h)
	}
	var s uint32
	for i := 0; i < hl; i += 2 {
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(s))
	return append(h, payload...)
}

// ipv6Hdr is an IPv6 header whose next header is nh, followed by ext (extension headers) and
// payload.
func ipv6Hdr(src, dst string, nh byte, ext, payload []byte) []byte {
	h := make([]byte, 40, 40+len(ext)+len(payload))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(ext)+len(payload)))
	h[6], h[7] = nh, 64
	copy(h[8:], netip.MustParseAddr(src).AsSlice())
	copy(h[24:], netip.MustParseAddr(dst).AsSlice())
	return append(append(h, ext...), payload...)
}

// fragHdr is an IPv6 fragment header: next header nh, offset in 8-byte units, M flag.
func fragHdr(nh byte, off uint16, more bool) []byte {
	f := []byte{nh, 0, 0, 0, 0, 0, 0x12, 0x34}
	v := off << 3
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(f[2:], v)
	return f
}

// dstOpts is an 8-byte IPv6 destination-options header (PadN) with next header nh.
func dstOpts(nh byte) []byte { return []byte{nh, 0, 1, 4, 0, 0, 0, 0} }

func tunnelProto(inner []byte) byte {
	if inner[0]>>4 == 6 {
		return 41
	}
	return 4
}

// tunnel4 / tunnel6 wrap inner in an outer IPv4 / IPv6 header as an LB host would (mut edits
// the outer IPv4 header before its checksum).
func tunnel4(src, dst string, inner []byte, mut func(h []byte)) []byte {
	return ipv4Hdr(src, dst, tunnelProto(inner), nil, inner, mut)
}

func tunnel6(src, dst string, inner []byte) []byte {
	return ipv6Hdr(src, dst, tunnelProto(inner), nil, inner)
}

func icmpEcho(t testing.TB, src, dst string) []byte {
	if netip.MustParseAddr(src).Is4() {
		v := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: ip(src), DstIP: ip(dst)}
		return serialize(t, v, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1}, gopacket.Payload("ping"))
	}
	v := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: ip(src), DstIP: ip(dst)}
	ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}
	_ = ic.SetNetworkLayerForChecksum(v)
	return serialize(t, v, ic, gopacket.Payload("\x00\x01\x00\x01ping"))
}

type decapRow struct {
	name  string
	in    []byte
	drop  string // "": not dropped
	out   []byte // accepted: the expected output; nil with drop == "": passes untouched
	decap bool   // the decapsulation counter moves by one
	// unchecked: decapsulation as it was before issue 20 (LB_NO_DECAP_CHECKS) passed this
	// frame on: the row is a regression test of finding 1.
	unchecked bool
}

// TestDecapAcceptsOnlyLBTraffic runs every class of tunnelled frame through xdp_lb and
// xdp_decap: only TCP/UDP (or ICMP too-big) to a local VIP, in the VIP's domain, from an LB
// host, in an unfragmented and well-formed tunnel is decapsulated; each other class is
// dropped with its own counter (issue 20, finding 1), and traffic that is no tunnel to this
// host passes untouched.
func TestDecapAcceptsOnlyLBTraffic(t *testing.T) {
	r := newRig(t, Options{})
	mustSet(t, r.dp, testServices())
	if err := r.dp.SetDecapAddrs([]netip.Addr{netip.MustParseAddr(self4), netip.MustParseAddr(self6)}); err != nil {
		t.Fatal(err)
	}
	if err := r.dp.SetTunnelSources([]netip.Addr{netip.MustParseAddr(lbHost4), netip.MustParseAddr(lbHost6), netip.MustParseAddr(hostB4)}); err != nil {
		t.Fatal(err)
	}
	if err := r.dp.SetLocalVIPs(decapLocalVIPs()); err != nil {
		t.Fatal(err)
	}
	ext := mac("02:00:00:00:00:fe") // the ToR
	// fr is the frame on the wire; decapped is what the program must leave: the inner packet
	// behind the original Ethernet header (and tag).
	fr := func(vlan uint16, l3 []byte) []byte { return frame(t, ext, upMAC, vlan, l3) }
	decapped := func(vlan uint16, inner []byte) []byte {
		l2len := 14
		if vlan != 0 {
			l2len = 18
		}
		return fr(vlan, inner)[:l2len+len(inner)]
	}

	var rows []decapRow
	for _, of := range []int{4, 6} {
		for _, inf := range []int{4, 6} {
			kind := map[[2]int]string{{4, 4}: "IPIP", {4, 6}: "6in4", {6, 4}: "4in6", {6, 6}: "IP6IP6"}[[2]int{of, inf}]
			lbSrc, outSrc, self := lbHost4, outsider4, self4
			if of == 6 {
				lbSrc, outSrc, self = lbHost6, outsider6, self6
			}
			client, guest, tcpVIP, udpVIP, remote, lands := client4, guest4, localTCP4, localUDP4, remoteVIP4, landsVIP4
			if inf == 6 {
				client, guest, tcpVIP, udpVIP, remote, lands = client6, guest6, localTCP6, localUDP6, remoteVIP6, landsVIP6
			}
			wrap := func(src string, inner []byte) []byte {
				if of == 4 {
					return tunnel4(src, self, inner, nil)
				}
				return tunnel6(src, self, inner)
			}
			pkt := func(dst string, dport uint16, udp bool) []byte {
				return ipPacket(t, flow{src: client, dst: dst, sport: 41000, dport: dport, udp: udp, payload: "GET / HTTP/1.1"})
			}
			web, dns := pkt(tcpVIP, 80, false), pkt(udpVIP, 53, true)
			landsWeb := pkt(lands, 80, false)
			router := "198.51.100.1"
			if inf == 6 {
				router = "2001:db8:1::fe"
			}
			tooBig := icmpTooBig(t, router, tcpVIP, client, 80, 41000)
			accept := func(name string, vlan uint16, inner []byte) decapRow {
				return decapRow{name: kind + ": " + name, in: fr(vlan, wrap(lbSrc, inner)), out: decapped(vlan, inner), decap: true}
			}
			drop := func(name, reason string, vlan uint16, l3 []byte) decapRow {
				return decapRow{name: kind + ": " + name, in: fr(vlan, l3), drop: reason}
			}
			finding1 := func(row decapRow) decapRow { row.unchecked = true; return row }

			// Inner packets broken in one way each.
			var innerFrag, badVersion, badIHL []byte
			if inf == 4 {
				innerFrag = ipv4Hdr(client, tcpVIP, 6, nil, web[20:], func(h []byte) { h[6] = 0x20 }) // MF
				badVersion = append([]byte{0x65}, web[1:]...)
				badIHL = append([]byte{0x44}, web[1:]...)
			} else {
				innerFrag = ipv6Hdr(client, tcpVIP, 44, fragHdr(6, 0, true), web[40:])
				badVersion = append([]byte{0x40}, web[1:]...)
				badIHL = append([]byte{0x50}, web[1:]...) // version 5: nothing to read a length from
			}
			truncated := web[:len(web)-6] // the inner length still counts the missing bytes
			var noPorts []byte
			if inf == 4 {
				noPorts = ipv4Hdr(client, tcpVIP, 6, nil, web[20:28], nil) // consistent, 8 of 20 TCP bytes
			} else {
				noPorts = ipv6Hdr(client, tcpVIP, 6, nil, web[40:48])
			}
			nested := tunnel4(client, tcpVIP, pkt(guest, 22, false), nil)
			if inf == 6 {
				nested = tunnel6(client, tcpVIP, pkt(guest, 22, false))
			}
			rng := rand.New(rand.NewPCG(20, uint64(of*10+inf)))
			garbage := make([]byte, 64)
			for i := range garbage {
				garbage[i] = byte(rng.Uint32())
			}
			garbage[0] = 0xd0 | garbage[0]&0x0f // neither version 4 nor 6

			if inf == 4 {
				// The load balancer never forwards IPv4 options (parse.h): not even NOPs pass.
				rows = append(rows, drop("inner IPv4 with options (NOPs) to a local VIP", "decap_malformed", 0, wrap(lbSrc, ipv4Hdr(client, tcpVIP, 6, []byte{1, 1, 1, 0}, web[20:], nil))))
			}
			rows = append(rows,
				accept("TCP to local VIP from an LB host", 0, web),
				accept("UDP to local VIP from an LB host", 0, dns),
				accept("department VIP in its own VLAN (lands, 120)", 120, landsWeb),
				accept("ICMP too-big to a local VIP about its flow (path MTU)", 0, tooBig),
				finding1(drop("outer source not an LB host (gc-client)", "decap_source", 0, wrap(outSrc, web))),
				drop("outer source a guest", "decap_source", 0, wrap(guest4, web)),
				finding1(drop("inner dst a guest private address, TCP (finding 1)", "decap_not_local_vip", 0, wrap(lbSrc, pkt(guest, 22, false)))),
				finding1(drop("inner dst a guest private address, ICMP echo (finding 1)", "decap_not_local_vip", 0, wrap(lbSrc, icmpEcho(t, client, guest)))),
				finding1(drop("inner dst a guest, outer source outside too (finding 1 from gc-client)", "decap_source", 0, wrap(outSrc, icmpEcho(t, client, guest)))),
				drop("inner dst VIP, wrong port", "decap_not_local_vip", 0, wrap(lbSrc, pkt(tcpVIP, 443, false))),
				drop("inner dst VIP, wrong protocol", "decap_not_local_vip", 0, wrap(lbSrc, pkt(tcpVIP, 80, true))),
				drop("inner dst ICMP echo to a local VIP", "decap_not_local_vip", 0, wrap(lbSrc, icmpEcho(t, client, tcpVIP))),
				finding1(drop("inner dst a VIP served elsewhere only", "decap_not_local_vip", 0, wrap(lbSrc, pkt(remote, 80, false)))),
				drop("department VIP untagged (public domain)", "decap_not_local_vip", 0, wrap(lbSrc, landsWeb)),
				finding1(drop("department VIP in another department's VLAN (130)", "decap_not_local_vip", 130, wrap(lbSrc, landsWeb))),
				drop("VIP in a VLAN of no department (999)", "decap_not_local_vip", 999, wrap(lbSrc, web)),
				drop("inner fragment", "decap_fragment", 0, wrap(lbSrc, innerFrag)),
				drop("truncated inner (length beyond the tunnel)", "decap_malformed", 0, wrap(lbSrc, truncated)),
				drop("inner TCP header cut short", "decap_malformed", 0, wrap(lbSrc, noPorts)),
				drop("inner bad version", "decap_malformed", 0, wrap(lbSrc, badVersion)),
				drop("inner bad IHL / version", "decap_malformed", 0, wrap(lbSrc, badIHL)),
				finding1(drop("nested tunnel", "decap_not_local_vip", 0, wrap(lbSrc, nested))),
				drop("random garbage as inner packet", "decap_malformed", 0, wrap(lbSrc, garbage)),
			)
			if of == 4 {
				rows = append(rows,
					drop("outer first fragment (MF)", "decap_fragment", 0, tunnel4(lbSrc, self, web, func(h []byte) { h[6] = 0x20 })),
					drop("outer later fragment (offset)", "decap_fragment", 0, tunnel4(lbSrc, self, web[:16], func(h []byte) { h[7] = 3 })),
					drop("outer fragment from outside", "decap_fragment", 0, tunnel4(outSrc, self, web, func(h []byte) { h[6] = 0x20 })),
					drop("outer IPv4 options (IHL 6)", "decap_malformed", 0, ipv4Hdr(lbSrc, self, tunnelProto(web), []byte{1, 1, 1, 0}, web, nil)),
					// The outer checksum is not verified (decap.h): the addresses are checked
					// against the maps and the header is gone after decapsulation.
					decapRow{name: kind + ": outer IPv4 bad checksum, from an LB host to a local VIP", in: fr(0, func() []byte { p := tunnel4(lbSrc, self, web, nil); p[10] ^= 0xff; return p }()),
						out: decapped(0, web), decap: true},
					drop("outer IPv4 total length beyond the frame", "decap_malformed", 0, tunnel4(lbSrc, self, web, func(h []byte) { h[2]++ })),
				)
			} else {
				nh := tunnelProto(web)
				rows = append(rows,
					drop("outer first fragment (fragment header, M)", "decap_fragment", 0, ipv6Hdr(lbSrc, self, 44, fragHdr(nh, 0, true), web)),
					drop("outer later fragment (fragment header, offset)", "decap_fragment", 0, ipv6Hdr(lbSrc, self, 44, fragHdr(nh, 3, false), web[:16])),
					drop("destination options before the tunnel", "decap_malformed", 0, ipv6Hdr(lbSrc, self, 60, dstOpts(nh), web)),
					drop("hop-by-hop and routing headers before the tunnel", "decap_malformed", 0, ipv6Hdr(lbSrc, self, 0, append([]byte{43, 0, 1, 4, 0, 0, 0, 0}, []byte{nh, 0, 0, 0, 0, 0, 0, 0}...), web)),
					drop("outer IPv6 payload length beyond the frame", "decap_malformed", 0, func() []byte { p := tunnel6(lbSrc, self, web); p[5] += 9; return p }()),
				)
			}
		}
	}
	// Traffic that is no tunnel to this host passes untouched, whatever it is.
	untouched := []struct {
		name string
		l3   []byte
		vlan uint16
	}{
		{"TCP to this host (ssh)", ipPacket(t, flow{src: client4, dst: self4, sport: 40000, dport: 22}), 0},
		{"TCP to this host over IPv6", ipPacket(t, flow{src: client6, dst: self6, sport: 40000, dport: 22}), 0},
		{"ICMP echo to a guest", icmpEcho(t, client4, guest4), 0},
		{"IPIP to another host (not a local tunnel endpoint)", tunnel4(lbHost4, hostB4, ipPacket(t, flow{src: client4, dst: localTCP4, sport: 1, dport: 80}), nil), 0},
		{"IP6IP6 to another host", tunnel6(lbHost6, hostB6, ipPacket(t, flow{src: client6, dst: localTCP6, sport: 1, dport: 80})), 0},
		{"IPv6 to this host, destination options then UDP", ipv6Hdr(client6, self6, 60, dstOpts(17), []byte{0, 53, 0, 53, 0, 8, 0, 0}), 0},
		{"IPv6 fragment of UDP to this host", ipv6Hdr(client6, self6, 44, fragHdr(17, 0, true), []byte{0, 53, 0, 53, 0, 16, 0, 0}), 0},
		{"IPv4 fragment of UDP to this host", ipv4Hdr(client4, self4, 17, nil, []byte{0, 53, 0, 53, 0, 16, 0, 0}, func(h []byte) { h[6] = 0x20 }), 0},
		{"garbage that claims to be IPv4", append([]byte{0x45, 0, 0, 20}, bytes.Repeat([]byte{0xa5}, 40)...), 0},
	}
	for _, u := range untouched {
		rows = append(rows, decapRow{name: "untouched: " + u.name, in: fr(u.vlan, u.l3)})
	}

	uncheckedLB, uncheckedDecap, closeUnchecked := loadNoDecapChecks(t, r.dp)
	defer closeUnchecked()
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			for _, prog := range []struct {
				name string
				p    *ebpf.Program
			}{{"xdp_lb", r.dp.Program()}, {"xdp_decap", r.dp.DecapProgram()}} {
				r.checkDecap(t, prog.name, prog.p, row)
			}
			if !row.unchecked {
				return
			}
			// The control: without the checks this frame is decapsulated and handed to the
			// kernel, which routes the inner packet anywhere.
			for _, p := range []*ebpf.Program{uncheckedLB, uncheckedDecap} {
				before, _ := r.dp.Decapsulated()
				if v, _ := r.run(t, p, row.in); v != xdpPass {
					t.Errorf("control without checks: verdict %s, want PASS", verdictName[v])
				}
				if after, _ := r.dp.Decapsulated(); after.Packets-before.Packets != 1 {
					t.Errorf("control without checks: not decapsulated")
				}
			}
		})
	}
}

// checkDecap runs one row through prog and checks verdict, output bytes and every counter.
func (r *rig) checkDecap(t *testing.T, name string, prog *ebpf.Program, row decapRow) {
	t.Helper()
	dropsBefore, err := r.dp.Drops()
	if err != nil {
		t.Fatal(err)
	}
	decBefore, _ := r.dp.Decapsulated()
	v, out := r.run(t, prog, row.in)
	want, wantOut := uint32(xdpPass), row.out
	if row.drop != "" {
		want, wantOut = xdpDrop, nil
	} else if wantOut == nil {
		wantOut = row.in
	}
	if v != want {
		t.Errorf("%s: verdict %s, want %s\n in %s", name, verdictName[v], verdictName[want], hex.EncodeToString(row.in))
	}
	if wantOut != nil && !bytes.Equal(out, wantOut) {
		t.Errorf("%s: output differs\n got  %s\n want %s", name, hex.EncodeToString(out), hex.EncodeToString(wantOut))
	}
	dropsAfter, _ := r.dp.Drops()
	if _, ok := dropsAfter[row.drop]; row.drop != "" && !ok {
		t.Fatalf("no drop reason %q in %v", row.drop, dropsAfter)
	}
	var moved []string
	for reason, c := range dropsAfter {
		d := c.Packets - dropsBefore[reason].Packets
		wantD := uint64(0)
		if reason == row.drop {
			wantD = 1
		}
		if d != wantD {
			moved = append(moved, fmt.Sprintf("%s by %d (want %d)", reason, d, wantD))
		}
	}
	if len(moved) > 0 {
		t.Errorf("%s: drop counters: %s", name, strings.Join(moved, ", "))
	}
	decAfter, _ := r.dp.Decapsulated()
	if d := decAfter.Packets - decBefore.Packets; (d == 1) != row.decap || d > 1 {
		t.Errorf("%s: decapsulated counter moved by %d, want %v", name, d, row.decap)
	}
}

// SetTunnelSources and SetLocalVIPs take the whole set, converge the maps to it and refuse
// bad values by name.
func TestSetDecapPolicy(t *testing.T) {
	r := newRig(t, Options{})
	a := netip.MustParseAddr
	if err := r.dp.SetDecapAddrs([]netip.Addr{a(self4), a(self6)}); err != nil {
		t.Fatal(err)
	}
	if err := r.dp.SetTunnelSources([]netip.Addr{a("198.18.0.12"), a("2001:db8::12"), a("198.18.0.11")}); err != nil {
		t.Fatal(err)
	}
	if err := r.dp.SetTunnelSources([]netip.Addr{a("198.18.0.11"), a("2001:db8::13"), a("198.18.0.11")}); err != nil {
		t.Fatal(err)
	}
	got, err := r.dp.TunnelSources()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[198.18.0.11 2001:db8::13]" {
		t.Fatalf("tunnel sources %v, want [198.18.0.11 2001:db8::13]", got)
	}
	// Pairs follow the endpoints: without an IPv6 endpoint no IPv6 source is accepted.
	if err := r.dp.SetDecapAddrs([]netip.Addr{a(self4)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.dp.TunnelSources(); fmt.Sprint(got) != "[198.18.0.11]" {
		t.Fatalf("tunnel sources with an IPv4 endpoint only: %v", got)
	}
	if err := r.dp.SetDecapAddrs([]netip.Addr{a(self4), a(self6)}); err != nil {
		t.Fatal(err)
	}
	// A restarted agent finds the sources in the pinned map: its first SetDecapAddrs keeps them.
	again := &Dataplane{objs: r.dp.objs, local: map[netip.Addr]bool{}, tunnelSrcs: map[netip.Addr]bool{}, vipAddr: r.dp.vipAddr, state: r.dp.state, log: r.dp.log}
	if err := again.restore(); err != nil {
		t.Fatal(err)
	}
	if err := again.SetDecapAddrs([]netip.Addr{a(self4), a(self6)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.dp.TunnelSources(); fmt.Sprint(got) != "[198.18.0.11 2001:db8::13]" {
		t.Fatalf("tunnel sources after a restart's SetDecapAddrs: %v", got)
	}
	vips := decapLocalVIPs()
	if err := r.dp.SetLocalVIPs(vips); err != nil {
		t.Fatal(err)
	}
	if err := r.dp.SetLocalVIPs(vips[2:]); err != nil {
		t.Fatal(err)
	}
	lv, err := r.dp.LocalVIPs()
	if err != nil {
		t.Fatal(err)
	}
	if len(lv) != len(vips)-2 {
		t.Fatalf("local VIPs %v, want %v", lv, vips[2:])
	}
	for _, v := range lv {
		found := false
		for _, w := range vips[2:] {
			found = found || v == w
		}
		if !found {
			t.Fatalf("local VIP %+v not in the set given", v)
		}
	}

	// decap_allow4 is exactly the IPv4 cross product (v4 pairs x v4 local VIPs), and follows each
	// setter: fewer sources, fewer endpoints, fewer VIPs.
	allow4 := func() int {
		n := 0
		var k bpfobj.LbDecap4Key
		var v uint32
		it := r.dp.objs.DecapAllow4.Iterate()
		for it.Next(&k, &v) {
			n++
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		return n
	}
	v4VIPs := 0
	for _, v := range lv {
		if v.VIP.Addr.Is4() {
			v4VIPs++
		}
	}
	if v4VIPs == 0 {
		t.Fatal("the test's local VIPs have no IPv4 VIP")
	}
	if got, want := allow4(), 1*1*v4VIPs; got != want { // 198.18.0.11 x self4 x VIPs
		t.Errorf("decap_allow4 holds %d combinations, want %d", got, want)
	}
	if err := r.dp.SetTunnelSources([]netip.Addr{a("198.18.0.11"), a("198.18.0.14"), a("2001:db8::13")}); err != nil {
		t.Fatal(err)
	}
	if got, want := allow4(), 2*1*v4VIPs; got != want {
		t.Errorf("two IPv4 sources: decap_allow4 holds %d, want %d", got, want)
	}
	if err := r.dp.SetLocalVIPs(nil); err != nil {
		t.Fatal(err)
	}
	if got := allow4(); got != 0 {
		t.Errorf("no local VIPs: decap_allow4 holds %d", got)
	}
	if err := r.dp.SetLocalVIPs(vips[2:]); err != nil {
		t.Fatal(err)
	}
	if err := r.dp.SetDecapAddrs([]netip.Addr{a(self6)}); err != nil {
		t.Fatal(err)
	}
	if got := allow4(); got != 0 {
		t.Errorf("no IPv4 endpoint: decap_allow4 holds %d", got)
	}
	if err := r.dp.SetDecapAddrs([]netip.Addr{a(self4), a(self6)}); err != nil {
		t.Fatal(err)
	}
	if err := r.dp.SetTunnelSources([]netip.Addr{a("198.18.0.11"), a("2001:db8::13")}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"invalid source", r.dp.SetTunnelSources([]netip.Addr{{}}), `tunnel source "invalid IP"`},
		{"unspecified source", r.dp.SetTunnelSources([]netip.Addr{a("0.0.0.0")}), `tunnel source "0.0.0.0"`},
		{"mapped source", r.dp.SetTunnelSources([]netip.Addr{a("::ffff:198.18.0.11")}), `tunnel source "::ffff:198.18.0.11"`},
		{"multicast source", r.dp.SetTunnelSources([]netip.Addr{a("ff02::1")}), `tunnel source "ff02::1"`},
		{"VIP port 0", r.dp.SetLocalVIPs([]LocalVIP{{VIP: lb.VIP{Addr: a("203.0.113.10"), Proto: lb.TCP}}}), "local VIP 203.0.113.10:0/tcp@0: port 0"},
		{"VIP protocol", r.dp.SetLocalVIPs([]LocalVIP{{VIP: lb.VIP{Addr: a("203.0.113.10"), Port: 80, Proto: 1}}}), "protocol proto(1), want tcp or udp"},
		{"VIP in two departments", r.dp.SetLocalVIPs([]LocalVIP{{VIP: lb.VIP{Addr: a("203.0.113.10"), Port: 80, Proto: lb.TCP}, Department: 1}, {VIP: lb.VIP{Addr: a("203.0.113.10"), Port: 80, Proto: lb.TCP}, Department: 2}}), "in departments 1 and 2"},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, tc.err, tc.want)
		}
	}
	// Refused sets leave the maps as they were.
	if got2, _ := r.dp.TunnelSources(); fmt.Sprint(got2) != fmt.Sprint(got) {
		t.Fatalf("tunnel sources changed by a refused set: %v", got2)
	}
	if lv2, _ := r.dp.LocalVIPs(); len(lv2) != len(lv) {
		t.Fatalf("local VIPs changed by a refused set: %v", lv2)
	}
}
