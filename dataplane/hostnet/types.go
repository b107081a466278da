// Package hostnet realises a host's whole tenant network from one declarative description:
// per segment a bridge with the distributed gateway, a veth pair into the eBPF VLAN trunk on
// the uplink, a routing table per department (VRF-lite), guest ports, permanent neighbours
// and the nftables isolation rules. Set is level-triggered and idempotent (Tailscale's
// wgengine/router style): it reads the kernel, works out the difference and converges from any
// state, including one a crashed agent left half-way. Teardown removes everything it made.
package hostnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/govcloud/govcloud/dataplane/firewall"
)

// HostNetwork is everything one host should have.
type HostNetwork struct {
	// Uplink is the interface that carries the 802.1Q trunk to the top-of-rack switch.
	Uplink string
	// GatewayMAC is the distributed gateway's MAC, the same on every host (DefaultGatewayMAC
	// when nil).
	GatewayMAC  net.HardwareAddr
	Departments []Department
	Segments    []Segment
	// Guests are guest ports. A guest with an empty Ifname lives on another host: only its
	// permanent neighbour entry and a static FDB entry toward the trunk are made here, so the
	// local gateway can route to it without ARP crossing the trunk.
	Guests []Guest
	// Management prefixes are never reachable from tenant segments. The uplink's own
	// prefixes (the fabric every host's address is in) are added by Set.
	Management []netip.Prefix
	// VIPPorts are the VIP delivery to local backends: the only traffic from the uplink (or
	// any non-tenant interface) forwarded into a segment besides replies to the segment's
	// department.
	VIPPorts []VIPPort
	// TenantAllow are explicit exceptions to the management plane's isolation (e.g. DNS on
	// udp:192.0.2.53:53), for every department.
	TenantAllow []TenantAllow
	// FloatingIPs are the floating IPs of guests on this host.
	FloatingIPs []FloatingIP
	// Guards are the security policies in front of local guests: what the department's
	// segments send to a guarded guest's own addresses passes only when one of its rules
	// allows it (or it belongs to an allowed connection). Any guard needs br_netfilter
	// (bridged IP through the inet hooks), which Set turns on.
	Guards []Guard
}

// Guard filters what reaches the local guest on port Ifname (firewall.Guard; its bridge,
// addresses and department come from the guest).
type Guard struct {
	Ifname string
	Rules  []firewall.GuardRule
}

// VIPPort is VIP delivery into one segment: Proto (unix.IPPROTO_TCP or IPPROTO_UDP) to VIP
// port Port.
type VIPPort struct {
	Segment string
	VIP     netip.Addr
	Proto   uint8
	Port    uint16
}

// TenantAllow is an explicit exception: tenants may reach Proto (TCP or UDP) Addr:Port.
type TenantAllow = firewall.Allow

// Department is a tenant with its own routing table.
type Department struct {
	Name  string
	ID    uint32 // counter label, unique
	Table int    // routing table, unique, not 0/253/254/255
	// Egress, when set, is the next hop on the uplink (the top-of-rack router) for traffic
	// leaving the department's segments, e.g. replies of its public services. Unset, the
	// table ends in an unreachable default. Egress6 is the IPv6 counterpart.
	Egress  netip.Addr
	Egress6 netip.Addr
	// VIPs are the addresses the department's dsr backends answer from (its services' VIPs,
	// public and internal): a peer host's gateway routes those replies onto a shared segment,
	// so they may come in from the fabric with the gateway's MAC.
	VIPs []netip.Addr
	// BandwidthMbps limits the department's traffic on this host (spec.quotas.bandwidthMbps,
	// 10^6 bit/s): what its local guests send, and separately what they receive, each at most
	// this rate (trunk.MbpsRate). 0 is unlimited. Every host enforces the whole limit.
	BandwidthMbps int
	// SNAT, when set, is the department's public egress address on this host (IPv4): its
	// segments' connections leaving through the uplink take it as source (firewall.Department).
	// The fabric learns it from the host's BGP announcement.
	SNAT netip.Addr
}

// FloatingIP is a public address (IPv4) mapped 1:1 to a local guest's address in one of the
// department's segments.
type FloatingIP struct {
	Department string
	Public     netip.Addr
	Private    netip.Addr
}

// Segment is one L2 segment of a department.
type Segment struct {
	Name       string
	Department string
	ID         uint32 // counter label; 0 means the VLAN id
	VLAN       uint16
	IPv4       netip.Prefix
	IPv6       netip.Prefix // optional
	Gateway    netip.Addr   // IPv4 gateway inside IPv4
	Gateway6   netip.Addr   // optional; defaults to the first address of IPv6
}

// Guest is a guest's port on a segment.
type Guest struct {
	Segment string
	Ifname  string // host-side port (tap or veth end); "" for a guest on another host
	MAC     net.HardwareAddr
	Addr    netip.Addr // IPv4
	Addr6   netip.Addr // optional
	// Serves are the VIPs the guest answers from (dsr backends reply with the VIP as their
	// source): anti-spoofing lets them out too.
	Serves []netip.Addr
}

// PortError is Set's error for one guest port that could not join its segment bridge (the
// compute agent has not made it yet, or it went away): a fault of that guest alone, which
// callers report as the guest's, not as every segment's.
type PortError struct {
	Ifname  string
	Segment string
	Err     error
}

func (e *PortError) Error() string {
	return fmt.Sprintf("guest %s on segment %q: %v", e.Ifname, e.Segment, e.Err)
}

func (e *PortError) Unwrap() error { return e.Err }

// SplitPortErrors separates the guest ports' errors (PortError, by port name) from the rest
// of an error Set returned (the joined errors are walked; a PortError wrapped in another error
// stays with the rest).
func SplitPortErrors(err error) (ports map[string]*PortError, rest error) {
	ports = map[string]*PortError{}
	var others []error
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if pe, ok := e.(*PortError); ok {
			ports[pe.Ifname] = pe
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		others = append(others, e)
	}
	walk(err)
	return ports, errors.Join(others...)
}

// DefaultGatewayMAC is the gateway MAC used when HostNetwork.GatewayMAC is nil
// (locally administered).
var DefaultGatewayMAC = net.HardwareAddr{0x02, 0x67, 0x63, 0x00, 0x00, 0x01}

// Validate reports the first problem that would stop Set, naming the object and value.
func (h HostNetwork) Validate() error {
	_, err := h.normalize()
	return err
}

func (h HostNetwork) normalize() (HostNetwork, error) {
	out := HostNetwork{Uplink: h.Uplink, GatewayMAC: h.GatewayMAC, Management: slices.Clone(h.Management)}
	if out.GatewayMAC == nil {
		out.GatewayMAC = DefaultGatewayMAC
	}
	if len(out.GatewayMAC) != 6 {
		return out, fmt.Errorf("gateway MAC %q is not a 6-byte Ethernet address", out.GatewayMAC)
	}
	depts := map[string]Department{}
	ids := map[uint32]string{}
	tables := map[int]string{}
	for _, d := range h.Departments {
		switch {
		case d.Name == "":
			return out, fmt.Errorf("department with id %d has no name", d.ID)
		case depts[d.Name].Name != "":
			return out, fmt.Errorf("department %q listed twice", d.Name)
		case ids[d.ID] != "":
			return out, fmt.Errorf("department %q: id %d already used by %q", d.Name, d.ID, ids[d.ID])
		case d.Table <= 0 || d.Table >= 253 && d.Table <= 255 || d.Table > 0x7fffffff:
			return out, fmt.Errorf("department %q: routing table %d is reserved or invalid", d.Name, d.Table)
		case tables[d.Table] != "":
			return out, fmt.Errorf("department %q: routing table %d already used by %q", d.Name, d.Table, tables[d.Table])
		case d.BandwidthMbps < 0:
			return out, fmt.Errorf("department %q: bandwidth %d Mbit/s is negative", d.Name, d.BandwidthMbps)
		}
		depts[d.Name], ids[d.ID], tables[d.Table] = d, d.Name, d.Name
		out.Departments = append(out.Departments, d)
	}
	segs := map[string]Segment{}
	vlans := map[uint16]string{}
	for _, s := range h.Segments {
		switch {
		case s.Name == "":
			return out, fmt.Errorf("segment with vlan %d has no name", s.VLAN)
		case segs[s.Name].Name != "":
			return out, fmt.Errorf("segment %q listed twice", s.Name)
		case depts[s.Department].Name == "":
			return out, fmt.Errorf("segment %q: unknown department %q", s.Name, s.Department)
		case s.VLAN < 1 || s.VLAN > 4094:
			return out, fmt.Errorf("segment %q: vlan %d out of range 1-4094", s.Name, s.VLAN)
		case vlans[s.VLAN] != "":
			return out, fmt.Errorf("segment %q: vlan %d already used by %q", s.Name, s.VLAN, vlans[s.VLAN])
		case !s.IPv4.IsValid() || !s.IPv4.Addr().Is4():
			return out, fmt.Errorf("segment %q: ipv4 %q is not an IPv4 prefix", s.Name, s.IPv4)
		case !s.Gateway.Is4() || !s.IPv4.Contains(s.Gateway) || s.Gateway == s.IPv4.Masked().Addr():
			return out, fmt.Errorf("segment %q: gateway %q is not a host address in %s", s.Name, s.Gateway, s.IPv4)
		}
		s.IPv4 = s.IPv4.Masked()
		if s.IPv6.IsValid() {
			if !s.IPv6.Addr().Is6() || s.IPv6.Addr().Is4In6() {
				return out, fmt.Errorf("segment %q: ipv6 %q is not an IPv6 prefix", s.Name, s.IPv6)
			}
			s.IPv6 = s.IPv6.Masked()
			if !s.Gateway6.IsValid() {
				s.Gateway6 = s.IPv6.Addr().Next()
			}
			if !s.IPv6.Contains(s.Gateway6) {
				return out, fmt.Errorf("segment %q: gateway6 %s is not in %s", s.Name, s.Gateway6, s.IPv6)
			}
		} else if s.Gateway6.IsValid() {
			return out, fmt.Errorf("segment %q: gateway6 %s without an ipv6 prefix", s.Name, s.Gateway6)
		}
		if s.ID == 0 {
			s.ID = uint32(s.VLAN)
		}
		segs[s.Name], vlans[s.VLAN] = s, s.Name
		out.Segments = append(out.Segments, s)
	}
	ports := map[string]bool{}
	for _, g := range h.Guests {
		s, ok := segs[g.Segment]
		switch {
		case !ok:
			return out, fmt.Errorf("guest %s (%s): unknown segment %q", g.Ifname, g.Addr, g.Segment)
		case len(g.MAC) != 6:
			return out, fmt.Errorf("guest %s (%s): MAC %q is not a 6-byte Ethernet address", g.Ifname, g.Addr, g.MAC)
		case g.Addr.IsValid() && !s.IPv4.Contains(g.Addr):
			return out, fmt.Errorf("guest %s: address %s is not in segment %q (%s)", g.Ifname, g.Addr, s.Name, s.IPv4)
		case g.Addr6.IsValid() && !s.IPv6.Contains(g.Addr6):
			return out, fmt.Errorf("guest %s: address %s is not in segment %q (%s)", g.Ifname, g.Addr6, s.Name, s.IPv6)
		case len(g.Ifname) > 15:
			return out, fmt.Errorf("guest %s: interface name longer than 15 bytes", g.Ifname)
		case g.Ifname != "" && ports[g.Ifname]:
			return out, fmt.Errorf("guest port %s listed twice", g.Ifname)
		}
		ports[g.Ifname] = g.Ifname != ""
		out.Guests = append(out.Guests, g)
	}
	for _, v := range h.VIPPorts {
		switch {
		case segs[v.Segment].Name == "":
			return out, fmt.Errorf("VIP %s port %d: unknown segment %q", v.VIP, v.Port, v.Segment)
		case !v.VIP.IsValid():
			return out, fmt.Errorf("VIP port %d on segment %q: no VIP address", v.Port, v.Segment)
		case v.Proto != unix.IPPROTO_TCP && v.Proto != unix.IPPROTO_UDP:
			return out, fmt.Errorf("VIP %s port %d: protocol %d is neither TCP nor UDP", v.VIP, v.Port, v.Proto)
		}
		out.VIPPorts = append(out.VIPPorts, v)
	}
	for _, a := range h.TenantAllow {
		switch {
		case !a.Addr.IsValid():
			return out, fmt.Errorf("tenant exception port %d: no address", a.Port)
		case a.Proto != unix.IPPROTO_TCP && a.Proto != unix.IPPROTO_UDP:
			return out, fmt.Errorf("tenant exception %s port %d: protocol %d is neither TCP nor UDP", a.Addr, a.Port, a.Proto)
		}
		out.TenantAllow = append(out.TenantAllow, a)
	}
	guarded := map[string]bool{}
	for _, gd := range h.Guards {
		switch {
		case gd.Ifname == "" || !ports[gd.Ifname]:
			return out, fmt.Errorf("security policy guard %q: not a local guest port", gd.Ifname)
		case guarded[gd.Ifname]:
			return out, fmt.Errorf("security policy guard %q listed twice", gd.Ifname)
		}
		guarded[gd.Ifname] = true
		out.Guards = append(out.Guards, gd)
	}
	for _, f := range h.FloatingIPs {
		inDept := false
		for _, s := range out.Segments {
			inDept = inDept || (s.Department == f.Department && s.IPv4.Contains(f.Private))
		}
		switch {
		case depts[f.Department].Name == "":
			return out, fmt.Errorf("floating IP %s: unknown department %q", f.Public, f.Department)
		case !f.Public.Is4():
			return out, fmt.Errorf("floating IP %q of department %q: want an IPv4 address", f.Public, f.Department)
		case !inDept:
			return out, fmt.Errorf("floating IP %s: address %q is not in a segment of department %q", f.Public, f.Private, f.Department)
		}
		out.FloatingIPs = append(out.FloatingIPs, f)
	}
	for _, d := range out.Departments {
		if d.SNAT.IsValid() && !d.SNAT.Is4() {
			return out, fmt.Errorf("department %q: egress address %q: want an IPv4 address", d.Name, d.SNAT)
		}
	}
	if len(out.Segments) > 0 && out.Uplink == "" {
		return out, fmt.Errorf("segments need an uplink interface")
	}
	return out, nil
}
