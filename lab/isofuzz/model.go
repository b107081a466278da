// Package isofuzz is the lab's department isolation fuzz (issue 20): it crafts a fixed-seed
// set of frames of every class (IP, ARP, spoofed addresses, VLAN tags and tag stacks, IPv6
// ND/RA, IP options, fragments, IPIP / IP6IP6 / 4in6 / 6in4 with any inner destination,
// management-plane probes, random bytes) from three positions (a department's guest, a port
// on the top-of-rack's L2, the client outside the cloud), sends them with AF_PACKET sockets,
// captures in every guest and on every host's and the ToR's stack, and judges crossings: a
// department's frame seen in another department's guest, a fabric or outside frame seen in a
// guest other than through a VIP to its backends, a department's frame answered from the
// management plane.
//
// Generate and Judge are pure (unit-tested without root); Run does the sockets.
package isofuzz

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
)

// Guest is one guest interface of the lab.
type Guest struct {
	Name      string // VM name
	Dept      string
	Host      string // host namespace it sits on
	NS        string // its network namespace
	MAC       net.HardwareAddr
	Addr      netip.Addr // IPv4
	LinkLocal netip.Addr
	VLAN      uint16
	Gateway   netip.Addr
}

// Host is one host's fabric side: its management plane.
type Host struct {
	Name      string // namespace
	MAC       net.HardwareAddr
	Addr      netip.Addr // fabric address
	LinkLocal netip.Addr // the uplink's
	Uplink    string     // the uplink's name (where the fabric delivers to the host)
}

// VIP is a service address and the guests behind it.
type VIP struct {
	Service  string
	Dept     string
	Addr     netip.Addr
	Port     uint16
	Backends []string // guest names
}

// Endpoint is an interface of a namespace outside the hosts (ToR, client).
type Endpoint struct {
	NS, Ifname string
	MAC        net.HardwareAddr
	Addr       netip.Addr
	LinkLocal  netip.Addr
}

// Topology is what the fuzz aims at and judges by.
type Topology struct {
	Guests     []Guest
	Hosts      []Host
	VIPs       []VIP
	GatewayMAC net.HardwareAddr // the distributed gateway's MAC on every segment
	TorFabric  Endpoint         // the ToR's address on the fabric bridge
	TorClient  Endpoint         // the ToR's address toward the client
	Client     Endpoint
	Controller netip.AddrPort // the controller's API (on the machine, outside every lab namespace)
}

// PositionKind is where a position sits.
type PositionKind int

const (
	// AtGuest is inside a department's guest: every frame is that department's traffic.
	AtGuest PositionKind = iota
	// AtFabric is a port on the ToR's L2: untagged frames are fabric traffic, frames with one
	// 802.1Q tag of a department's VLAN are that department's, any other tag stack no one's.
	AtFabric
	// AtOutside is the client beyond the ToR's routing: outside traffic.
	AtOutside
)

func (k PositionKind) String() string {
	return [...]string{"guest", "fabric", "outside"}[k]
}

// Position is a sender.
type Position struct {
	Name      string
	Kind      PositionKind
	NS        string // namespace of the sending socket
	Ifname    string
	MAC       net.HardwareAddr
	Addr      netip.Addr
	LinkLocal netip.Addr
	Guest     string           // AtGuest: the guest's name
	Dept      string           // AtGuest: its department
	Router    net.HardwareAddr // AtOutside: the next hop's MAC
}

// Probe is the innermost transport header of a frame, for matching answers.
type Probe struct {
	Proto        uint8 // protoTCP, protoUDP, protoICMP, protoICMP6
	Src, Dst     netip.Addr
	Sport, Dport uint16
	Seq          uint32 // TCP
	Len          int    // TCP payload bytes
}

// Frame is one fuzz case: one frame, or the fragments of one datagram sent in order, all
// carrying the same marker.
type Frame struct {
	ID         uint32
	Position   string
	Kind       PositionKind
	Class      string // ip4, ip6, arp, spoof, vlan, qinq, nd, ipopt, ip6ext, frag4, frag6, ipip, 4in6, 6in4, ip6ip6, mgmt, random
	Desc       string
	Regression string // the issue-20 regression row this frame is, "" if none
	Wire       [][]byte
	// Tenant is the department whose traffic the frame is: the guest's, or the VLAN's for
	// one 802.1Q tag at the fabric; "" for fabric and outside traffic, "?" for tag stacks
	// that belong to no department (to be dropped).
	Tenant  string
	Allowed map[string]bool // guests that may see it: the tenant's, and the backends of any VIP it is addressed to
	Dsts    []netip.Addr    // every IP destination in it, outermost first
	Probe   *Probe          // innermost transport header, nil for non-IP
	Expect  []string        // controls: at least one of these guests must see it (proves the capture)
}

// TenantFrame reports whether f is a department's traffic (or claims to be).
func (f *Frame) TenantFrame() bool { return f.Tenant != "" }

// Marker layout: "GCFZ", run (4 bytes), frame id (4), id ^ 0x5a5a5a5a (4): 16 bytes.
const markerLen = 16

var markerMagic = []byte("GCFZ")

func marker(run, id uint32) []byte {
	b := append([]byte{}, markerMagic...)
	b = binary.BigEndian.AppendUint32(b, run)
	b = binary.BigEndian.AppendUint32(b, id)
	return binary.BigEndian.AppendUint32(b, id^0x5a5a5a5a)
}

// findMarkers returns the ids of every marker of run in b.
func findMarkers(b []byte, run uint32) []uint32 {
	var ids []uint32
	pre := binary.BigEndian.AppendUint32(append([]byte{}, markerMagic...), run)
	for i := 0; i+markerLen <= len(b); {
		j := bytes.Index(b[i:], pre)
		if j < 0 || i+j+markerLen > len(b) {
			break
		}
		k := i + j
		id := binary.BigEndian.Uint32(b[k+8:])
		if binary.BigEndian.Uint32(b[k+12:]) == id^0x5a5a5a5a && (len(ids) == 0 || ids[len(ids)-1] != id) {
			ids = append(ids, id)
		}
		i = k + 1
	}
	return ids
}

// payload is the marker repeated n times: every 16-byte-aligned slice of it holds a whole
// marker, so each fragment cut at offsets = 8 mod 16 after an 8-byte header carries one.
func payload(run, id uint32, n int) []byte {
	m := marker(run, id)
	var b []byte
	for range n {
		b = append(b, m...)
	}
	return b
}
