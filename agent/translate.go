package agent

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
	"github.com/govcloud/govcloud/controlplane/lbtables"
	"github.com/govcloud/govcloud/dataplane/hostnet"
	"github.com/govcloud/govcloud/dataplane/netdev"
	"github.com/govcloud/govcloud/dataplane/viproute"
	"github.com/govcloud/govcloud/lb"
)

// GuestPort is desired.GuestPort: the host-side name of a VM's NIC on a segment.
func GuestPort(vm, segment string) string { return desired.GuestPort(vm, segment) }

// hostNetwork turns the controller's desired state into the host network's.
func hostNetwork(st *desired.State) (hostnet.HostNetwork, error) {
	hn := hostnet.HostNetwork{Uplink: st.Uplink}
	// Departments leave through the top-of-rack router: the host's first BGP peer.
	var egress4, egress6 netip.Addr
	if st.BGP != nil {
		for _, p := range st.BGP.Peers {
			if a := p.Address; a.IsValid() {
				if a.Is4() && !egress4.IsValid() {
					egress4 = a
				} else if a.Is6() && !egress6.IsValid() {
					egress6 = a
				}
			}
		}
	}
	// The VIPs a department's dsr backends answer from, on any host.
	vips := map[string][]netip.Addr{}
	for _, svc := range st.Services {
		if svc.Mode == "dsr" && svc.VIP.IsValid() && !slices.Contains(vips[svc.Department], svc.VIP) {
			vips[svc.Department] = append(vips[svc.Department], svc.VIP)
		}
	}
	for _, d := range st.Departments {
		hn.Departments = append(hn.Departments, hostnet.Department{Name: d.Name, ID: uint32(d.TableID), Table: d.TableID, Egress: egress4, Egress6: egress6, VIPs: vips[d.Name], SNAT: d.Egress})
	}
	// Bandwidth quotas: every host enforces each department's on its own guest ports.
	for i, d := range st.Departments {
		hn.Departments[i].BandwidthMbps = d.BandwidthMbps
	}
	// dsr backends answer from the VIP.
	serves := st.DSRVIPs()
	for _, s := range st.Segments {
		seg := hostnet.Segment{Name: s.Name, Department: s.Department, VLAN: uint16(s.VLAN),
			IPv4: s.Prefix4, Gateway: s.Gateway4, IPv6: s.Prefix6, Gateway6: s.Gateway6}
		switch {
		case !s.Prefix4.Addr().Is4():
			return hn, fmt.Errorf("segment %q: prefix4 %q: want an IPv4 prefix", s.Name, s.Prefix4)
		case !s.Gateway4.Is4():
			return hn, fmt.Errorf("segment %q: gateway4 %q: want an IPv4 address", s.Name, s.Gateway4)
		}
		hn.Segments = append(hn.Segments, seg)
	}
	for _, vm := range st.VMs {
		for _, ifc := range vm.Interfaces {
			g := hostnet.Guest{Segment: ifc.Segment, Ifname: GuestPort(vm.Name, ifc.Segment), Serves: serves[vm.Name]}
			if ifc.MAC != "" {
				mac, err := net.ParseMAC(ifc.MAC)
				if err != nil {
					return hn, fmt.Errorf("vm %q: mac %q: %w", vm.Name, ifc.MAC, err)
				}
				g.MAC = mac
			}
			g.Addr = ifc.Prefix4.Addr() // zero when the NIC has no IPv4 address
			// The NIC's IPv6 address, so anti-spoofing lets its IPv6 source out (zero: none).
			g.Addr6 = ifc.Prefix6.Addr()
			hn.Guests = append(hn.Guests, g)
		}
	}
	for _, rg := range st.RemoteGuests {
		g := hostnet.Guest{Segment: rg.Segment}
		mac, err := net.ParseMAC(rg.MAC)
		if err != nil {
			return hn, fmt.Errorf("remote vm %q: mac %q: %w", rg.VM, rg.MAC, err)
		}
		g.MAC = mac
		if g.Addr, g.Addr6 = rg.Addr4, rg.Addr6; !g.Addr.Is4() {
			return hn, fmt.Errorf("remote vm %q: addr4 %q: want an IPv4 address", rg.VM, rg.Addr4)
		}
		hn.Guests = append(hn.Guests, g)
	}
	// Management: this host's fabric address and every other host's (the uplink's prefixes
	// are added by the host network itself).
	hostAddrs := []netip.Addr{st.Address}
	for _, h := range slices.Sorted(maps.Keys(st.Hosts)) {
		hostAddrs = append(hostAddrs, st.Hosts[h])
	}
	for _, p := range hostAddrs {
		if p.IsValid() {
			if pf := netip.PrefixFrom(p, p.BitLen()); !slices.Contains(hn.Management, pf) {
				hn.Management = append(hn.Management, pf)
			}
		}
	}
	hn.VIPPorts = vipPorts(st)
	g, err := guards(st)
	if err != nil {
		return hn, err
	}
	hn.Guards = g
	hn.FloatingIPs = floatingIPs(st)
	return hn, nil
}

// floatingIPs lists the floating IPs of the VMs on this host, each mapped to the VM's first
// IPv4 address.
func floatingIPs(st *desired.State) []hostnet.FloatingIP {
	var out []hostnet.FloatingIP
	for _, vm := range st.VMs {
		if !vm.FloatingIP.IsValid() {
			continue
		}
		for _, ifc := range vm.Interfaces {
			if a := ifc.Prefix4.Addr(); a.Is4() {
				out = append(out, hostnet.FloatingIP{Department: vm.Department, Public: vm.FloatingIP, Private: a})
				break
			}
		}
	}
	return out
}

// vipPorts lists the VIP delivery into segments of this host: every port of a dsr service
// with a backend here, for the backend's segment (the host network lets only these, and
// replies, in from the uplink).
func vipPorts(st *desired.State) []hostnet.VIPPort {
	var out []hostnet.VIPPort
	for _, svc := range st.Services {
		if !strings.EqualFold(svc.Mode, "dsr") {
			continue
		}
		vip := svc.VIP
		if !vip.IsValid() {
			continue
		}
		for _, b := range svc.Backends {
			if b.Host != st.Host || b.Segment == "" {
				continue
			}
			for _, port := range svc.Ports {
				proto, err := lb.ParseProtocol(strings.ToLower(port.Protocol))
				if err != nil || port.Port <= 0 || port.Port > 65535 {
					continue
				}
				v := hostnet.VIPPort{Segment: b.Segment, VIP: vip, Proto: uint8(proto), Port: uint16(port.Port)}
				if !slices.Contains(out, v) {
					out = append(out, v)
				}
			}
		}
	}
	return out
}

// ParseTenantAllow parses an explicit tenant exception "proto:addr:port" (proto tcp or udp;
// an IPv6 address in brackets), e.g. "udp:192.0.2.53:53" or "tcp:[2001:db8::53]:53".
func ParseTenantAllow(s string) (hostnet.TenantAllow, error) {
	proto, rest, ok := strings.Cut(s, ":")
	if !ok {
		return hostnet.TenantAllow{}, fmt.Errorf("tenant exception %q: want proto:addr:port", s)
	}
	var a hostnet.TenantAllow
	switch strings.ToLower(proto) {
	case "tcp":
		a.Proto = unix.IPPROTO_TCP
	case "udp":
		a.Proto = unix.IPPROTO_UDP
	default:
		return a, fmt.Errorf("tenant exception %q: protocol %q is neither tcp nor udp", s, proto)
	}
	ap, err := netip.ParseAddrPort(rest)
	if err != nil {
		return a, fmt.Errorf("tenant exception %q: %w", s, err)
	}
	switch addr := ap.Addr(); {
	case ap.Port() == 0:
		return a, fmt.Errorf("tenant exception %q: port 0", s)
	case addr.Zone() != "":
		return a, fmt.Errorf("tenant exception %q: an address with a zone (%%%s) cannot be matched by a firewall rule", s, addr.Zone())
	case addr.Unmap().IsUnspecified():
		return a, fmt.Errorf("tenant exception %q: %s is no address; name the one management address tenants may reach", s, addr)
	}
	a.Addr, a.Port = ap.Addr().Unmap(), ap.Port()
	return a, nil
}

// ParseManagement parses a management prefix or address (an address is a /32 or /128).
// IPv4-mapped IPv6 forms (::ffff:198.51.100.1, ::ffff:198.51.100.0/120) become the IPv4
// address or prefix they name, which is what packets carry. Refused: a zone, which no firewall
// rule can match, and a prefix of length 0 or an unspecified address (0.0.0.0, ::), which would
// cut every department off from everything or protect nothing.
func ParseManagement(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return p, fmt.Errorf("management prefix %q: %w", s, err)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("management address %q: %w", s, err)
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("management address %q: an address with a zone (%%%s) cannot be matched by a firewall rule", s, a.Zone())
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("management prefix %q: an IPv4-mapped prefix needs a length of 96 or more", s)
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	switch {
	case p.Bits() == 0:
		return netip.Prefix{}, fmt.Errorf("management prefix %q: a length of 0 would cut every department off from every address; name the management networks", s)
	case p.Addr().IsUnspecified() && p.IsSingleIP():
		return netip.Prefix{}, fmt.Errorf("management address %q: %s is no address", s, p.Addr())
	}
	return p.Masked(), nil
}

// lbPlan is what the load balancer and the VIP routes need from the desired state.
type lbPlan struct {
	services   []lb.Service
	vlanDomain map[uint16]uint32
	routes     map[netip.Addr][]viproute.NextHop
	// local backends per VIP, for status
	advertise []netip.Addr // public VIPs with a healthy backend of weight > 0 somewhere
}

// loadBalancing turns services into LB services. healthy reports whether a backend is up
// (unknown backends are up until their checks say otherwise). hostAddr resolves a host name
// to its tunnel endpoint for dsr.
func loadBalancing(st *desired.State, self netip.Addr, healthy func(hoststatus.BackendKey) bool, hostAddr func(string) (netip.Addr, bool)) (lbPlan, []error) {
	p := lbPlan{vlanDomain: map[uint16]uint32{}, routes: map[netip.Addr][]viproute.NextHop{}}
	var errs []error
	vlanOf := map[string]uint16{}
	for _, s := range st.Segments {
		vlanOf[s.Name] = uint16(s.VLAN)
		p.vlanDomain[uint16(s.VLAN)] = uint32(s.TableID)
	}
	for _, svc := range st.Services {
		vip := svc.VIP
		if !vip.IsValid() {
			errs = append(errs, fmt.Errorf("service %q: no vip", svc.Name))
			continue
		}
		mode, err := lb.ParseMode(svc.Mode)
		if err != nil {
			errs = append(errs, fmt.Errorf("service %q: %w", svc.Name, err))
			continue
		}
		// An internal VIP is the department's own: its guests reach it through their gateway,
		// which routes it (department table) to a backend on any host; dsr backends answer from
		// the VIP through their own gateway. A nat backend would answer from its own address,
		// which the client never asked, so internal VIPs are dsr only.
		internal := svc.Scope == "internal"
		if internal && (mode != lb.DSR || svc.TableID == 0) {
			errs = append(errs, fmt.Errorf("service %q: internal VIP %s: needs mode dsr and a department routing table (mode %s, table %d)", svc.Name, vip, mode, svc.TableID))
			continue
		}
		// Backends up here get routes from their VIP: every one for an internal VIP, the local
		// ones (dsr) for a public one.
		up := func(b desired.Backend) bool {
			return healthy(hoststatus.BackendKey{Service: svc.Name, Addr: b.Address})
		}
		for _, b := range svc.Backends {
			if !b.Address.IsValid() || !up(b) || mode != lb.DSR || b.Weight <= 0 {
				continue
			}
			vlan, ok := vlanOf[b.Segment]
			switch {
			case !ok:
			case internal:
				p.routes[vip] = append(p.routes[vip], viproute.NextHop{Addr: b.Address, Dev: netdev.BridgeName(vlan), Table: svc.TableID})
			case b.Host != "" && b.Host == st.Host:
				p.routes[vip] = append(p.routes[vip], viproute.NextHop{Addr: b.Address, Dev: netdev.BridgeName(vlan)})
			}
		}
		if internal {
			// Not the XDP load balancer's: the department's own frames to a backend cross the
			// trunk as they are, and an LB on the uplink would take them for itself.
			continue
		}
		// One LB backend per tunnel endpoint (dsr) or per real server (nat), named and keyed
		// as the controller's shared tables are (lbtables).
		bs, berrs := lbtables.Backends(svc, mode, hostAddr, up)
		errs = append(errs, berrs...)
		// Advertised only while some backend takes new connections: one that is healthy, has
		// weight > 0 and can be reached (bs holds only those, weights summed per target). A
		// VIP whose backends are all drained or down would drop every new flow the fabric
		// sends it.
		takesNew := slices.ContainsFunc(bs, func(b lb.Backend) bool { return b.Weight > 0 })
		if takesNew && svc.Scope != "internal" {
			p.advertise = append(p.advertise, vip)
		}
		for _, port := range svc.Ports {
			proto, err := lb.ParseProtocol(strings.ToLower(port.Protocol))
			if err != nil {
				errs = append(errs, fmt.Errorf("service %q: port %d: %w", svc.Name, port.Port, err))
				continue
			}
			ls := lb.Service{Name: lbtables.Name(svc.Name, uint16(port.Port), proto), Mode: mode,
				VIP:      lb.VIP{Domain: 0, Addr: vip, Port: uint16(port.Port), Proto: proto},
				Backends: lbtables.PortBackends(bs, mode, port)}
			p.services = append(p.services, ls)
		}
	}
	_ = self
	return p, errs
}
