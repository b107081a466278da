// Package trunktest builds Ethernet frames and sends and captures them on raw AF_PACKET
// sockets, for tests of the trunk program and of the host network (isolation attempts that
// must not arrive). It needs no tools beyond the kernel.
package trunktest

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// Ethertypes used in tests.
const (
	EtherIPv4   = 0x0800
	EtherARP    = 0x0806
	EtherIPv6   = 0x86dd
	Ether8021Q  = 0x8100
	Ether8021AD = 0x88a8
)

// Broadcast is ff:ff:ff:ff:ff:ff.
var Broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// MAC parses a MAC address or panics (test constants only).
func MAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// Eth builds an untagged Ethernet frame.
func Eth(dst, src net.HardwareAddr, etype uint16, payload []byte) []byte {
	b := make([]byte, 14, 14+len(payload))
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:14], etype)
	return append(b, payload...)
}

// Tag inserts a tag (tpid, vid) after the MAC addresses: the new tag becomes the outer one.
func Tag(frame []byte, tpid uint16, vid uint16) []byte {
	b := make([]byte, 0, len(frame)+4)
	b = append(b, frame[:12]...)
	b = binary.BigEndian.AppendUint16(b, tpid)
	b = binary.BigEndian.AppendUint16(b, vid&0x0fff)
	return append(b, frame[12:]...)
}

// TagTCI inserts a tag with a whole TCI (priority, DEI and VID) as the outer one.
func TagTCI(frame []byte, tpid uint16, tci uint16) []byte {
	b := make([]byte, 0, len(frame)+4)
	b = append(b, frame[:12]...)
	b = binary.BigEndian.AppendUint16(b, tpid)
	b = binary.BigEndian.AppendUint16(b, tci)
	return append(b, frame[12:]...)
}

// Untag removes the outer 802.1Q/802.1ad tag; frames without a tag come back unchanged.
func Untag(frame []byte) []byte {
	if len(frame) < 18 {
		return frame
	}
	t := binary.BigEndian.Uint16(frame[12:14])
	if t != Ether8021Q && t != Ether8021AD {
		return frame
	}
	b := make([]byte, 0, len(frame)-4)
	b = append(b, frame[:12]...)
	return append(b, frame[16:]...)
}

func csum(b []byte, initial uint32) uint16 {
	s := initial
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = (s & 0xffff) + (s >> 16)
	}
	return ^uint16(s)
}

// IPv4 builds an IPv4 header (ttl 64, DF) around payload of protocol proto.
func IPv4(src, dst netip.Addr, proto uint8, payload []byte) []byte {
	h := make([]byte, 20, 20+len(payload))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(h[4:], 1)
	h[6] = 0x40
	h[8] = 64
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	binary.BigEndian.PutUint16(h[10:], csum(h, 0))
	return append(h, payload...)
}

// UDP4 builds a UDP datagram (with checksum) for IPv4 addresses.
func UDP4(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	u := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	u = append(u, payload...)
	s, d := src.As4(), dst.As4()
	var ph uint32
	for _, a := range [][4]byte{s, d} {
		ph += uint32(binary.BigEndian.Uint16(a[0:])) + uint32(binary.BigEndian.Uint16(a[2:]))
	}
	ph += 17 + uint32(len(u))
	c := csum(u, ph)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return u
}

// UDPFrame is an Ethernet+IPv4+UDP frame.
func UDPFrame(dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	return Eth(dstMAC, srcMAC, EtherIPv4, IPv4(src, dst, 17, UDP4(src, dst, sport, dport, payload)))
}

// ICMPEcho4 is an Ethernet+IPv4+ICMP echo request frame.
func ICMPEcho4(dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr, id uint16, payload []byte) []byte {
	m := make([]byte, 8, 8+len(payload))
	m[0] = 8
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], 1)
	m = append(m, payload...)
	binary.BigEndian.PutUint16(m[2:], csum(m, 0))
	return Eth(dstMAC, srcMAC, EtherIPv4, IPv4(src, dst, 1, m))
}

// ARP op codes.
const (
	ARPRequest = 1
	ARPReply   = 2
)

// ARP builds an ARP frame; requests go to broadcast, replies to tha.
func ARP(op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	p := make([]byte, 28)
	binary.BigEndian.PutUint16(p[0:], 1)
	binary.BigEndian.PutUint16(p[2:], EtherIPv4)
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:], op)
	copy(p[8:14], sha)
	s, t := spa.As4(), tpa.As4()
	copy(p[14:18], s[:])
	if tha != nil {
		copy(p[18:24], tha)
	}
	copy(p[24:28], t[:])
	dst := Broadcast
	if op == ARPReply {
		dst = tha
	}
	return Eth(dst, sha, EtherARP, p)
}

// NeighborSolicit builds an IPv6 neighbour solicitation for target from src (to the
// solicited-node multicast group).
func NeighborSolicit(srcMAC net.HardwareAddr, src, target netip.Addr) []byte {
	t := target.As16()
	dst := netip.AddrFrom16([16]byte{0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15]})
	icmp := make([]byte, 24, 32)
	icmp[0] = 135
	copy(icmp[8:24], t[:])
	icmp = append(icmp, 1, 1)
	icmp = append(icmp, srcMAC...)
	s, d := src.As16(), dst.As16()
	var ph uint32
	for _, a := range [][16]byte{s, d} {
		for i := 0; i < 16; i += 2 {
			ph += uint32(binary.BigEndian.Uint16(a[i:]))
		}
	}
	ph += uint32(len(icmp)) + 58
	binary.BigEndian.PutUint16(icmp[2:], csum(icmp, ph))
	ip := make([]byte, 40, 40+len(icmp))
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(icmp)))
	ip[6] = 58
	ip[7] = 255
	copy(ip[8:24], s[:])
	copy(ip[24:40], d[:])
	ip = append(ip, icmp...)
	dmac := net.HardwareAddr{0x33, 0x33, 0xff, t[13], t[14], t[15]}
	return Eth(dmac, srcMAC, EtherIPv6, ip)
}

// Pad pads a frame with zeros to n bytes (minimum Ethernet payload without FCS is 60).
func Pad(frame []byte, n int) []byte {
	for len(frame) < n {
		frame = append(frame, 0)
	}
	return frame
}
