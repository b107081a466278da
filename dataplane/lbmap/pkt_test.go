package lbmap

import (
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Packet builders for the tests: real headers with real checksums, serialized by gopacket.

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func ip(s string) net.IP { return net.IP(netip.MustParseAddr(s).AsSlice()) }

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// l2 returns the Ethernet (and 802.1Q when vlan != 0) layers for a frame carrying et.
func l2(src, dst net.HardwareAddr, vlan uint16, et layers.EthernetType) []gopacket.SerializableLayer {
	if vlan == 0 {
		return []gopacket.SerializableLayer{&layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: et}}
	}
	return []gopacket.SerializableLayer{
		&layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: layers.EthernetTypeDot1Q},
		&layers.Dot1Q{VLANIdentifier: vlan, Type: et},
	}
}

type flow struct {
	src, dst     string
	sport, dport uint16
	udp          bool
	syn          bool
	fin, rst     bool
	vlan         uint16
	payload      string
}

// ipPacket is the L3 packet of f (no L2).
func ipPacket(t testing.TB, f flow) []byte {
	t.Helper()
	src := netip.MustParseAddr(f.src)
	var nl gopacket.NetworkLayer
	var l3 gopacket.SerializableLayer
	proto := layers.IPProtocolTCP
	if f.udp {
		proto = layers.IPProtocolUDP
	}
	if src.Is4() {
		v := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: ip(f.src), DstIP: ip(f.dst)}
		nl, l3 = v, v
	} else {
		v := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: ip(f.src), DstIP: ip(f.dst)}
		nl, l3 = v, v
	}
	pl := gopacket.Payload(f.payload)
	if f.udp {
		u := &layers.UDP{SrcPort: layers.UDPPort(f.sport), DstPort: layers.UDPPort(f.dport)}
		_ = u.SetNetworkLayerForChecksum(nl)
		return serialize(t, l3, u, pl)
	}
	tc := &layers.TCP{SrcPort: layers.TCPPort(f.sport), DstPort: layers.TCPPort(f.dport), Seq: 1, ACK: !f.syn, SYN: f.syn, FIN: f.fin, RST: f.rst, Window: 512, DataOffset: 5}
	if !f.syn {
		tc.Ack = 1
	}
	_ = tc.SetNetworkLayerForChecksum(nl)
	return serialize(t, l3, tc, pl)
}

// frame wraps an L3 packet into Ethernet (+ tag).
func frame(t testing.TB, src, dst net.HardwareAddr, vlan uint16, l3 []byte) []byte {
	t.Helper()
	et := layers.EthernetTypeIPv4
	if len(l3) > 0 && l3[0]>>4 == 6 {
		et = layers.EthernetTypeIPv6
	}
	ls := append(l2(src, dst, vlan, et), gopacket.Payload(l3))
	return serialize(t, ls...)
}

// encapsulated is what the LB sends for dsr: L2 toward the backend host, an outer header, the
// client's packet unchanged.
func encapsulated(t testing.TB, smac, dmac net.HardwareAddr, vlan uint16, outerSrc, outerDst string, flowLabel uint32, inner []byte) []byte {
	t.Helper()
	innerProto := layers.IPProtocolIPv4
	if inner[0]>>4 == 6 {
		innerProto = layers.IPProtocolIPv6
	}
	if netip.MustParseAddr(outerDst).Is4() {
		o := &layers.IPv4{Version: 4, IHL: 5, TOS: inner[1] * 0, TTL: 64, Protocol: innerProto, SrcIP: ip(outerSrc), DstIP: ip(outerDst)}
		if inner[0]>>4 == 4 {
			o.TOS = inner[1]
		}
		return serialize(t, append(l2(smac, dmac, vlan, layers.EthernetTypeIPv4), o, gopacket.Payload(inner))...)
	}
	o := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: innerProto, FlowLabel: flowLabel & 0xfffff, SrcIP: ip(outerSrc), DstIP: ip(outerDst)}
	return serialize(t, append(l2(smac, dmac, vlan, layers.EthernetTypeIPv6), o, gopacket.Payload(inner))...)
}

// icmpTooBig is a router's frag-needed (v4) / packet-too-big (v6) about a packet that went
// from vip:vport to client:cport, sent to the VIP.
func icmpTooBig(t testing.TB, router, vip, client string, vport, cport uint16) []byte {
	t.Helper()
	orig := ipPacket(t, flow{src: vip, dst: client, sport: vport, dport: cport, payload: "reply data that was too big"})
	quote := orig[:len(orig)-len("reply data that was too big")+8]
	if netip.MustParseAddr(vip).Is4() {
		v := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: ip(router), DstIP: ip(vip)}
		ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded), Seq: 1400}
		return serialize(t, v, ic, gopacket.Payload(quote))
	}
	v := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: ip(router), DstIP: ip(vip)}
	ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypePacketTooBig, 0)}
	_ = ic.SetNetworkLayerForChecksum(v)
	mtu := []byte{0, 0, 0x05, 0x00}
	return serialize(t, v, ic, gopacket.Payload(append(mtu, quote...)))
}
