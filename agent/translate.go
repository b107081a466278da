package agent

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/govcloud/govcloud/controlplane/desired"
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
			if a, err := netip.ParseAddr(p.Address); err == nil {
				if a.Is4() && !egress4.IsValid() {
					egress4 = a
				} else if a.Is6() && !egress6.IsValid() {
					egress6 = a
				}
			}
		}
	}
	for _, d := range st.Departments {
		hn.Departments = append(hn.Departments, hostnet.Department{Name: d.Name, ID: uint32(d.TableID), Table: d.TableID, Egress: egress4, Egress6: egress6})
	}
	// dsr backends answer from the VIP.
	serves := st.DSRVIPs()
	for _, s := range st.Segments {
		seg := hostnet.Segment{Name: s.Name, Department: s.Department, VLAN: uint16(s.VLAN)}
		var err error
		if seg.IPv4, err = netip.ParsePrefix(s.IPv4); err != nil {
			return hn, fmt.Errorf("segment %q: ipv4 %q: %w", s.Name, s.IPv4, err)
		}
		if seg.Gateway, err = netip.ParseAddr(s.Gateway); err != nil {
			return hn, fmt.Errorf("segment %q: gateway %q: %w", s.Name, s.Gateway, err)
		}
		if s.IPv6 != "" {
			if seg.IPv6, err = netip.ParsePrefix(s.IPv6); err != nil {
				return hn, fmt.Errorf("segment %q: ipv6 %q: %w", s.Name, s.IPv6, err)
			}
		}
		if s.Gateway6 != "" {
			if seg.Gateway6, err = netip.ParseAddr(s.Gateway6); err != nil {
				return hn, fmt.Errorf("segment %q: gateway6 %q: %w", s.Name, s.Gateway6, err)
			}
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
			if ifc.IPv4 != "" {
				p, err := netip.ParsePrefix(ifc.IPv4)
				if err != nil {
					return hn, fmt.Errorf("vm %q: ipv4 %q: %w", vm.Name, ifc.IPv4, err)
				}
				g.Addr = p.Addr()
			}
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
		if g.Addr, err = parseAddrOrPrefix(rg.IPv4); err != nil {
			return hn, fmt.Errorf("remote vm %q: ipv4 %q: %w", rg.VM, rg.IPv4, err)
		}
		if rg.IPv6 != "" {
			if g.Addr6, err = parseAddrOrPrefix(rg.IPv6); err != nil {
				return hn, fmt.Errorf("remote vm %q: ipv6 %q: %w", rg.VM, rg.IPv6, err)
			}
		}
		hn.Guests = append(hn.Guests, g)
	}
	if st.Address != "" {
		if p, err := parseAddrOrPrefix(st.Address); err == nil {
			hn.Management = append(hn.Management, netip.PrefixFrom(p, p.BitLen()))
		}
	}
	return hn, nil
}

func parseAddrOrPrefix(s string) (netip.Addr, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Addr(), err
	}
	return netip.ParseAddr(s)
}

// backendKey identifies a backend for health: address and the port it is checked on.
type backendKey struct {
	Service string
	Addr    netip.Addr
}

// lbPlan is what the load balancer and the VIP routes need from the desired state.
type lbPlan struct {
	services   []lb.Service
	vlanDomain map[uint16]uint32
	routes     map[netip.Addr][]viproute.NextHop
	// local backends per VIP, for status
	advertise []netip.Addr // public VIPs with at least one healthy backend somewhere
}

// loadBalancing turns services into LB services. healthy reports whether a backend is up
// (unknown backends are up until their checks say otherwise). hostAddr resolves a host name
// to its tunnel endpoint for dsr.
func loadBalancing(st *desired.State, self netip.Addr, healthy func(backendKey) bool, hostAddr func(string) (netip.Addr, bool)) (lbPlan, []error) {
	p := lbPlan{vlanDomain: map[uint16]uint32{}, routes: map[netip.Addr][]viproute.NextHop{}}
	var errs []error
	vlanOf := map[string]uint16{}
	for _, s := range st.Segments {
		vlanOf[s.Name] = uint16(s.VLAN)
		p.vlanDomain[uint16(s.VLAN)] = uint32(s.TableID)
	}
	for _, svc := range st.Services {
		vip, err := netip.ParseAddr(svc.VIP)
		if err != nil {
			errs = append(errs, fmt.Errorf("service %q: vip %q: %w", svc.Name, svc.VIP, err))
			continue
		}
		mode, err := lb.ParseMode(svc.Mode)
		if err != nil {
			errs = append(errs, fmt.Errorf("service %q: %w", svc.Name, err))
			continue
		}
		domain := uint32(0)
		if svc.Scope == "internal" {
			domain = uint32(svc.TableID)
		}
		// One LB backend per tunnel endpoint (dsr) or per real server (nat).
		byKey := map[string]lb.Backend{}
		var order []string
		anyHealthy := false
		for _, b := range svc.Backends {
			addr, err := netip.ParseAddr(b.Address)
			if err != nil {
				errs = append(errs, fmt.Errorf("service %q: backend %q: %w", svc.Name, b.Address, err))
				continue
			}
			if !healthy(backendKey{Service: svc.Name, Addr: addr}) {
				continue
			}
			anyHealthy = true
			w := uint32(max(b.Weight, 0))
			target := addr
			if mode == lb.DSR && b.Host != "" {
				ha, ok := hostAddr(b.Host)
				if !ok {
					errs = append(errs, fmt.Errorf("service %q: backend %s: address of host %q unknown", svc.Name, addr, b.Host))
					continue
				}
				target = ha
				if b.Host == st.Host && w > 0 {
					if vlan, ok := vlanOf[b.Segment]; ok {
						p.routes[vip] = append(p.routes[vip], viproute.NextHop{Addr: addr, Dev: netdev.BridgeName(vlan)})
					}
				}
			}
			k := target.String()
			cur, seen := byKey[k]
			if !seen {
				order = append(order, k)
				cur = lb.Backend{Addr: target}
			}
			cur.Weight += w
			byKey[k] = cur
		}
		if anyHealthy && svc.Scope != "internal" {
			p.advertise = append(p.advertise, vip)
		}
		for _, port := range svc.Ports {
			proto, err := lb.ParseProtocol(strings.ToLower(port.Protocol))
			if err != nil {
				errs = append(errs, fmt.Errorf("service %q: port %d: %w", svc.Name, port.Port, err))
				continue
			}
			ls := lb.Service{Name: fmt.Sprintf("%s/%d/%s", svc.Name, port.Port, proto), Mode: mode,
				VIP: lb.VIP{Domain: domain, Addr: vip, Port: uint16(port.Port), Proto: proto}}
			for _, k := range order {
				b := byKey[k]
				if mode == lb.NAT && port.TargetPort != 0 && port.TargetPort != port.Port {
					b.Port = uint16(port.TargetPort)
				}
				ls.Backends = append(ls.Backends, b)
			}
			p.services = append(p.services, ls)
		}
	}
	_ = self
	return p, errs
}
