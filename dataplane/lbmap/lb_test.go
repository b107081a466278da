package lbmap

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"

	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/lb"
)

// XDP verdicts.
const (
	xdpDrop     = 1
	xdpPass     = 2
	xdpTX       = 3
	xdpRedirect = 4
)

var verdictName = map[uint32]string{0: "ABORTED", 1: "DROP", 2: "PASS", 3: "TX", 4: "REDIRECT"}

// The test fabric: one uplink (up0) with static neighbours for every host the LB sends to.
var (
	upMAC     = mac("02:00:00:00:00:01")
	clientMAC = mac("02:00:00:00:00:64")
	hostA4    = "198.18.0.10"
	hostB4    = "198.18.0.11"
	natBE4    = "198.18.0.20"
	client4   = "198.18.0.100"
	hostA6    = "2001:db8::10"
	hostB6    = "2001:db8::11"
	natBE6    = "2001:db8::20"
	client6   = "2001:db8::100"
	self4     = "198.18.0.1"
	self6     = "2001:db8::1"
	neighbors = map[string]net.HardwareAddr{
		hostA4: mac("02:00:00:00:00:0a"), hostB4: mac("02:00:00:00:00:0b"), natBE4: mac("02:00:00:00:00:14"), client4: clientMAC,
		hostA6: mac("02:00:00:00:00:0a"), hostB6: mac("02:00:00:00:00:0b"), natBE6: mac("02:00:00:00:00:14"), client6: clientMAC,
	}
)

type xdpMd struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// rig is a namespace with an uplink and a loaded dataplane; packets run through xdp_lb with
// BPF_PROG_TEST_RUN inside the namespace, so FIB lookups see its routes and neighbours.
type rig struct {
	ns      *netnstest.NS
	dp      *Dataplane
	ifindex int
}

func newRig(t testing.TB, opts Options) *rig {
	t.Helper()
	netnstest.RequirePrivileged(t)
	ns := netnstest.New(t, "gct-lb")
	nl := ns.Netlink()
	if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0", HardwareAddr: upMAC}, PeerName: "up1"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"up0", "up1"} {
		l, err := nl.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := nl.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []string{self4 + "/24", self6 + "/64", "2001:db8:1::1/64"} {
		if err := ns.AddrAdd("up0", a); err != nil {
			t.Fatal(err)
		}
	}
	ns.MustRun(t, "sysctl", "-qw", "net.ipv4.conf.all.forwarding=1", "net.ipv6.conf.all.forwarding=1")
	up, _ := nl.LinkByName("up0")
	for addr, hw := range neighbors {
		if err := nl.NeighAdd(&netlink.Neigh{LinkIndex: up.Attrs().Index, State: netlink.NUD_PERMANENT, IP: ip(addr), HardwareAddr: hw, Family: familyOf(addr)}); err != nil {
			t.Fatalf("neighbour %s: %v", addr, err)
		}
	}
	if opts.ConnTableSize == 0 {
		opts.ConnTableSize = 1 << 14
	}
	dp, err := Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	if err := dp.SetConfig(rigConfig(EncapIPIP)); err != nil {
		t.Fatal(err)
	}
	if err := dp.SetVLANDomains(map[uint16]uint32{120: 7, 130: 8}); err != nil {
		t.Fatal(err)
	}
	return &rig{ns: ns, dp: dp, ifindex: up.Attrs().Index}
}

// rigConfig is the rig's host configuration with encapsulation enc.
func rigConfig(enc Encapsulation) Config {
	return Config{
		EncapSource4: netip.MustParseAddr(self4), EncapSource6: netip.MustParseAddr(self6),
		SNATSource4: netip.MustParseAddr(self4), SNATSource6: netip.MustParseAddr(self6),
		Encap: enc,
	}
}

func familyOf(a string) int {
	if netip.MustParseAddr(a).Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// run sends one frame through prog inside the namespace and returns verdict and output.
func (r *rig) run(t testing.TB, prog *ebpf.Program, in []byte) (uint32, []byte) {
	t.Helper()
	var verdict uint32
	out := make([]byte, len(in)+256)
	setIPID(t, r.dp, testIPID-1)
	err := r.ns.Do(func() error {
		opts := ebpf.RunOptions{Data: in, DataOut: out, Context: xdpMd{DataEnd: uint32(len(in)), IngressIfindex: uint32(r.ifindex)}}
		var err error
		verdict, err = prog.Run(&opts)
		out = opts.DataOut
		return err
	})
	if err != nil {
		t.Fatalf("prog.Run: %v", err)
	}
	return verdict, out
}

// setIPID sets every CPU's IPv4 ID counter (bpf/lb/icmp_gen.h), so the next ID is v+1.
func setIPID(t testing.TB, dp *Dataplane, v uint32) {
	t.Helper()
	vals := make([]uint32, ebpf.MustPossibleCPU())
	for i := range vals {
		vals[i] = v
	}
	if err := dp.Objects().IpIds.Put(uint32(0), vals); err != nil {
		t.Fatalf("setting IP ID counters: %v", err)
	}
}

func svc(name string, domain uint32, vip string, port uint16, proto lb.Protocol, mode lb.Mode, bes ...lb.Backend) lb.Service {
	return lb.Service{Name: name, Mode: mode, VIP: lb.VIP{Domain: domain, Addr: netip.MustParseAddr(vip), Port: port, Proto: proto}, Backends: bes}
}

func be(addr string, port uint16, weight uint32) lb.Backend {
	return lb.Backend{Addr: netip.MustParseAddr(addr), Port: port, Weight: weight}
}

// The services every packet test runs against: both families, both modes, tenant-keyed VIPs.
func testServices() []lb.Service {
	return []lb.Service{
		svc("web4", 0, "203.0.113.10", 80, lb.TCP, lb.DSR, be(hostA4, 0, 1)),
		svc("dns4", 0, "203.0.113.11", 53, lb.UDP, lb.DSR, be(hostB4, 0, 1)),
		svc("web6", 0, "2001:db8:f::10", 80, lb.TCP, lb.DSR, be(hostA6, 0, 1)),
		svc("dns6", 0, "2001:db8:f::11", 53, lb.UDP, lb.DSR, be(hostB6, 0, 1)),
		svc("web4in6", 0, "203.0.113.15", 80, lb.TCP, lb.DSR, be(hostA6, 0, 1)),
		svc("nat4", 0, "203.0.113.12", 80, lb.TCP, lb.NAT, be(natBE4, 8080, 1)),
		svc("nat6", 0, "2001:db8:f::12", 53, lb.UDP, lb.NAT, be(natBE6, 5353, 1)),
		svc("two", 0, "203.0.113.13", 80, lb.TCP, lb.DSR, be(hostA4, 0, 1), be(hostB4, 0, 1)),
		svc("two6", 0, "2001:db8:f::13", 80, lb.TCP, lb.DSR, be(hostA6, 0, 1), be(hostB6, 0, 1)),
		svc("drained", 0, "203.0.113.14", 80, lb.TCP, lb.DSR, be(hostA4, 0, 0)),
		// The same VIP:port in two departments: disjoint backends.
		svc("lands-app", 7, "198.19.0.10", 80, lb.TCP, lb.DSR, be(hostA4, 0, 1)),
		svc("health-app", 8, "198.19.0.10", 80, lb.TCP, lb.DSR, be(hostB4, 0, 1)),
	}
}

func mustSet(t testing.TB, dp *Dataplane, services []lb.Service) {
	t.Helper()
	if err := dp.Set(services); err != nil {
		t.Fatal(err)
	}
}

func dsrTo(t testing.TB, host string, vlan uint16, inner []byte) []byte {
	outerSrc := self4
	if netip.MustParseAddr(host).Is6() {
		outerSrc = self6
	}
	return encapsulated(t, upMAC, neighbors[host], vlan, outerSrc, host, entropyOf(inner), inner)
}

// entropyOf is the program's entropy hash (EntropyHash) of a client packet's flow, or of the
// flow an ICMP error quotes, swapped back to client -> VIP.
func entropyOf(inner []byte) uint32 {
	lt := layers.LayerTypeIPv4
	if inner[0]>>4 == 6 {
		lt = layers.LayerTypeIPv6
	}
	src, dst, sport, dport, proto := flowOf(gopacket.NewPacket(inner, lt, gopacket.Default))
	return EntropyHash(src, dst, sport, dport, proto)
}

// flowOf is the flow of a client packet, or of the ICMP error's quote swapped back.
func flowOf(p gopacket.Packet) (src, dst netip.Addr, sport, dport uint16, proto lb.Protocol) {
	var quote []byte
	if ic, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok {
		quote = ic.Payload
	}
	if ic, ok := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6); ok {
		quote = ic.Payload[4:] // behind the MTU / unused word
	}
	if quote != nil {
		// The quote (often cut short of a whole TCP header), read by hand: IP header, ports.
		var qs, qd netip.Addr
		var l4 []byte
		if quote[0]>>4 == 4 {
			qs, qd = netip.AddrFrom4([4]byte(quote[12:16])), netip.AddrFrom4([4]byte(quote[16:20]))
			proto, l4 = lb.Protocol(quote[9]), quote[int(quote[0]&0xf)*4:]
		} else {
			qs, qd = netip.AddrFrom16([16]byte(quote[8:24])), netip.AddrFrom16([16]byte(quote[24:40]))
			proto, l4 = lb.Protocol(quote[6]), quote[40:]
		}
		return qd, qs, binary.BigEndian.Uint16(l4[2:]), binary.BigEndian.Uint16(l4[0:]), proto
	}
	if l, ok := p.NetworkLayer().(*layers.IPv4); ok {
		src, dst = netip.AddrFrom4([4]byte(l.SrcIP.To4())), netip.AddrFrom4([4]byte(l.DstIP.To4()))
	} else if l, ok := p.NetworkLayer().(*layers.IPv6); ok {
		src, dst = netip.AddrFrom16([16]byte(l.SrcIP)), netip.AddrFrom16([16]byte(l.DstIP))
	}
	switch l := p.TransportLayer().(type) {
	case *layers.TCP:
		return src, dst, uint16(l.SrcPort), uint16(l.DstPort), lb.TCP
	case *layers.UDP:
		return src, dst, uint16(l.SrcPort), uint16(l.DstPort), lb.UDP
	}
	return src, dst, 0, 0, 0
}

func TestXDPPackets(t *testing.T) {
	r := newRig(t, Options{})
	mustSet(t, r.dp, testServices())

	ext := mac("02:00:00:00:00:fe") // the ToR's MAC, source of client frames
	web4 := ipPacket(t, flow{src: client4, dst: "203.0.113.10", sport: 40000, dport: 80, payload: "GET /"})
	dns4 := ipPacket(t, flow{src: client4, dst: "203.0.113.11", sport: 40001, dport: 53, udp: true, payload: "query"})
	web6 := ipPacket(t, flow{src: client6, dst: "2001:db8:f::10", sport: 40002, dport: 80, payload: "GET /"})
	dns6 := ipPacket(t, flow{src: client6, dst: "2001:db8:f::11", sport: 40003, dport: 53, udp: true, payload: "query"})
	web4in6 := ipPacket(t, flow{src: client4, dst: "203.0.113.15", sport: 40004, dport: 80, payload: "x"})
	lands := ipPacket(t, flow{src: "198.19.1.5", dst: "198.19.0.10", sport: 40005, dport: 80, payload: "lands"})
	health := ipPacket(t, flow{src: "198.19.1.5", dst: "198.19.0.10", sport: 40005, dport: 80, payload: "lands"})
	notVIP := ipPacket(t, flow{src: client4, dst: "203.0.113.99", sport: 40006, dport: 80, payload: "x"})
	otherPort := ipPacket(t, flow{src: client4, dst: "203.0.113.10", sport: 40007, dport: 443, payload: "x"})
	wrongProto := ipPacket(t, flow{src: client4, dst: "203.0.113.10", sport: 40008, dport: 80, udp: true, payload: "x"})

	// Fragments: first fragment (MF) and a later one, to a VIP and to another address.
	frag := func(dst string, off uint16, mf bool) []byte {
		v := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: ip(client4), DstIP: ip(dst), FragOffset: off}
		if mf {
			v.Flags = layers.IPv4MoreFragments
		}
		return serialize(t, v, gopacket.Payload(bytes.Repeat([]byte{0xab}, 24)))
	}
	withOpts := func(dst string, opts []byte) []byte {
		v := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: ip(client4), DstIP: ip(dst),
			Options: []layers.IPv4Option{{OptionType: opts[0], OptionLength: opts[1], OptionData: opts[2:]}}}
		tcp := &layers.TCP{SrcPort: 40000, DstPort: 80, SYN: true, Window: 1024}
		_ = tcp.SetNetworkLayerForChecksum(v)
		return serialize(t, v, tcp)
	}
	frag6 := func(dst string) []byte {
		v := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolIPv6Fragment, SrcIP: ip(client6), DstIP: ip(dst)}
		fh := []byte{byte(layers.IPProtocolTCP), 0, 0, 1, 0, 0, 0, 42} // offset 0, M=1
		return serialize(t, v, gopacket.Payload(append(fh, bytes.Repeat([]byte{0xcd}, 24)...)))
	}
	truncTCP := web4[:20+10]          // IPv4 header + 10 of 20 TCP bytes
	fixLen := func(p []byte) []byte { // make tot_len match the truncation so only L4 is short
		q := append([]byte(nil), p...)
		q[2], q[3] = byte(len(q)>>8), byte(len(q))
		q[10], q[11] = 0, 0
		s := uint32(0)
		for i := 0; i < 20; i += 2 {
			s += uint32(q[i])<<8 | uint32(q[i+1])
		}
		for s > 0xffff {
			s = s&0xffff + s>>16
		}
		q[10], q[11] = byte(^s>>8), byte(^s)
		return q
	}
	badIHL := append([]byte(nil), web4...)
	badIHL[0] = 0x44 // IHL 4 < 5
	longTotLen := append([]byte(nil), web4...)
	longTotLen[2], longTotLen[3] = 0x05, 0xdc // claims 1500 bytes

	synDrained := ipPacket(t, flow{src: client4, dst: "203.0.113.14", sport: 40009, dport: 80, syn: true})

	arp := serialize(t, &layers.Ethernet{SrcMAC: ext, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: ext, SourceProtAddress: ip(client4).To4(), DstHwAddress: make([]byte, 6), DstProtAddress: ip("203.0.113.10").To4()})
	doubleTag := serialize(t, &layers.Ethernet{SrcMAC: ext, DstMAC: upMAC, EthernetType: layers.EthernetTypeDot1Q},
		&layers.Dot1Q{VLANIdentifier: 120, Type: layers.EthernetTypeDot1Q}, &layers.Dot1Q{VLANIdentifier: 130, Type: layers.EthernetTypeIPv4}, gopacket.Payload(lands))

	// retag rewrites a tagged frame's outer tag: TPID and whole TCI (priority, DEI, VID).
	retag := func(f []byte, tpid, tci uint16) []byte {
		g := append([]byte(nil), f...)
		g[12], g[13], g[14], g[15] = byte(tpid>>8), byte(tpid), byte(tci>>8), byte(tci)
		return g
	}
	tagged := func(l3 []byte, tpid, tci uint16) []byte { return retag(frame(t, ext, upMAC, 120, l3), tpid, tci) }
	qinqPrio := serialize(t, &layers.Ethernet{SrcMAC: ext, DstMAC: upMAC, EthernetType: layers.EthernetTypeDot1Q},
		&layers.Dot1Q{VLANIdentifier: 0, Priority: 5, Type: layers.EthernetTypeDot1Q}, &layers.Dot1Q{VLANIdentifier: 120, Type: layers.EthernetTypeIPv4}, gopacket.Payload(lands))

	tests := []struct {
		name    string
		in      []byte
		verdict uint32
		out     []byte // nil: output must equal input
		drop    string // drop counter that must move by one
	}{
		// Tag classification (the trunk program agrees): 802.1Q and 802.1ad alike, VID 0 with
		// any PCP/DEI is untagged, a tag behind a tag is never a department's.
		{name: "priority tag (802.1Q VID 0) is untagged: public VIP, tag kept", in: tagged(web4, 0x8100, 0), verdict: xdpTX, out: retag(dsrTo(t, hostA4, 120, web4), 0x8100, 0)},
		{name: "priority tag PCP 5 on v6 is untagged", in: tagged(web6, 0x8100, 5<<13), verdict: xdpTX, out: retag(dsrTo(t, hostA6, 120, web6), 0x8100, 5<<13)},
		{name: "802.1ad VID 0 is untagged", in: tagged(web4, 0x88a8, 0), verdict: xdpTX, out: retag(dsrTo(t, hostA4, 120, web4), 0x88a8, 0)},
		{name: "priority-tagged frame to a department-only VIP passes (public domain)", in: tagged(lands, 0x8100, 3<<13)},
		{name: "802.1ad VLAN 120 -> lands backend like 802.1Q", in: tagged(lands, 0x88a8, 120), verdict: xdpTX, out: retag(dsrTo(t, hostA4, 120, lands), 0x88a8, 120)},
		{name: "VLAN 120 with PCP 6 and DEI -> lands backend", in: tagged(lands, 0x8100, 6<<13|1<<12|120), verdict: xdpTX, out: retag(dsrTo(t, hostA4, 120, lands), 0x8100, 6<<13|1<<12|120)},
		{name: "VLAN 130 in 802.1ad -> health backend", in: tagged(health, 0x88a8, 130), verdict: xdpTX, out: retag(dsrTo(t, hostB4, 120, health), 0x88a8, 130)},
		{name: "VID 4095 (reserved) passes untouched", in: tagged(web4, 0x8100, 4095)},
		{name: "priority tag over VLAN 120 (QinQ) passes untouched", in: qinqPrio},
		{name: "VLAN 120 to a non-VIP passes untouched", in: tagged(notVIP, 0x8100, 120)},
		{name: "VLAN 120 to a public-only VIP passes untouched", in: tagged(web6, 0x8100, 120)},

		{name: "v4 tcp untagged dsr -> IPIP to host A", in: frame(t, ext, upMAC, 0, web4), verdict: xdpTX, out: dsrTo(t, hostA4, 0, web4)},
		{name: "v4 udp untagged dsr -> IPIP to host B", in: frame(t, ext, upMAC, 0, dns4), verdict: xdpTX, out: dsrTo(t, hostB4, 0, dns4)},
		{name: "v6 tcp dsr -> IP6IP6 to host A", in: frame(t, ext, upMAC, 0, web6), verdict: xdpTX, out: dsrTo(t, hostA6, 0, web6)},
		{name: "v6 udp dsr -> IP6IP6 to host B", in: frame(t, ext, upMAC, 0, dns6), verdict: xdpTX, out: dsrTo(t, hostB6, 0, dns6)},
		{name: "v4 VIP, v6 backend host -> 4in6", in: frame(t, ext, upMAC, 0, web4in6), verdict: xdpTX, out: dsrTo(t, hostA6, 0, web4in6)},
		{name: "tagged vlan 120 (lands) -> lands backend, tag kept", in: frame(t, ext, upMAC, 120, lands), verdict: xdpTX, out: dsrTo(t, hostA4, 120, lands)},
		{name: "same VIP tagged vlan 130 (health) -> health backend", in: frame(t, ext, upMAC, 130, health), verdict: xdpTX, out: dsrTo(t, hostB4, 130, health)},
		{name: "department VIP untagged (public domain) passes", in: frame(t, ext, upMAC, 0, lands)},
		{name: "unknown vlan passes untouched", in: frame(t, ext, upMAC, 999, web4)},
		{name: "double tag passes untouched (trunk drops it)", in: doubleTag},
		{name: "non-VIP v4 passes untouched", in: frame(t, ext, upMAC, 0, notVIP)},
		{name: "VIP address, other port passes", in: frame(t, ext, upMAC, 0, otherPort)},
		{name: "VIP address:port, other protocol passes", in: frame(t, ext, upMAC, 0, wrongProto)},
		{name: "ARP passes untouched", in: arp},
		{name: "v4 first fragment to VIP dropped", in: frame(t, ext, upMAC, 0, frag("203.0.113.10", 0, true)), verdict: xdpDrop, drop: "fragment"},
		{name: "v4 later fragment to VIP dropped", in: frame(t, ext, upMAC, 0, frag("203.0.113.10", 3, false)), verdict: xdpDrop, drop: "fragment"},
		{name: "v4 fragment to non-VIP passes", in: frame(t, ext, upMAC, 0, frag("203.0.113.99", 0, true))},
		// IPv4 options to a VIP are not balanced (Katran's rule); elsewhere they pass.
		{name: "v4 record-route option to VIP dropped", in: frame(t, ext, upMAC, 0, withOpts("203.0.113.10", []byte{7, 7, 4, 0, 0, 0, 0})), verdict: xdpDrop, drop: "unsupported"},
		{name: "v4 timestamp option to VIP dropped", in: frame(t, ext, upMAC, 0, withOpts("203.0.113.10", []byte{68, 8, 5, 0, 0, 0, 0, 0})), verdict: xdpDrop, drop: "unsupported"},
		{name: "v4 option to non-VIP passes", in: frame(t, ext, upMAC, 0, withOpts("203.0.113.99", []byte{7, 7, 4, 0, 0, 0, 0}))},
		{name: "v6 fragment to VIP dropped", in: frame(t, ext, upMAC, 0, frag6("2001:db8:f::10")), verdict: xdpDrop, drop: "fragment"},
		{name: "v6 fragment to non-VIP passes", in: frame(t, ext, upMAC, 0, frag6("2001:db8:f::99"))},
		{name: "truncated TCP header to VIP dropped", in: frame(t, ext, upMAC, 0, fixLen(truncTCP)), verdict: xdpDrop, drop: "malformed"},
		{name: "IPv4 IHL < 5 to VIP dropped", in: frame(t, ext, upMAC, 0, badIHL), verdict: xdpDrop, drop: "malformed"},
		{name: "IPv4 total length beyond frame to VIP dropped", in: frame(t, ext, upMAC, 0, longTotLen), verdict: xdpDrop, drop: "malformed"},
		{name: "truncated IPv4 header passes (no address to judge)", in: frame(t, ext, upMAC, 0, web4[:12])},
		{name: "ethernet header only passes", in: frame(t, ext, upMAC, 0, nil)[:14]},
		{name: "drained-only VIP: new flow dropped", in: frame(t, ext, upMAC, 0, synDrained), verdict: xdpDrop, drop: "no_backend"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := r.dp.Drops()
			v, out := r.run(t, r.dp.Program(), tc.in)
			want := tc.verdict
			if want == 0 {
				want = xdpPass
			}
			if v != want {
				t.Fatalf("verdict %s, want %s", verdictName[v], verdictName[want])
			}
			wantOut := tc.out
			if wantOut == nil && want != xdpDrop {
				wantOut = tc.in
			}
			if wantOut != nil && !bytes.Equal(out, wantOut) {
				t.Fatalf("output differs\n got  %s\n want %s", hex.EncodeToString(out), hex.EncodeToString(wantOut))
			}
			after, _ := r.dp.Drops()
			for reason := range after {
				d := after[reason].Packets - before[reason].Packets
				if reason == tc.drop && d != 1 {
					t.Errorf("drop counter %s moved by %d, want 1", reason, d)
				}
				if reason != tc.drop && d != 0 {
					t.Errorf("drop counter %s moved by %d, want 0", reason, d)
				}
			}
		})
	}
}
