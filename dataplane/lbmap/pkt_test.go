package lbmap

import (
	"encoding/binary"
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
	df           bool  // IPv4 don't-fragment
	tos          uint8 // IPv4 TOS / IPv6 traffic class (DSCP+ECN)
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
		v := &layers.IPv4{Version: 4, IHL: 5, TOS: f.tos, TTL: 64, Protocol: proto, SrcIP: ip(f.src), DstIP: ip(f.dst)}
		if f.df {
			v.Flags = layers.IPv4DontFragment
		}
		nl, l3 = v, v
	} else {
		v := &layers.IPv6{Version: 6, HopLimit: 64, TrafficClass: f.tos, NextHeader: proto, SrcIP: ip(f.src), DstIP: ip(f.dst)}
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

// testIPID is the IPv4 ID the program gives the next header it originates in a test run: rig.run
// sets every CPU's counter (bpf/lb/icmp_gen.h next_ip_id) to the one before it.
const testIPID = 0x1234

// innerTOS is the DSCP+ECN byte of an IPv4 packet or the traffic class of an IPv6 one.
func innerTOS(inner []byte) uint8 {
	if inner[0]>>4 == 4 {
		return inner[1]
	}
	return inner[0]<<4 | inner[1]>>4
}

// encapsulated is what the LB sends for dsr in IPIP mode: L2 toward the backend host, an outer
// header (RFC 2003 / RFC 2473: DSCP+ECN copied, IPv4 DF copied from an inner IPv4 header and set
// over IPv6, the run's IP ID), the client's packet unchanged.
func encapsulated(t testing.TB, smac, dmac net.HardwareAddr, vlan uint16, outerSrc, outerDst string, flowLabel uint32, inner []byte) []byte {
	t.Helper()
	return encapsulatedGUE(t, smac, dmac, vlan, outerSrc, outerDst, flowLabel, 0, inner)
}

// encapsulatedGUE is encapsulated with a UDP header from sport to DefaultGUEPort between the
// outer header and the inner packet; sport 0 is plain IPIP.
func encapsulatedGUE(t testing.TB, smac, dmac net.HardwareAddr, vlan uint16, outerSrc, outerDst string, flowLabel uint32, sport uint16, inner []byte) []byte {
	t.Helper()
	innerProto := layers.IPProtocolIPv4
	if inner[0]>>4 == 6 {
		innerProto = layers.IPProtocolIPv6
	}
	var rest []gopacket.SerializableLayer
	if sport != 0 {
		// The UDP checksum stays zero (RFC 8086 §3.2, RFC 6935): serialized by hand.
		u := make([]byte, 8)
		binary.BigEndian.PutUint16(u[0:], sport)
		binary.BigEndian.PutUint16(u[2:], DefaultGUEPort)
		binary.BigEndian.PutUint16(u[4:], uint16(8+len(inner)))
		rest = append(rest, gopacket.Payload(append(u, inner...)))
		innerProto = layers.IPProtocolUDP
	} else {
		rest = append(rest, gopacket.Payload(inner))
	}
	if netip.MustParseAddr(outerDst).Is4() {
		o := &layers.IPv4{Version: 4, IHL: 5, TOS: innerTOS(inner), Id: testIPID, TTL: 64, Protocol: innerProto, SrcIP: ip(outerSrc), DstIP: ip(outerDst)}
		if inner[0]>>4 == 6 || inner[6]&0x40 != 0 {
			o.Flags = layers.IPv4DontFragment
		}
		return serialize(t, append(append(l2(smac, dmac, vlan, layers.EthernetTypeIPv4), o), rest...)...)
	}
	o := &layers.IPv6{Version: 6, HopLimit: 64, TrafficClass: innerTOS(inner), NextHeader: innerProto, FlowLabel: flowLabel & 0xfffff, SrcIP: ip(outerSrc), DstIP: ip(outerDst)}
	return serialize(t, append(append(l2(smac, dmac, vlan, layers.EthernetTypeIPv6), o), rest...)...)
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
