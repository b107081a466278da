package isofuzz

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
)

// Generate returns the fuzz cases for the positions, deterministic for (topology, seed): the
// seed drives the random choices and is the marker's run number.
func Generate(t *Topology, positions []Position, seed uint32) []Frame {
	g := &gen{t: t, run: seed, rng: rand.New(rand.NewPCG(uint64(seed), 0x67637a66))}
	for i := range positions {
		p := &positions[i]
		switch p.Kind {
		case AtGuest:
			g.guest(p)
		case AtFabric:
			g.fabric(p)
		case AtOutside:
			g.outside(p)
		}
	}
	return g.frames
}

type gen struct {
	t      *Topology
	run    uint32
	rng    *rand.Rand
	frames []Frame
}

// l2 is a frame's Ethernet header and tag stack.
type l2 struct {
	dst, src net.HardwareAddr
	tags     []tag
}

// l3 is what a builder made: the EtherType and bytes after the tags, or several (fragments).
type l3 struct {
	etype uint16
	pkts  [][]byte
	dsts  []netip.Addr
	probe *Probe
}

// emit adds one case; build gets the case's id (for its marker).
func (g *gen) emit(p *Position, class, desc string, w l2, build func(id uint32) l3) *Frame {
	id := uint32(len(g.frames) + 1)
	r := build(id)
	f := Frame{ID: id, Position: p.Name, Kind: p.Kind, Class: class, Desc: desc, Dsts: r.dsts, Probe: r.probe}
	for _, b := range r.pkts {
		f.Wire = append(f.Wire, eth(w.dst, w.src, w.tags, r.etype, b))
	}
	f.Tenant = g.tenant(p, w.tags)
	f.Allowed = map[string]bool{}
	if f.Tenant != "" && f.Tenant != "?" {
		for _, gu := range g.t.Guests {
			if gu.Dept == f.Tenant {
				f.Allowed[gu.Name] = true
			}
		}
	}
	for _, d := range f.Dsts {
		for _, v := range g.t.VIPs {
			if v.Addr == d {
				for _, b := range v.Backends {
					f.Allowed[b] = true
				}
			}
		}
	}
	g.frames = append(g.frames, f)
	return &g.frames[len(g.frames)-1]
}

// tenant classifies a frame by position and tags (see Frame.Tenant). Priority tags (VID 0)
// are untagged to the kernel, so they are skipped first.
func (g *gen) tenant(p *Position, tags []tag) string {
	switch p.Kind {
	case AtGuest:
		return p.Dept
	case AtOutside:
		return ""
	}
	for len(tags) > 0 && tags[0].TPID == tpid1Q && tags[0].VID == 0 {
		tags = tags[1:]
	}
	if len(tags) == 0 {
		return ""
	}
	if len(tags) == 1 && tags[0].TPID == tpid1Q {
		for _, gu := range g.t.Guests {
			if gu.VLAN == tags[0].VID {
				return gu.Dept
			}
		}
	}
	return "?"
}

// Transport kinds of probes.
type l4 struct {
	proto uint8 // protoICMP (echo; ICMPv6 for IPv6), protoTCP (SYN), protoUDP
	port  uint16
}

var (
	icmpEcho = l4{proto: protoICMP}
	tcp80    = l4{proto: protoTCP, port: 80}
)

func (k l4) String() string {
	switch k.proto {
	case protoTCP:
		return fmt.Sprintf("tcp/%d", k.port)
	case protoUDP:
		return fmt.Sprintf("udp/%d", k.port)
	}
	return "icmp-echo"
}

// mgmtProbes are the management ports of issue 20 (metrics, BGP, SSH, DNS), the
// controller's API and a ping.
var mgmtProbes = []l4{{protoTCP, 9480}, {protoTCP, 179}, {protoTCP, 22}, {protoTCP, 8480}, {protoUDP, 53}, icmpEcho}

// transport builds the innermost transport message of case id from src to dst: IP protocol,
// bytes and the probe to match answers with. n markers are its payload.
func (g *gen) transport(id uint32, src, dst netip.Addr, k l4, n int) (uint8, []byte, *Probe) {
	pl := payload(g.run, id, n)
	sport := uint16(10000 + id%50000)
	p := &Probe{Proto: k.proto, Src: src, Dst: dst, Sport: sport, Dport: k.port}
	switch k.proto {
	case protoTCP:
		p.Seq = 0x47430000 ^ id*2654435761
		p.Len = len(pl)
		return protoTCP, tcpSYN(src, dst, sport, k.port, p.Seq, pl), p
	case protoUDP:
		return protoUDP, udp(src, dst, sport, k.port, pl), p
	}
	if src.Is4() {
		p.Proto = protoICMP
		return protoICMP, icmp4(8, 0, id&0xffff, pl), p
	}
	p.Proto = protoICMP6
	return protoICMP6, icmp6(src, dst, 128, 0, append(binary.BigEndian.AppendUint32(nil, id&0xffff), pl...)), p
}

// ipPacket is an IP packet (v4 or v6 by dst) carrying the transport probe.
func (g *gen) ipPacket(id uint32, src, dst netip.Addr, k l4) ([]byte, *Probe) {
	proto, b, p := g.transport(id, src, dst, k, 2)
	if dst.Is4() {
		return ip4(src, dst, proto, b, ip4Opt{ID: uint16(id)}), p
	}
	return ip6(src, dst, proto, b, 0), p
}

// ip builds a plain IP case.
func (g *gen) ip(p *Position, class, desc string, w l2, src, dst netip.Addr, k l4) *Frame {
	return g.emit(p, class, fmt.Sprintf("%s %s -> %s %s", desc, src, dst, k), w, func(id uint32) l3 {
		b, pr := g.ipPacket(id, src, dst, k)
		return l3{etype: etOf(dst), pkts: [][]byte{b}, dsts: []netip.Addr{dst}, probe: pr}
	})
}

func etOf(a netip.Addr) uint16 {
	if a.Is4() {
		return etIPv4
	}
	return etIPv6
}

func protoOf(a netip.Addr) uint8 {
	if a.Is4() {
		return protoIPIP
	}
	return protoIPv6
}

// encap builds an IP-in-IP case: IPIP, 4in6, 6in4 or IP6IP6 by the families of the outer and
// inner destinations.
func (g *gen) encap(p *Position, w l2, osrc, odst, isrc, idst netip.Addr, k l4, regression string) *Frame {
	class := map[[2]bool]string{{true, true}: "ipip", {false, true}: "4in6", {true, false}: "6in4", {false, false}: "ip6ip6"}[[2]bool{odst.Is4(), idst.Is4()}]
	f := g.emit(p, class, fmt.Sprintf("outer %s -> %s, inner %s -> %s %s", osrc, odst, isrc, idst, k), w, func(id uint32) l3 {
		inner, pr := g.ipPacket(id, isrc, idst, k)
		var outer []byte
		if odst.Is4() {
			outer = ip4(osrc, odst, protoOf(idst), inner, ip4Opt{ID: uint16(id)})
		} else {
			outer = ip6(osrc, odst, protoOf(idst), inner, 0)
		}
		return l3{etype: etOf(odst), pkts: [][]byte{outer}, dsts: []netip.Addr{odst, idst}, probe: pr}
	})
	f.Regression = regression
	return f
}

// frag4 builds an IPv4 datagram of the transport probe cut into fragments: cuts are byte
// offsets into the IP payload (multiples of 8); overlap rewrites the second fragment to
// start 16 bytes early with other content.
func (g *gen) frag4(p *Position, class, desc string, w l2, src, dst netip.Addr, k l4, cuts []int, keep func(i int) bool) *Frame {
	return g.emit(p, class, fmt.Sprintf("%s %s -> %s %s", desc, src, dst, k), w, func(id uint32) l3 {
		proto, body, pr := g.transport(id, src, dst, k, 6)
		return l3{etype: etIPv4, pkts: fragments4(src, dst, proto, uint16(id), body, cuts, keep), dsts: []netip.Addr{dst}, probe: pr}
	})
}

func fragments4(src, dst netip.Addr, proto uint8, ipid uint16, body []byte, cuts []int, keep func(i int) bool) [][]byte {
	bounds := append(append([]int{0}, cuts...), len(body))
	var out [][]byte
	for i := 0; i+1 < len(bounds); i++ {
		if keep != nil && !keep(i) {
			continue
		}
		a, b := bounds[i], bounds[i+1]
		if a >= len(body) {
			continue
		}
		if b > len(body) {
			b = len(body)
		}
		out = append(out, ip4(src, dst, proto, body[a:b], ip4Opt{ID: ipid, MF: i+2 < len(bounds), FragOff: uint16(a / 8)}))
	}
	return out
}

// arpCase builds an ARP case with the marker as an Ethernet trailer after the ARP body.
func (g *gen) arpCase(p *Position, desc string, w l2, op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) *Frame {
	return g.emit(p, "arp", fmt.Sprintf("%s: op %d %s/%s -> %s/%s", desc, op, sha, spa, tha, tpa), w, func(id uint32) l3 {
		return l3{etype: etARP, pkts: [][]byte{append(arp(op, sha, spa, tha, tpa), marker(g.run, id)...)}}
	})
}

// ndCase builds an ICMPv6 ND message (RFC 4861) with the marker in an unassigned option (type
// 253, RFC 4727 experimental), which receivers skip.
func (g *gen) ndCase(p *Position, desc string, w l2, src, dst netip.Addr, typ uint8, body []byte) *Frame {
	return g.emit(p, "nd", fmt.Sprintf("%s %s -> %s", desc, src, dst), w, func(id uint32) l3 {
		opt := append([]byte{253, 3, 0, 0, 0, 0, 0, 0}, marker(g.run, id)...)
		m := icmp6(src, dst, typ, 0, append(slices.Clone(body), opt...))
		return l3{etype: etIPv6, pkts: [][]byte{ip6(src, dst, protoICMP6, m, 255)}, dsts: []netip.Addr{dst}}
	})
}

// randomCase builds a frame of random bytes of a random EtherType (or one of the lab's), with
// the marker at the end.
func (g *gen) randomCase(p *Position, w l2) *Frame {
	ets := []uint16{etIPv4, etIPv6, etARP, 0x88cc, 0x8863, 0x88e5, 0x22f0, uint16(g.rng.IntN(0x10000))}
	et := ets[g.rng.IntN(len(ets))]
	n := 20 + g.rng.IntN(200)
	junk := make([]byte, n)
	for i := range junk {
		junk[i] = byte(g.rng.UintN(256))
	}
	return g.emit(p, "random", fmt.Sprintf("ethertype %#04x, %d random bytes", et, n), w, func(id uint32) l3 {
		return l3{etype: et, pkts: [][]byte{append(junk, marker(g.run, id)...)}}
	})
}

// Views of the topology relative to a department.

func (g *gen) guestsOf(dept string, same bool, except string) []Guest {
	var out []Guest
	for _, gu := range g.t.Guests {
		if (gu.Dept == dept) == same && gu.Name != except {
			out = append(out, gu)
		}
	}
	return out
}

func (g *gen) gatewaysOf(dept string, same bool) []netip.Addr {
	var out []netip.Addr
	for _, gu := range g.t.Guests {
		if (gu.Dept == dept) == same && !slices.Contains(out, gu.Gateway) {
			out = append(out, gu.Gateway)
		}
	}
	return out
}

func (g *gen) vipsOf(dept string, same bool) []netip.Addr {
	var out []netip.Addr
	for _, v := range g.t.VIPs {
		if (v.Dept == dept) == same {
			out = append(out, v.Addr)
		}
	}
	return out
}

func (g *gen) hostAddrs() []netip.Addr {
	var out []netip.Addr
	for _, h := range g.t.Hosts {
		out = append(out, h.Addr)
	}
	return out
}

// mgmt4 is every IPv4 management address: hosts, ToR, controller.
func (g *gen) mgmt4() []netip.Addr {
	return append(g.hostAddrs(), g.t.TorFabric.Addr, g.t.TorClient.Addr, g.t.Controller.Addr())
}

func (g *gen) guestAddrs(gs []Guest) []netip.Addr {
	var out []netip.Addr
	for _, gu := range gs {
		out = append(out, gu.Addr)
	}
	return out
}

func (g *gen) randomMAC() net.HardwareAddr {
	m := make(net.HardwareAddr, 6)
	for i := range m {
		m[i] = byte(g.rng.UintN(256))
	}
	m[0] = m[0]&0xfc | 0x02 // locally administered unicast
	return m
}

func (g *gen) vlanOf(dept string) uint16 {
	for _, gu := range g.t.Guests {
		if gu.Dept == dept {
			return gu.VLAN
		}
	}
	return 0
}

// guest generates the cases sent from inside a department's guest.
func (g *gen) guest(p *Position) {
	t := g.t
	gw := t.GatewayMAC
	routed := l2{dst: gw, src: p.MAC}
	others := g.guestsOf(p.Dept, false, p.Guest)
	peers := g.guestsOf(p.Dept, true, p.Guest)
	otherGW := g.gatewaysOf(p.Dept, false)
	ownGW := g.gatewaysOf(p.Dept, true)[0]
	ownVIPs, otherVIPs := g.vipsOf(p.Dept, true), g.vipsOf(p.Dept, false)
	hosts := g.hostAddrs()
	udpR := l4{protoUDP, uint16(1024 + g.rng.IntN(60000))}
	if len(others) == 0 || len(peers) == 0 || len(t.Hosts) == 0 {
		return // needs another department and a peer in its own
	}

	// ip4: other departments' guests and gateways, own peers (controls), the client, VIPs;
	// routed through the gateway and, for guests, straight to their MAC.
	targets := slices.Concat(g.guestAddrs(others), otherGW, g.guestAddrs(peers), []netip.Addr{t.Client.Addr}, ownVIPs, otherVIPs)
	for _, d := range targets {
		for _, k := range []l4{icmpEcho, tcp80, udpR} {
			g.ip(p, "ip4", "routed", routed, p.Addr, d, k)
		}
	}
	for _, o := range slices.Concat(others, peers) {
		for _, k := range []l4{icmpEcho, tcp80, udpR} {
			f := g.ip(p, "ip4", "to its MAC", l2{dst: o.MAC, src: p.MAC}, p.Addr, o.Addr, k)
			if o.Dept == p.Dept && k == icmpEcho {
				f.Expect = []string{o.Name}
			}
		}
	}
	// ip6: link-locals of other guests (their MAC and the gateway's), peers, all-nodes,
	// documentation addresses, the hosts' uplink link-locals.
	for _, o := range slices.Concat(others, peers) {
		for _, dm := range []net.HardwareAddr{o.MAC, gw} {
			for _, k := range []l4{icmpEcho, udpR} {
				f := g.ip(p, "ip6", "link-local", l2{dst: dm, src: p.MAC}, p.LinkLocal, o.LinkLocal, k)
				if o.Dept == p.Dept && k == icmpEcho && dm.String() == o.MAC.String() {
					f.Expect = []string{o.Name}
				}
			}
		}
	}
	for _, d := range []netip.Addr{netip.MustParseAddr("ff02::1"), netip.MustParseAddr("2001:db8:20::1"), netip.MustParseAddr("2001:db8:30::2")} {
		dm := gw
		if d.IsMulticast() {
			dm = macAllNodes
		}
		for _, k := range []l4{icmpEcho, udpR} {
			g.ip(p, "ip6", "", l2{dst: dm, src: p.MAC}, p.LinkLocal, d, k)
		}
	}
	// arp: requests, replies and gratuitous announcements for other departments' addresses,
	// the management plane and the own gateway.
	foreign := slices.Concat(g.guestAddrs(others), otherGW, otherVIPs, hosts, []netip.Addr{t.TorFabric.Addr, ownGW})
	zero := net.HardwareAddr{0, 0, 0, 0, 0, 0}
	for _, f := range foreign {
		g.arpCase(p, "request", l2{dst: macBroadcast, src: p.MAC}, 1, p.MAC, p.Addr, zero, f)
		g.arpCase(p, "request to the gateway", l2{dst: gw, src: p.MAC}, 1, p.MAC, p.Addr, zero, f)
		g.arpCase(p, "reply claiming it", l2{dst: macBroadcast, src: p.MAC}, 2, p.MAC, f, macBroadcast, f)
		g.arpCase(p, "reply claiming it to the gateway", l2{dst: gw, src: p.MAC}, 2, p.MAC, f, gw, ownGW)
		g.arpCase(p, "gratuitous", l2{dst: macBroadcast, src: p.MAC}, 1, p.MAC, f, zero, f)
	}
	// spoof: source addresses not the guest's, and source MACs not its own.
	srcs := slices.Concat(g.guestAddrs(others), otherGW, otherVIPs, hosts, []netip.Addr{t.TorFabric.Addr, t.Client.Addr,
		netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("255.255.255.255"), netip.MustParseAddr("127.0.0.1"), g.guestAddrs(peers)[0]})
	dsts := []netip.Addr{others[0].Addr, peers[0].Addr, hosts[0], hosts[len(hosts)-1]}
	for _, s := range srcs {
		for _, d := range dsts {
			g.ip(p, "spoof", "source address", routed, s, d, icmpEcho)
		}
		g.ip(p, "spoof", "source address", routed, s, hosts[0], l4{protoTCP, 9480})
	}
	h0 := t.Hosts[0].MAC
	for _, sm := range []net.HardwareAddr{others[0].MAC, peers[0].MAC, gw, h0, g.randomMAC(), macBroadcast, {0x01, 0, 0x5e, 0, 0, 1}} {
		for _, d := range []netip.Addr{others[0].Addr, peers[0].Addr, hosts[0]} {
			g.ip(p, "spoof", "source MAC "+sm.String(), l2{dst: gw, src: sm}, p.Addr, d, icmpEcho)
		}
		g.ip(p, "spoof", "source MAC "+sm.String(), l2{dst: peers[0].MAC, src: sm}, p.Addr, peers[0].Addr, icmpEcho)
	}
	// vlan / qinq: tags of the other department, its own, unknown ones, and stacks.
	own, other := g.vlanOf(p.Dept), others[0].VLAN
	stacks := [][]tag{{{tpid1Q, other}}, {{tpid1Q, own}}, {{tpid1Q, 999}}, {{tpid1Q, 0}}, {{tpid1Q, 4095}}, {{tpid1AD, other}},
		{{tpid1Q, own}, {tpid1Q, other}}, {{tpid1AD, own}, {tpid1Q, other}}, {{tpid1Q, other}, {tpid1Q, own}},
		{{tpid1AD, other}, {tpid1Q, other}}, {{tpid1AD, own}, {tpid1Q, own}, {tpid1Q, other}}, {{tpid1Q, 0}, {tpid1Q, other}}}
	for _, st := range stacks {
		class := "vlan"
		if len(st) > 1 {
			class = "qinq"
		}
		d := fmt.Sprintf("tags %v", st)
		g.ip(p, class, d+" routed", l2{dst: gw, src: p.MAC, tags: st}, p.Addr, others[0].Addr, icmpEcho)
		g.ip(p, class, d+" to its MAC", l2{dst: others[0].MAC, src: p.MAC, tags: st}, p.Addr, others[0].Addr, icmpEcho)
		g.ip(p, class, d+" to a peer", l2{dst: peers[0].MAC, src: p.MAC, tags: st}, p.Addr, peers[0].Addr, icmpEcho)
		w := l2{dst: macBroadcast, src: p.MAC, tags: st}
		f := g.arpCase(p, d+" request", w, 1, p.MAC, p.Addr, zero, others[0].Addr)
		f.Class = class
	}
	g.nd(p, others, peers)
	// ipopt: IPv4 options, source routes through the gateway to another department.
	for _, d := range []netip.Addr{others[0].Addr, peers[0].Addr, hosts[0], hosts[len(hosts)-1]} {
		g.options(p, routed, p.Addr, d, ownGW, others[0].Addr)
	}
	for _, o := range others[:1] {
		g.ext6(p, l2{dst: o.MAC, src: p.MAC}, p.LinkLocal, o.LinkLocal, others[len(others)-1].LinkLocal)
		g.ext6(p, routed, p.LinkLocal, t.Hosts[0].LinkLocal, o.LinkLocal)
	}
	// frag4 / frag6.
	for _, d := range slices.Concat([]netip.Addr{others[0].Addr, peers[0].Addr, t.TorFabric.Addr}, hosts, otherVIPs) {
		g.fragments(p, routed, p.Addr, d)
	}
	for _, h := range t.Hosts {
		g.outerFragments(p, routed, p.Addr, h.Addr, p.Addr, others[0].Addr)
	}
	g.fragments6(p, l2{dst: others[0].MAC, src: p.MAC}, p.LinkLocal, others[0].LinkLocal)
	g.fragments6(p, routed, p.LinkLocal, t.Hosts[0].LinkLocal)
	// ipip / 4in6 / 6in4 / ip6ip6 with any inner destination, outer destination every host.
	innerDsts := slices.Concat(g.guestAddrs(others), ownVIPs, otherVIPs, g.guestAddrs(peers))
	for _, h := range t.Hosts {
		for _, osrc := range []netip.Addr{p.Addr, g.otherHost(h).Addr} {
			for _, isrc := range slices.Concat([]netip.Addr{p.Addr}, ownVIPs) {
				for _, idst := range innerDsts {
					for _, k := range []l4{icmpEcho, tcp80} {
						g.encap(p, routed, osrc, h.Addr, isrc, idst, k, "")
					}
				}
				for _, idst := range slices.Concat(hosts, []netip.Addr{t.TorFabric.Addr}) {
					for _, k := range []l4{{protoTCP, 9480}, {protoTCP, 179}, {protoUDP, 53}, icmpEcho} {
						g.encap(p, routed, osrc, h.Addr, isrc, idst, k, "")
					}
				}
			}
			g.encap(p, routed, osrc, h.Addr, others[0].Addr, others[0].Addr, icmpEcho, "")
		}
		for _, idst := range []netip.Addr{others[0].LinkLocal, netip.MustParseAddr("ff02::1"), netip.MustParseAddr("2001:db8:30::2"), g.otherHost(h).LinkLocal} {
			g.encap(p, routed, p.Addr, h.Addr, p.LinkLocal, idst, icmpEcho, "")
			g.encap(p, routed, p.LinkLocal, h.LinkLocal, p.LinkLocal, idst, icmpEcho, "")
		}
		for _, idst := range slices.Concat(g.guestAddrs(others), otherVIPs, []netip.Addr{g.otherHost(h).Addr}) {
			g.encap(p, routed, p.LinkLocal, h.LinkLocal, p.Addr, idst, icmpEcho, "")
		}
	}
	// The issue's own rows (finding 1): a guest's IPIP to another host's fabric address
	// reaching another department's guest; with the inner source the own VIP, a two-way channel.
	far := g.farHost(p)
	g.encap(p, routed, p.Addr, far.Addr, p.Addr, others[0].Addr, icmpEcho, "finding1-guest-ipip-to-other-department-v4")
	for _, v := range ownVIPs {
		g.encap(p, routed, p.Addr, far.Addr, v, others[0].Addr, tcp80, "finding1-guest-ipip-vip-source-two-way-v4")
	}
	g.encap(p, routed, p.LinkLocal, far.LinkLocal, p.Addr, others[0].Addr, icmpEcho, "finding1-guest-4in6-to-other-department-v6")
	g.encap(p, routed, p.LinkLocal, far.LinkLocal, p.LinkLocal, others[0].LinkLocal, icmpEcho, "finding1-guest-ip6ip6-to-other-department-v6")
	// mgmt: every host's fabric address (and the gateway's own ports), the ToR, the controller.
	for _, d := range slices.Concat(g.mgmt4(), []netip.Addr{ownGW}, otherGW) {
		for _, k := range mgmtProbes {
			f := g.ip(p, "mgmt", "", routed, p.Addr, d, k)
			if d == far.Addr && k.proto == protoTCP && (k.port == 9480 || k.port == 179) {
				f.Regression = fmt.Sprintf("finding3-guest-reaches-other-host-%d-v4", k.port)
			}
		}
	}
	for _, h := range t.Hosts {
		for _, k := range []l4{{protoTCP, 179}, {protoTCP, 9480}, icmpEcho} {
			f := g.ip(p, "mgmt", "", routed, p.LinkLocal, h.LinkLocal, k)
			if h.Name == far.Name && k.port == 179 {
				f.Regression = "finding3-guest-reaches-other-host-179-v6"
			}
		}
	}
	for range 40 {
		dm := []net.HardwareAddr{gw, macBroadcast, others[0].MAC, peers[0].MAC}[g.rng.IntN(4)]
		g.randomCase(p, l2{dst: dm, src: p.MAC})
	}
}

func (g *gen) otherHost(h Host) Host {
	for _, o := range g.t.Hosts {
		if o.Name != h.Name {
			return o
		}
	}
	return h
}

// farHost is a host other than the position's guest's.
func (g *gen) farHost(p *Position) Host {
	for _, gu := range g.t.Guests {
		if gu.Name == p.Guest {
			for _, h := range g.t.Hosts {
				if h.Name != gu.Host {
					return h
				}
			}
		}
	}
	return g.t.Hosts[len(g.t.Hosts)-1]
}

// nd generates IPv6 neighbour discovery from a guest (RFC 4861): solicitations and
// unsolicited advertisements for other departments' link-locals, a router advertisement that
// changes nothing (lifetime 0, no autonomous prefix), a router solicitation and a redirect.
func (g *gen) nd(p *Position, others, peers []Guest) {
	gw := g.t.GatewayMAC
	for _, o := range slices.Concat(others, peers[:1]) {
		sn, snMAC := solicitedNode(o.LinkLocal)
		tgt := o.LinkLocal.As16()
		ns := append([]byte{0, 0, 0, 0}, tgt[:]...)
		ns = append(ns, 1, 1)
		ns = append(ns, p.MAC...)
		g.ndCase(p, "neighbour solicitation", l2{dst: snMAC, src: p.MAC}, p.LinkLocal, sn, 135, ns)
		g.ndCase(p, "DAD solicitation", l2{dst: snMAC, src: p.MAC}, netip.IPv6Unspecified(), sn, 135, append([]byte{0, 0, 0, 0}, tgt[:]...))
		na := append([]byte{0x20, 0, 0, 0}, tgt[:]...) // override
		na = append(na, 2, 1)
		na = append(na, p.MAC...)
		g.ndCase(p, "unsolicited advertisement", l2{dst: macAllNodes, src: p.MAC}, p.LinkLocal, netip.MustParseAddr("ff02::1"), 136, na)
		g.ndCase(p, "advertisement to the gateway", l2{dst: gw, src: p.MAC}, p.LinkLocal, o.LinkLocal, 136, na)
	}
	for _, h := range g.t.Hosts {
		tgt := h.LinkLocal.As16()
		na := append([]byte{0x20, 0, 0, 0}, tgt[:]...)
		g.ndCase(p, "advertisement claiming a host's uplink address", l2{dst: macAllNodes, src: p.MAC}, p.LinkLocal, netip.MustParseAddr("ff02::1"), 136, na)
	}
	// Router advertisement: hop limit 64, no flags, lifetime 0, with a prefix of neither on-link
	// nor autonomous flag: receivers learn nothing.
	ra := []byte{64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	pfx := netip.MustParseAddr("2001:db8:bad::").As16()
	ra = append(ra, 3, 4, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	ra = append(ra, pfx[:]...)
	g.ndCase(p, "router advertisement", l2{dst: macAllNodes, src: p.MAC}, p.LinkLocal, netip.MustParseAddr("ff02::1"), 134, ra)
	g.ndCase(p, "router advertisement to the gateway", l2{dst: gw, src: p.MAC}, p.LinkLocal, netip.MustParseAddr("ff02::1"), 134, ra)
	g.ndCase(p, "router solicitation", l2{dst: macAllRtrs, src: p.MAC}, p.LinkLocal, netip.MustParseAddr("ff02::2"), 133, []byte{0, 0, 0, 0})
	o := others[0].LinkLocal.As16()
	rd := append(append([]byte{0, 0, 0, 0}, o[:]...), o[:]...)
	g.ndCase(p, "redirect", l2{dst: peers[0].MAC, src: p.MAC}, p.LinkLocal, peers[0].LinkLocal, 137, rd)
}

// options generates IPv4 header options (RFC 791): record route, timestamp, loose and strict
// source routes through via to hop, router alert (RFC 2113), an unknown option and an
// option whose length runs past the header.
func (g *gen) options(p *Position, w l2, src, dst, via, hop netip.Addr) {
	h := hop.As4()
	rows := []struct {
		name string
		opt  []byte
		dst  netip.Addr
	}{
		{"record route", append([]byte{7, 39, 4}, make([]byte, 36)...), dst},
		{"timestamp", append([]byte{68, 12, 5, 0}, make([]byte, 8)...), dst},
		{"loose source route", append([]byte{131, 7, 4}, h[:]...), via},
		{"strict source route", append([]byte{137, 7, 4}, h[:]...), via},
		{"router alert", []byte{148, 4, 0, 0}, dst},
		{"unknown option", []byte{0x9e, 4, 0xde, 0xad}, dst},
		{"option length past the header", []byte{7, 40, 4, 0}, dst},
	}
	for _, r := range rows {
		f := g.emit(p, "ipopt", fmt.Sprintf("%s %s -> %s", r.name, src, r.dst), w, func(id uint32) l3 {
			proto, b, pr := g.transport(id, src, r.dst, icmpEcho, 2)
			return l3{etype: etIPv4, pkts: [][]byte{ip4(src, r.dst, proto, b, ip4Opt{ID: uint16(id), Options: r.opt})}, dsts: []netip.Addr{r.dst, hop}, probe: pr}
		})
		if r.dst != dst {
			f.Desc += " via " + hop.String()
		}
	}
}

// ext6 generates IPv6 extension headers (RFC 8200) in front of an echo request: hop-by-hop
// with router alert, unknown destination option, routing headers type 0 (deprecated, RFC
// 5095) and type 2 naming hop, and two hop-by-hop headers (invalid).
func (g *gen) ext6(p *Position, w l2, src, dst, hop netip.Addr) {
	h := hop.As16()
	rows := []struct {
		name string
		hdrs func(next uint8) (uint8, []byte)
	}{
		{"hop-by-hop router alert", func(n uint8) (uint8, []byte) { return protoHBH6, ext6(n, []byte{5, 2, 0, 0, 1, 0}) }},
		{"unknown destination option", func(n uint8) (uint8, []byte) { return protoDst6, ext6(n, []byte{0x1e, 4, 1, 2, 3, 4}) }},
		{"routing header type 0", func(n uint8) (uint8, []byte) {
			return protoRoute6, ext6(n, append([]byte{0, 1, 0, 0, 0, 0}, h[:]...))
		}},
		{"routing header type 2", func(n uint8) (uint8, []byte) {
			return protoRoute6, ext6(n, append([]byte{2, 1, 0, 0, 0, 0}, h[:]...))
		}},
		{"two hop-by-hop headers", func(n uint8) (uint8, []byte) {
			return protoHBH6, append(ext6(protoHBH6, []byte{1, 4, 0, 0, 0, 0}), ext6(n, []byte{1, 4, 0, 0, 0, 0})...)
		}},
	}
	for _, r := range rows {
		g.emit(p, "ip6ext", fmt.Sprintf("%s %s -> %s (hop %s)", r.name, src, dst, hop), w, func(id uint32) l3 {
			proto, b, pr := g.transport(id, src, dst, icmpEcho, 2)
			next, hdrs := r.hdrs(proto)
			return l3{etype: etIPv6, pkts: [][]byte{ip6(src, dst, next, append(hdrs, b...), 0)}, dsts: []netip.Addr{dst, hop}, probe: pr}
		})
	}
}

// fragments generates IPv4 fragment cases to dst: in order, overlapping, a first fragment too
// small to hold the TCP header, a lone first or last fragment, and offsets past 64 KiB.
func (g *gen) fragments(p *Position, w l2, src, dst netip.Addr) {
	g.frag4(p, "frag4", "three fragments", w, src, dst, icmpEcho, []int{24, 56}, nil)
	g.frag4(p, "frag4", "first fragment of 8 bytes", w, src, dst, tcp80, []int{8, 40}, nil)
	g.frag4(p, "frag4", "lone first fragment", w, src, dst, icmpEcho, []int{40}, func(i int) bool { return i == 0 })
	g.frag4(p, "frag4", "lone last fragment", w, src, dst, icmpEcho, []int{40}, func(i int) bool { return i == 1 })
	g.emit(p, "frag4", fmt.Sprintf("overlapping fragments %s -> %s", src, dst), w, func(id uint32) l3 {
		proto, body, pr := g.transport(id, src, dst, icmpEcho, 6)
		a := ip4(src, dst, proto, body[:40], ip4Opt{ID: uint16(id), MF: true})
		evil := payload(g.run, id, 4)
		b := ip4(src, dst, proto, evil, ip4Opt{ID: uint16(id), FragOff: 3})
		return l3{etype: etIPv4, pkts: [][]byte{a, b}, dsts: []netip.Addr{dst}, probe: pr}
	})
	g.emit(p, "frag4", fmt.Sprintf("fragment past 64 KiB %s -> %s", src, dst), w, func(id uint32) l3 {
		proto, body, pr := g.transport(id, src, dst, icmpEcho, 6)
		a := ip4(src, dst, proto, body[:24], ip4Opt{ID: uint16(id), MF: true})
		b := ip4(src, dst, proto, body[24:], ip4Opt{ID: uint16(id), FragOff: 8189})
		return l3{etype: etIPv4, pkts: [][]byte{a, b}, dsts: []netip.Addr{dst}, probe: pr}
	})
}

// outerFragments generates IPIP whose outer packet is fragmented (issue 20: a host reassembled
// it and passed it whole to the next, which decapsulated it): in order, and first fragment
// too small to hold the inner header.
func (g *gen) outerFragments(p *Position, w l2, osrc, odst, isrc, idst netip.Addr) {
	for _, cuts := range [][]int{{24, 48}, {8}} {
		f := g.emit(p, "frag4", fmt.Sprintf("IPIP cut at %v, outer %s -> %s, inner %s -> %s", cuts, osrc, odst, isrc, idst), w, func(id uint32) l3 {
			inner, pr := g.ipPacket(id, isrc, idst, icmpEcho)
			return l3{etype: etIPv4, pkts: fragments4(osrc, odst, protoIPIP, uint16(id), inner, cuts, nil), dsts: []netip.Addr{odst, idst}, probe: pr}
		})
		if len(cuts) == 2 && p.Kind != AtFabric {
			f.Regression = "finding1-fragmented-ipip-v4"
		}
	}
}

// fragments6 generates IPv6 fragment cases (RFC 8200 4.5): two fragments, overlapping
// (RFC 5722), an atomic fragment and a first fragment without the transport header.
func (g *gen) fragments6(p *Position, w l2, src, dst netip.Addr) {
	build := func(desc string, parts func(body []byte, id uint32, proto uint8) [][]byte) {
		g.emit(p, "frag6", fmt.Sprintf("%s %s -> %s", desc, src, dst), w, func(id uint32) l3 {
			proto, body, pr := g.transport(id, src, dst, icmpEcho, 6)
			var pkts [][]byte
			for _, x := range parts(body, id, proto) {
				pkts = append(pkts, ip6(src, dst, protoFrag6, x, 0))
			}
			return l3{etype: etIPv6, pkts: pkts, dsts: []netip.Addr{dst}, probe: pr}
		})
	}
	build("two fragments", func(b []byte, id uint32, pr uint8) [][]byte {
		return [][]byte{append(frag6(pr, 0, true, id), b[:48]...), append(frag6(pr, 6, false, id), b[48:]...)}
	})
	build("overlapping fragments", func(b []byte, id uint32, pr uint8) [][]byte {
		return [][]byte{append(frag6(pr, 0, true, id), b[:48]...), append(frag6(pr, 4, false, id), b[32:]...)}
	})
	build("atomic fragment", func(b []byte, id uint32, pr uint8) [][]byte {
		return [][]byte{append(frag6(pr, 0, false, id), b...)}
	})
	build("first fragment of 8 bytes", func(b []byte, id uint32, pr uint8) [][]byte {
		return [][]byte{append(frag6(pr, 0, true, id), b[:8]...), append(frag6(pr, 1, false, id), b[8:]...)}
	})
}

// fabric generates the cases sent from a port on the ToR's L2: untagged to each host, tagged
// as each department, and with tag stacks no department owns.
func (g *gen) fabric(p *Position) {
	t := g.t
	gw := t.GatewayMAC
	all := g.guestAddrs(t.Guests)
	var gws, vips []netip.Addr
	for _, gu := range t.Guests {
		if !slices.Contains(gws, gu.Gateway) {
			gws = append(gws, gu.Gateway)
		}
	}
	for _, v := range t.VIPs {
		vips = append(vips, v.Addr)
	}
	zero := net.HardwareAddr{0, 0, 0, 0, 0, 0}
	for _, h := range t.Hosts {
		w := l2{dst: h.MAC, src: p.MAC}
		// ip4 untagged to every guest, gateway and VIP through the host (finding 2).
		for _, d := range slices.Concat(all, gws, vips) {
			for _, k := range []l4{icmpEcho, tcp80} {
				f := g.ip(p, "ip4", "untagged via "+h.Name, w, p.Addr, d, k)
				if slices.Contains(all, d) && k == icmpEcho {
					f.Regression = "finding2-fabric-reaches-segment-v4"
				}
			}
		}
		for _, gu := range t.Guests {
			g.ip(p, "ip6", "untagged via "+h.Name, w, p.LinkLocal, gu.LinkLocal, icmpEcho)
		}
		// ipip and friends to the host from the fabric: sources the fabric itself, another
		// host (what the load balancer sends) and the client; any inner destination.
		for _, osrc := range []netip.Addr{p.Addr, g.otherHost(h).Addr, t.Client.Addr} {
			for _, isrc := range []netip.Addr{t.Client.Addr, t.Guests[0].Addr} {
				for _, idst := range slices.Concat(all, vips, []netip.Addr{g.otherHost(h).Addr, t.TorFabric.Addr}) {
					g.encap(p, w, osrc, h.Addr, isrc, idst, icmpEcho, "")
				}
				for _, idst := range all {
					g.encap(p, w, osrc, h.Addr, isrc, idst, tcp80, "")
				}
			}
		}
		for _, gu := range t.Guests {
			g.encap(p, w, p.LinkLocal, h.LinkLocal, t.Client.Addr, gu.Addr, icmpEcho, "")
			g.encap(p, w, p.Addr, h.Addr, p.LinkLocal, gu.LinkLocal, icmpEcho, "")
			g.encap(p, w, p.LinkLocal, h.LinkLocal, p.LinkLocal, gu.LinkLocal, icmpEcho, "")
		}
		g.outerFragments(p, w, g.otherHost(h).Addr, h.Addr, t.Client.Addr, t.Guests[0].Addr)
		g.fragments(p, w, p.Addr, t.Guests[0].Addr)
		g.options(p, w, p.Addr, t.Guests[0].Addr, h.Addr, t.Guests[len(t.Guests)-1].Addr)
		for _, d := range slices.Concat(all, gws) {
			g.arpCase(p, "request via "+h.Name, l2{dst: macBroadcast, src: p.MAC}, 1, p.MAC, p.Addr, zero, d)
			g.arpCase(p, "reply claiming it to "+h.Name, w, 2, p.MAC, d, h.MAC, h.Addr)
		}
		// Management probes from the fabric: reported, not judged (the fabric is trusted).
		for _, k := range mgmtProbes {
			g.ip(p, "mgmt", "untagged", w, p.Addr, h.Addr, k)
		}
	}
	// Tagged as each department: the other department's guests, the management plane,
	// decapsulation, ARP and ND. Only a remote guest's own MAC and address may enter a
	// segment from the trunk, so frames from the fuzz port's MAC reach no guest; the controls
	// go to a department's guest from its peer on the other host, as that peer's frames cross
	// the fabric.
	depts := []string{}
	for _, gu := range t.Guests {
		if !slices.Contains(depts, gu.Dept) {
			depts = append(depts, gu.Dept)
		}
	}
	for _, d := range depts {
		v := g.vlanOf(d)
		tags := []tag{{tpid1Q, v}}
		routed := l2{dst: gw, src: p.MAC, tags: tags}
		for _, gu := range t.Guests {
			for _, k := range []l4{icmpEcho, tcp80} {
				g.ip(p, "vlan", fmt.Sprintf("VLAN %d routed", v), routed, p.Addr, gu.Addr, k)
				g.ip(p, "vlan", fmt.Sprintf("VLAN %d to its MAC", v), l2{dst: gu.MAC, src: p.MAC, tags: tags}, p.Addr, gu.Addr, k)
				if gu.Dept != d || k != icmpEcho {
					continue
				}
				for _, peer := range t.Guests {
					if peer.Dept == d && peer.Host != gu.Host {
						// Broadcast: the ToR's bridge may have learned the guests' MACs on the
						// fuzz port from earlier frames, and would not send it back there.
						f := g.ip(p, "vlan", fmt.Sprintf("VLAN %d as peer %s", v, peer.Name), l2{dst: macBroadcast, src: peer.MAC, tags: tags}, peer.Addr, gu.Addr, k)
						f.Expect = []string{gu.Name}
						break
					}
				}
			}
		}
		for _, m := range slices.Concat(g.mgmt4(), g.gatewaysOf(d, false)) {
			for _, k := range mgmtProbes {
				g.ip(p, "mgmt", fmt.Sprintf("VLAN %d", v), routed, g.guestsOf(d, true, "")[0].Addr, m, k)
			}
		}
		for _, h := range t.Hosts {
			for _, idst := range slices.Concat(g.guestAddrs(g.guestsOf(d, false, "")), []netip.Addr{g.otherHost(h).Addr}) {
				g.encap(p, routed, g.guestsOf(d, true, "")[0].Addr, h.Addr, g.guestsOf(d, true, "")[0].Addr, idst, icmpEcho, "")
			}
		}
		for _, o := range g.guestAddrs(g.guestsOf(d, false, "")) {
			g.arpCase(p, fmt.Sprintf("VLAN %d request", v), l2{dst: macBroadcast, src: p.MAC, tags: tags}, 1, p.MAC, g.guestsOf(d, true, "")[0].Addr, zero, o)
			g.arpCase(p, fmt.Sprintf("VLAN %d gratuitous", v), l2{dst: macBroadcast, src: p.MAC, tags: tags}, 1, p.MAC, o, zero, o)
		}
		g.arpCase(p, fmt.Sprintf("VLAN %d claiming the gateway", v), l2{dst: macBroadcast, src: p.MAC, tags: tags}, 2, p.MAC, g.gatewaysOf(d, true)[0], macBroadcast, g.gatewaysOf(d, true)[0])
	}
	// Tag stacks and VLANs no department owns: must reach no guest.
	v1, v2 := t.Guests[0].VLAN, t.Guests[len(t.Guests)-1].VLAN
	for _, st := range [][]tag{{{tpid1Q, 999}}, {{tpid1Q, 4095}}, {{tpid1AD, v1}}, {{tpid1Q, v1}, {tpid1Q, v2}}, {{tpid1AD, v1}, {tpid1Q, v2}},
		{{tpid1AD, v2}, {tpid1Q, v1}}, {{tpid1Q, v2}, {tpid1Q, v1}}, {{tpid1AD, v1}, {tpid1Q, v1}, {tpid1Q, v2}}} {
		class := "vlan"
		if len(st) > 1 {
			class = "qinq"
		}
		for _, gu := range t.Guests {
			g.ip(p, class, fmt.Sprintf("tags %v routed", st), l2{dst: gw, src: p.MAC, tags: st}, p.Addr, gu.Addr, icmpEcho)
			g.ip(p, class, fmt.Sprintf("tags %v to its MAC", st), l2{dst: gu.MAC, src: p.MAC, tags: st}, p.Addr, gu.Addr, icmpEcho)
		}
		f := g.arpCase(p, fmt.Sprintf("tags %v request", st), l2{dst: macBroadcast, src: p.MAC, tags: st}, 1, p.MAC, p.Addr, zero, t.Guests[0].Addr)
		f.Class = class
	}
	for _, st := range [][]tag{nil, {{tpid1Q, v1}}, {{tpid1Q, v2}}} {
		w := l2{dst: macAllNodes, src: p.MAC, tags: st}
		ra := []byte{64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
		g.ndCase(p, fmt.Sprintf("router advertisement, tags %v", st), w, p.LinkLocal, netip.MustParseAddr("ff02::1"), 134, ra)
		for _, gu := range t.Guests {
			tgt := gu.LinkLocal.As16()
			na := append([]byte{0x20, 0, 0, 0}, tgt[:]...)
			g.ndCase(p, fmt.Sprintf("advertisement for %s, tags %v", gu.Name, st), w, p.LinkLocal, netip.MustParseAddr("ff02::1"), 136, na)
		}
	}
	for range 40 {
		var st []tag
		if g.rng.IntN(2) == 0 {
			st = []tag{{tpid1Q, []uint16{v1, v2, 999}[g.rng.IntN(3)]}}
		}
		dm := []net.HardwareAddr{gw, macBroadcast, t.Hosts[g.rng.IntN(len(t.Hosts))].MAC, t.Guests[g.rng.IntN(len(t.Guests))].MAC}[g.rng.IntN(4)]
		g.randomCase(p, l2{dst: dm, src: p.MAC, tags: st})
	}
}

// outside generates the cases sent from the client beyond the ToR: routed by the ToR.
func (g *gen) outside(p *Position) {
	t := g.t
	w := l2{dst: p.Router, src: p.MAC}
	all := g.guestAddrs(t.Guests)
	var gws, vips []netip.Addr
	for _, gu := range t.Guests {
		if !slices.Contains(gws, gu.Gateway) {
			gws = append(gws, gu.Gateway)
		}
	}
	for _, v := range t.VIPs {
		vips = append(vips, v.Addr)
	}
	for _, d := range slices.Concat(all, gws, vips) {
		for _, k := range []l4{icmpEcho, tcp80} {
			f := g.ip(p, "ip4", "routed", w, p.Addr, d, k)
			if k == tcp80 && slices.Contains(vips, d) {
				for _, v := range t.VIPs {
					if v.Addr == d {
						f.Expect = v.Backends
					}
				}
			}
		}
	}
	// Finding 1 from outside: IPIP to each host's fabric address with any inner destination.
	for _, h := range t.Hosts {
		for _, osrc := range []netip.Addr{p.Addr, g.otherHost(h).Addr} {
			for _, isrc := range []netip.Addr{p.Addr, t.Guests[0].Addr} {
				for _, idst := range slices.Concat(all, vips, []netip.Addr{g.otherHost(h).Addr}) {
					for _, k := range []l4{icmpEcho, tcp80} {
						reg := ""
						if osrc == p.Addr && isrc == p.Addr && k == icmpEcho && slices.Contains(all, idst) {
							reg = "finding1-outside-ipip-reaches-guest-v4"
						}
						g.encap(p, w, osrc, h.Addr, isrc, idst, k, reg)
					}
				}
			}
			for _, gu := range t.Guests {
				g.encap(p, w, osrc, h.Addr, p.LinkLocal, gu.LinkLocal, icmpEcho, "")
			}
		}
		g.encap(p, w, p.LinkLocal, h.LinkLocal, p.Addr, all[0], icmpEcho, "")
		g.outerFragments(p, w, p.Addr, h.Addr, p.Addr, all[len(all)-1])
		g.options(p, w, p.Addr, all[0], h.Addr, all[len(all)-1])
		for _, k := range mgmtProbes {
			g.ip(p, "mgmt", "from outside", w, p.Addr, h.Addr, k)
		}
	}
	for _, v := range vips {
		g.fragments(p, w, p.Addr, v)
		for _, s := range all {
			g.ip(p, "spoof", "guest source", w, s, v, icmpEcho)
		}
	}
	for range 20 {
		g.randomCase(p, w)
	}
}
