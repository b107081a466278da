package isofuzz

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

var a = netip.MustParseAddr

// labTopology is the lab of deploy/examples/lab: two departments with a guest on each host.
func labTopology() *Topology {
	g := func(name, dept, host, m, addr string, vlan uint16, gw string) Guest {
		return Guest{Name: name, Dept: dept, Host: host, NS: "gc-vm-" + name, MAC: mac(m), Addr: a(addr), LinkLocal: linkLocal(mac(m)), VLAN: vlan, Gateway: a(gw)}
	}
	return &Topology{
		Guests: []Guest{
			g("health-web-1", "health", "gc-host1", "02:57:8f:3b:5a:ad", "198.18.30.2", 130, "198.18.30.1"),
			g("health-web-2", "health", "gc-host2", "02:37:a6:ee:b9:d1", "198.18.30.3", 130, "198.18.30.1"),
			g("lands-web-1", "lands", "gc-host1", "02:6f:37:09:46:88", "198.18.20.2", 120, "198.18.20.1"),
			g("lands-web-2", "lands", "gc-host2", "02:c6:c7:c3:fa:c5", "198.18.20.3", 120, "198.18.20.1"),
		},
		Hosts: []Host{
			{Name: "gc-host1", MAC: mac("f2:ba:b5:ea:7a:4f"), Addr: a("198.18.0.11"), LinkLocal: a("fe80::f0ba:b5ff:feea:7a4f"), Uplink: "eth0"},
			{Name: "gc-host2", MAC: mac("96:2c:1a:c6:cc:ea"), Addr: a("198.18.0.12"), LinkLocal: a("fe80::942c:1aff:fec6:ccea"), Uplink: "eth0"},
		},
		VIPs: []VIP{
			{Service: "health-www", Dept: "health", Addr: a("198.19.255.1"), Port: 80, Backends: []string{"health-web-1", "health-web-2"}},
			{Service: "lands-www", Dept: "lands", Addr: a("198.19.255.2"), Port: 80, Backends: []string{"lands-web-1", "lands-web-2"}},
		},
		GatewayMAC: mac("02:67:63:00:00:01"),
		TorFabric:  Endpoint{NS: "gc-tor", Ifname: "fabric", MAC: mac("2a:44:fa:ac:e3:25"), Addr: a("198.18.0.1"), LinkLocal: a("fe80::d814:3dff:fe2b:a8a6")},
		TorClient:  Endpoint{NS: "gc-tor", Ifname: "gc-tor-cl", MAC: mac("0a:95:9b:bd:e2:d6"), Addr: a("198.51.100.1"), LinkLocal: a("fe80::895:9bff:febd:e2d6")},
		Client:     Endpoint{NS: "gc-client", Ifname: "eth0", MAC: mac("aa:f7:a3:05:5d:ee"), Addr: a("198.51.100.10"), LinkLocal: a("fe80::a8f7:a3ff:fe05:5dee")},
		Controller: netip.MustParseAddrPort("127.0.0.1:8480"),
	}
}

func labPositions(t *Topology) []Position {
	lw2 := t.Guests[3]
	return []Position{
		{Name: "guest:lands-web-2", Kind: AtGuest, NS: lw2.NS, Ifname: "eth0", MAC: lw2.MAC, Addr: lw2.Addr, LinkLocal: lw2.LinkLocal, Guest: lw2.Name, Dept: lw2.Dept},
		{Name: "tor-l2", Kind: AtFabric, NS: "gc-tor", Ifname: "gcfz1", MAC: mac("02:67:63:7a:00:01"), Addr: a("198.18.0.250"), LinkLocal: linkLocal(mac("02:67:63:7a:00:01"))},
		{Name: "client", Kind: AtOutside, NS: "gc-client", Ifname: "eth0", MAC: t.Client.MAC, Addr: t.Client.Addr, LinkLocal: t.Client.LinkLocal, Router: t.TorClient.MAC},
	}
}

const seed = 20

func TestGenerateDeterministicAndComplete(t *testing.T) {
	topo := labTopology()
	digest := func() ([32]byte, []Frame) {
		fs := Generate(topo, labPositions(topo), seed)
		h := sha256.New()
		for _, f := range fs {
			for _, w := range f.Wire {
				h.Write(w)
			}
		}
		return [32]byte(h.Sum(nil)), fs
	}
	d1, frames := digest()
	if d2, _ := digest(); d1 != d2 {
		t.Fatal("the same seed made different frames")
	}
	wire := 0
	classes := map[string]bool{}
	regressions := map[string]bool{}
	for _, f := range frames {
		wire += len(f.Wire)
		classes[f.Class] = true
		if f.Regression != "" {
			regressions[f.Regression] = true
		}
		if len(f.Wire) == 0 {
			t.Fatalf("case #%d %s %s has no frame", f.ID, f.Class, f.Desc)
		}
		marked := false
		for _, w := range f.Wire {
			if len(w) < 14 || len(w) > 1514 {
				t.Fatalf("case #%d %s: frame of %d bytes", f.ID, f.Desc, len(w))
			}
			ids := findMarkers(w, seed)
			if len(ids) > 1 || len(ids) == 1 && ids[0] != f.ID {
				t.Fatalf("case #%d carries markers %v", f.ID, ids)
			}
			marked = marked || len(ids) == 1
		}
		if !marked {
			t.Fatalf("case #%d %s %s: no frame carries its marker", f.ID, f.Class, f.Desc)
		}
	}
	if wire < 1000 || wire > 5000 {
		t.Errorf("%d wire frames, want 1,000-5,000 (three positions)", wire)
	}
	for _, c := range []string{"ip4", "ip6", "arp", "spoof", "vlan", "qinq", "nd", "ipopt", "ip6ext", "frag4", "frag6", "ipip", "4in6", "6in4", "ip6ip6", "mgmt", "random"} {
		if !classes[c] {
			t.Errorf("no case of class %s", c)
		}
	}
	for _, r := range []string{"finding1-guest-ipip-to-other-department-v4", "finding1-guest-4in6-to-other-department-v6", "finding1-guest-ip6ip6-to-other-department-v6",
		"finding1-outside-ipip-reaches-guest-v4", "finding1-fragmented-ipip-v4", "finding2-fabric-reaches-segment-v4",
		"finding3-guest-reaches-other-host-9480-v4", "finding3-guest-reaches-other-host-179-v4", "finding3-guest-reaches-other-host-179-v6"} {
		if !regressions[r] {
			t.Errorf("no regression row %s", r)
		}
	}
}

// TestFramesDecode checks checksums of what gopacket can verify: IPv4 headers and the
// transport checksums of unfragmented, unencapsulated IPv4 probes.
func TestFramesDecode(t *testing.T) {
	topo := labTopology()
	n := 0
	for _, f := range Generate(topo, labPositions(topo), seed) {
		if f.Class != "ip4" && f.Class != "mgmt" && f.Class != "ipip" || f.Probe.Dport == 53 {
			continue // (gopacket decodes port 53 as DNS)
		}
		p := gopacket.NewPacket(f.Wire[0], layers.LayerTypeEthernet, gopacket.Default)
		if el := p.ErrorLayer(); el != nil {
			t.Fatalf("case #%d %s: %v", f.ID, f.Desc, el.Error())
		}
		ip, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if !ok {
			continue
		}
		if checksum(ip.Contents, 0) != 0 {
			t.Fatalf("case #%d %s: bad IPv4 header checksum", f.ID, f.Desc)
		}
		if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok && f.Class != "ipip" {
			seg := append(append([]byte{}, tcp.Contents...), tcp.Payload...)
			if checksum(seg, pseudo(f.Probe.Src, f.Probe.Dst, protoTCP, len(seg))) != 0 {
				t.Fatalf("case #%d %s: bad TCP checksum", f.ID, f.Desc)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatal("no TCP probe checked")
	}
}

// answerTCP builds the frame a host sends answering probe p with flags and ack.
func answerTCP(p *Probe, syn, rst bool, ack uint32) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], p.Dport)
	binary.BigEndian.PutUint16(b[2:], p.Sport)
	binary.BigEndian.PutUint32(b[8:], ack)
	b[12] = 5 << 4
	b[13] = 0x10 // ACK
	if syn {
		b[13] |= 0x02
	}
	if rst {
		b[13] |= 0x04
	}
	binary.BigEndian.PutUint16(b[16:], checksum(b, pseudo(p.Dst, p.Src, protoTCP, len(b))))
	return eth(macBroadcast, macBroadcast, nil, etIPv4, ip4(p.Dst, p.Src, protoTCP, b, ip4Opt{}))
}

func TestJudge(t *testing.T) {
	topo := labTopology()
	frames := Generate(topo, labPositions(topo), seed)
	find := func(pos, class, desc string) *Frame {
		t.Helper()
		for i := range frames {
			if f := &frames[i]; f.Position == pos && f.Class == class && strings.Contains(f.Desc, desc) {
				return f
			}
		}
		t.Fatalf("no %s case %q from %s", class, desc, pos)
		return nil
	}
	toHealth := find("guest:lands-web-2", "ip4", "routed 198.18.20.3 -> 198.18.30.2 icmp")
	toPeer := find("guest:lands-web-2", "ip4", "to its MAC 198.18.20.3 -> 198.18.20.2 icmp")
	toVIP := find("client", "ip4", "routed 198.51.100.10 -> 198.19.255.1 tcp/80")
	fabricUntagged := find("tor-l2", "ip4", "untagged via gc-host1 198.18.0.250 -> 198.18.20.2 icmp")
	fabricLands := find("tor-l2", "vlan", "VLAN 120 to its MAC 198.18.0.250 -> 198.18.20.2 icmp")
	metrics := find("guest:lands-web-2", "mgmt", "198.18.20.3 -> 198.18.0.11 tcp/9480")
	dns := find("guest:lands-web-2", "mgmt", "198.18.20.3 -> 198.18.0.12 udp/53")
	gwBGP := find("guest:lands-web-2", "mgmt", "198.18.20.3 -> 198.18.20.1 tcp/179")
	gwPing := find("guest:lands-web-2", "mgmt", "198.18.20.3 -> 198.18.20.1 icmp")
	torBGP := find("guest:lands-web-2", "mgmt", "198.18.20.3 -> 198.18.0.1 tcp/179")
	fabricMetrics := find("tor-l2", "mgmt", "untagged 198.18.0.250 -> 198.18.0.11 tcp/9480")

	guest := func(name string, f *Frame) Packet {
		return Packet{Point: "gc-vm-" + name, Kind: PointGuest, Guest: name, Ifname: "eth0", Data: f.Wire[0]}
	}
	portUnreachable := func(f *Frame) []byte {
		quote := f.Wire[0][14:]
		return eth(macBroadcast, macBroadcast, nil, etIPv4, ip4(f.Probe.Dst, f.Probe.Src, protoICMP, icmp4(3, 3, 0, quote), ip4Opt{}))
	}
	echoReply := func(f *Frame) []byte {
		return eth(macBroadcast, macBroadcast, nil, etIPv4, ip4(f.Probe.Dst, f.Probe.Src, protoICMP, icmp4(0, 0, f.ID, payload(seed, f.ID, 2)), ip4Opt{}))
	}
	foreignARP := eth(macBroadcast, topo.GatewayMAC, nil, etARP, arp(2, topo.GatewayMAC, a("198.18.30.1"), macBroadcast, a("198.18.20.2")))

	rows := []struct {
		name     string
		pkts     []Packet
		crossing string // substring of the one crossing expected; "" for none
		fabric   int    // FabricAnswered
	}{
		{"a department's frame in another department's guest", []Packet{guest("health-web-1", toHealth)}, "reached guest health-web-1 of department health", 0},
		{"a department's frame in its own department's guest", []Packet{guest("lands-web-1", toHealth)}, "", 0},
		{"a frame a guest sends itself is not a delivery", []Packet{func() Packet { p := guest("health-web-1", toHealth); p.Outgoing = true; return p }()}, "", 0},
		{"outside frame to a VIP at its backend", []Packet{guest("health-web-2", toVIP)}, "", 0},
		{"outside frame to a VIP at another department's guest", []Packet{guest("lands-web-1", toVIP)}, "reached guest lands-web-1", 0},
		{"untagged fabric frame in a guest (finding 2)", []Packet{guest("lands-web-1", fabricUntagged)}, "[finding 2]", 0},
		{"fabric frame tagged VLAN 120 in a lands guest", []Packet{guest("lands-web-1", fabricLands)}, "", 0},
		{"fabric frame tagged VLAN 120 in a health guest", []Packet{guest("health-web-2", fabricLands)}, "reached guest health-web-2", 0},
		{"SYN-ACK from a host to a guest's probe (finding 3)", []Packet{{Point: "gc-host1", Kind: PointHost, Outgoing: true, Data: answerTCP(metrics.Probe, true, false, metrics.Probe.Seq+1)}}, "answered from management address 198.18.0.11", 0},
		{"RST acknowledging the SYN's data", []Packet{{Point: "gc-host1", Kind: PointHost, Outgoing: true, Data: answerTCP(metrics.Probe, false, true, metrics.Probe.Seq+1+uint32(metrics.Probe.Len))}}, "answered from management address", 0},
		{"SYN-ACK acknowledging something else", []Packet{{Point: "gc-host1", Kind: PointHost, Outgoing: true, Data: answerTCP(metrics.Probe, true, false, metrics.Probe.Seq+7)}}, "", 0},
		{"port unreachable for DNS from another host", []Packet{{Point: "gc-host2", Kind: PointHost, Outgoing: true, Data: portUnreachable(dns)}}, "answered from management address 198.18.0.12", 0},
		{"own gateway answers a ping", []Packet{{Point: "gc-host2", Kind: PointHost, Outgoing: true, Data: echoReply(gwPing)}}, "", 0},
		{"own gateway accepts BGP", []Packet{{Point: "gc-host2", Kind: PointHost, Outgoing: true, Data: answerTCP(gwBGP.Probe, true, false, gwBGP.Probe.Seq+1)}}, "management port 179", 0},
		{"own gateway refuses BGP with RST", []Packet{{Point: "gc-host2", Kind: PointHost, Outgoing: true, Data: answerTCP(gwBGP.Probe, false, true, gwBGP.Probe.Seq+1)}}, "", 0},
		{"a guest's probe delivered to the ToR", []Packet{{Point: "gc-tor", Kind: PointTor, Ifname: "fabric", Data: torBGP.Wire[0]}}, "delivered to the ToR's address 198.18.0.1", 0},
		{"the same probe seen tagged on the ToR's bridge", []Packet{{Point: "gc-tor", Kind: PointTor, Ifname: "fabric", VLAN: true, Data: torBGP.Wire[0]}}, "", 0},
		{"the fabric's probe answered: reported only", []Packet{{Point: "gc-host1", Kind: PointHost, Outgoing: true, Data: answerTCP(fabricMetrics.Probe, true, false, fabricMetrics.Probe.Seq+1)}}, "", 1},
		{"ARP from another department's gateway address in a guest", []Packet{{Point: "gc-vm-lands-web-1", Kind: PointGuest, Guest: "lands-web-1", Data: foreignARP}}, "ARP (op 2) from 198.18.30.1", 0},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			v := Judge(topo, frames, seed, r.pkts)
			switch {
			case r.crossing == "" && len(v.Crossings) > 0:
				t.Fatalf("crossings %v, want none", v.Crossings)
			case r.crossing != "" && (len(v.Crossings) != 1 || !strings.Contains(v.Crossings[0].String(), r.crossing)):
				t.Fatalf("crossings %v, want one with %q", v.Crossings, r.crossing)
			}
			if v.FabricAnswered != r.fabric {
				t.Fatalf("fabric answered %d, want %d", v.FabricAnswered, r.fabric)
			}
		})
	}

	// Controls: missing unless an expected guest saw them.
	v := Judge(topo, frames, seed, nil)
	missed := map[uint32]bool{}
	for _, f := range v.MissedControls {
		missed[f.ID] = true
	}
	if !missed[toPeer.ID] || !missed[toVIP.ID] {
		t.Fatalf("controls %d and %d not reported missing with no capture", toPeer.ID, toVIP.ID)
	}
	v = Judge(topo, frames, seed, []Packet{guest("lands-web-1", toPeer), guest("health-web-1", toVIP)})
	for _, f := range v.MissedControls {
		if f.ID == toPeer.ID || f.ID == toVIP.ID {
			t.Fatalf("control #%d reported missing though seen", f.ID)
		}
	}
}

func TestMarkers(t *testing.T) {
	b := append(append([]byte("xx"), payload(7, 42, 3)...), marker(7, 43)...)
	if got := findMarkers(b, 7); len(got) != 2 || got[0] != 42 || got[1] != 43 {
		t.Fatalf("markers %v, want [42 43]", got)
	}
	if got := findMarkers(b, 8); len(got) != 0 {
		t.Fatalf("markers of another run: %v", got)
	}
	bad := marker(7, 42)
	bad[15] ^= 1
	if got := findMarkers(bad, 7); len(got) != 0 {
		t.Fatalf("a damaged marker was read: %v", got)
	}
	if !bytes.Equal(marker(1, 2)[:4], []byte("GCFZ")) {
		t.Fatal("magic")
	}
}

// TestIntoSegment: an outside ping to a VIP must reach a segment (and be counted from_fabric)
// exactly when the capture shows it arriving on the uplink of a host holding one of the VIP's
// backends; a host without one (most hosts of a lab larger than 2) hands it back to the
// fabric. TCP to the VIP's port is balanced by XDP, never routed to a segment.
func TestIntoSegment(t *testing.T) {
	topo := labTopology()
	for i := 3; i <= 8; i++ {
		topo.Hosts = append(topo.Hosts, Host{Name: fmt.Sprintf("gc-host%d", i), Addr: netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i)}), Uplink: "eth0"})
	}
	frames := Generate(topo, labPositions(topo)[2:], seed)
	var ping, balanced *Frame
	for i := range frames {
		f := &frames[i]
		if f.Class != "ip4" || len(f.Dsts) != 1 || f.Dsts[0] != a("198.19.255.2") {
			continue
		}
		if f.Probe.Proto == protoTCP {
			balanced = f
		} else {
			ping = f
		}
	}
	if ping == nil || balanced == nil {
		t.Fatal("no routed ping or TCP to lands-www's VIP from outside")
	}
	arrivedAt := func(f *Frame, host string) []Packet {
		return []Packet{{Point: host, Kind: PointHost, Ifname: "eth0", Data: f.Wire[0]}}
	}
	for _, tc := range []struct {
		name string
		f    *Frame
		pkts []Packet
		want bool
	}{
		{"ping at a host with a backend", ping, arrivedAt(ping, "gc-host2"), true},
		{"ping at a host without backends", ping, arrivedAt(ping, "gc-host5"), false},
		{"ping seen leaving a host with a backend only", ping, []Packet{{Point: "gc-host1", Kind: PointHost, Ifname: "eth0", Outgoing: true, Data: ping.Wire[0]}}, false},
		{"ping seen on a host's bridge, not its uplink", ping, []Packet{{Point: "gc-host1", Kind: PointHost, Ifname: "br120", Data: ping.Wire[0]}}, false},
		{"ping never delivered", ping, nil, false},
		{"TCP to the VIP's port at a host with a backend", balanced, arrivedAt(balanced, "gc-host1"), false},
	} {
		v := Judge(topo, frames, seed, tc.pkts)
		if got := IntoSegment(topo, v, tc.f); got != tc.want {
			t.Errorf("%s: IntoSegment %v, want %v", tc.name, got, tc.want)
		}
	}
}
