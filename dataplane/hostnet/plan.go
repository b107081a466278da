package hostnet

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/govcloud/govcloud/dataplane/firewall"
	"github.com/govcloud/govcloud/dataplane/netdev"
	"github.com/govcloud/govcloud/dataplane/trunk"
)

// Plan is what Set asks of the kernel for one HostNetwork, worked out without reading the
// kernel: sysctls, segment bridges, guest ports, neighbours, policy rules, routes, trunk
// entries and the firewall. It is a pure function of its input, so it has golden tests without
// root (TestPlanGolden); Set applies it, leaving out what depends on a segment it could not make.
type Plan struct {
	Sysctls  []Sysctl // host-wide; per-bridge ones are in Segments
	Segments []SegmentPlan
	Ports    []PortPlan // local guest ports and the bridge each joins
	// Rates are the departments' bandwidth limits (those with one); Policed the local guest
	// ports that carry the limiter (the ports of those departments).
	Rates     []RatePlan
	Policed   []PolicedPort
	Neighbors []netdev.Neighbor
	Rules     []netdev.Rule
	Routes    []netdev.Route
	// Firewall is the nftables configuration, less the uplink's own prefixes (management,
	// read from the kernel when the plan is applied).
	Firewall firewall.Config
}

// Sysctl is one kernel setting Set makes (and Teardown restores).
type Sysctl struct{ Key, Value string }

// SegmentPlan is one segment's bridge, with its trunk entry (Ifindex filled at apply).
type SegmentPlan struct {
	Name       string
	Department string
	Bridge     netdev.BridgeSpec
	Trunk      trunk.Segment
	Sysctls    []Sysctl // on the bridge, once it exists
}

// PortPlan is a local guest port joining its segment's bridge.
type PortPlan struct {
	Ifname, Bridge, Segment string
}

// RatePlan is one department's bandwidth limit in the trunk's rate table.
type RatePlan struct {
	Department string
	ID         uint32
	Rate       trunk.Rate
}

// PolicedPort is a local guest port whose traffic is charged to its department's buckets.
type PolicedPort struct {
	Ifname string
	Port   trunk.GuestPort
}

// PlanFor works out the Plan of desired, with the department rules at rulePriority.
func PlanFor(desired HostNetwork, rulePriority int) (*Plan, error) {
	d, err := desired.normalize()
	if err != nil {
		return nil, fmt.Errorf("host network: %w", err)
	}
	return d.plan(rulePriority), nil
}

// plan is PlanFor of a normalized HostNetwork.
func (d HostNetwork) plan(rulePriority int) *Plan {
	p := &Plan{}
	depts := map[string]Department{}
	for _, dp := range d.Departments {
		depts[dp.Name] = dp
	}
	segs := map[string]Segment{}
	v6 := false
	for _, s := range d.Segments {
		segs[s.Name] = s
		v6 = v6 || s.IPv6.IsValid()
	}

	// Forwarding; the host's replies to a tenant (ICMP echo replies and errors, TCP resets
	// and SYN-ACKs) take the mark of the packet they answer: a tenant's packets carry their
	// department's (nftables), so the replies are routed in its table. The main table has no
	// segment routes.
	if len(d.Segments) > 0 {
		p.Sysctls = append(p.Sysctls, Sysctl{"net.ipv4.ip_forward", "1"})
		if v6 {
			p.Sysctls = append(p.Sysctls, Sysctl{"net.ipv6.conf.all.forwarding", "1"})
		}
		p.Sysctls = append(p.Sysctls, Sysctl{"net.ipv4.fwmark_reflect", "1"}, Sysctl{"net.ipv4.tcp_fwmark_accept", "1"},
			Sysctl{"net.ipv6.fwmark_reflect", "1"})
		// Multipath VIP routes (viproute) spread flows by their 5-tuple, not by address pair:
		// one client's connections reach every backend.
		p.Sysctls = append(p.Sysctls, Sysctl{"net.ipv4.fib_multipath_hash_policy", "1"}, Sysctl{"net.ipv6.fib_multipath_hash_policy", "1"})
	}
	// Security policies filter in the inet forward hook: bridged IP must pass it too.
	if len(d.Guards) > 0 {
		p.Sysctls = append(p.Sysctls, Sysctl{"net.bridge.bridge-nf-call-iptables", "1"}, Sysctl{"net.bridge.bridge-nf-call-ip6tables", "1"})
	}

	// Segments: bridge with the gateway addresses (no prefix route: segment routes live only
	// in the department's table), trunk entry, and bridges never answering ARP for addresses
	// that are not theirs.
	for _, s := range d.Segments {
		addrs := []netip.Prefix{netip.PrefixFrom(s.Gateway, s.IPv4.Bits())}
		if s.IPv6.IsValid() {
			addrs = append(addrs, netip.PrefixFrom(s.Gateway6, s.IPv6.Bits()))
		}
		p.Segments = append(p.Segments, SegmentPlan{Name: s.Name, Department: s.Department,
			Bridge:  netdev.BridgeSpec{VLAN: s.VLAN, MAC: d.GatewayMAC, Addrs: addrs},
			Trunk:   trunk.Segment{VLAN: s.VLAN, Department: depts[s.Department].ID, ID: s.ID, Gateway4: s.Gateway, Gateway6: s.Gateway6},
			Sysctls: []Sysctl{{"net.ipv4.conf." + bridgeOf(s) + ".arp_ignore", "1"}}})
	}

	// Guest ports and permanent neighbours for every known guest (a static FDB entry toward
	// the trunk for remote ones), so the distributed gateway never ARPs across the trunk.
	for _, g := range d.Guests {
		s := segs[g.Segment]
		if g.Ifname != "" {
			p.Ports = append(p.Ports, PortPlan{Ifname: g.Ifname, Bridge: bridgeOf(s), Segment: s.Name})
			if dp := depts[s.Department]; dp.BandwidthMbps > 0 {
				p.Policed = append(p.Policed, PolicedPort{Ifname: g.Ifname, Port: trunk.GuestPort{Department: dp.ID, Segment: s.ID}})
			}
		}
		fdb := ""
		if g.Ifname == "" {
			fdb = netdev.BridgePortName(s.VLAN)
		}
		for _, a := range []netip.Addr{g.Addr, g.Addr6} {
			if a.IsValid() {
				p.Neighbors = append(p.Neighbors, netdev.Neighbor{Dev: bridgeOf(s), IP: a, MAC: g.MAC.String(), FDB: fdb})
				fdb = "" // one FDB entry per guest is enough
			}
		}
		if fdb != "" { // a remote guest without addresses still gets its FDB entry
			p.Neighbors = append(p.Neighbors, netdev.Neighbor{Dev: bridgeOf(s), MAC: g.MAC.String(), FDB: fdb})
		}
	}

	// VRF-lite: a table per department, chosen by the bridge a packet came in on, or by the
	// department's mark on the host's replies to a tenant's connection.
	used := map[string]bool{}
	for _, s := range d.Segments {
		t := depts[s.Department].Table
		used[s.Department] = true
		for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
			p.Rules = append(p.Rules, netdev.Rule{Family: fam, IifName: bridgeOf(s), Table: t, Priority: rulePriority})
		}
		p.Routes = append(p.Routes, netdev.Route{Table: t, Dst: s.IPv4, Dev: bridgeOf(s), Src: s.Gateway})
		if s.IPv6.IsValid() {
			p.Routes = append(p.Routes, netdev.Route{Table: t, Dst: s.IPv6, Dev: bridgeOf(s), Src: s.Gateway6})
		}
	}
	for _, dp := range d.Departments {
		if !used[dp.Name] {
			continue
		}
		for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
			p.Rules = append(p.Rules, netdev.Rule{Family: fam, Mark: uint32(dp.Table), Table: dp.Table, Priority: rulePriority})
		}
		v4 := netdev.Route{Table: dp.Table, Dst: netip.MustParsePrefix("0.0.0.0/0")}
		if dp.Egress.Is4() {
			v4.Dev, v4.Via = d.Uplink, dp.Egress
		}
		v6 := netdev.Route{Table: dp.Table, Dst: netip.MustParsePrefix("::/0")}
		if dp.Egress6.Is6() {
			v6.Dev, v6.Via = d.Uplink, dp.Egress6
		}
		p.Routes = append(p.Routes, v4, v6)
	}

	for _, dp := range d.Departments {
		if dp.BandwidthMbps > 0 {
			p.Rates = append(p.Rates, RatePlan{Department: dp.Name, ID: dp.ID, Rate: trunk.MbpsRate(dp.BandwidthMbps)})
		}
	}

	p.Firewall = d.firewallConfig(segs, depts)
	return p
}

// firewallConfig is the nftables configuration of d, less the uplink's prefixes.
func (d HostNetwork) firewallConfig(segs map[string]Segment, depts map[string]Department) firewall.Config {
	var cfg firewall.Config
	byDept := map[string]int{}
	for _, dp := range d.Departments {
		byDept[dp.Name] = len(cfg.Departments)
		cfg.Departments = append(cfg.Departments, firewall.Department{ID: dp.ID, Mark: uint32(dp.Table)})
	}
	for _, s := range d.Segments {
		fd := &cfg.Departments[byDept[s.Department]]
		fd.Bridges = append(fd.Bridges, bridgeOf(s))
		fd.Prefixes = append(fd.Prefixes, s.IPv4)
		if s.IPv6.IsValid() {
			fd.Prefixes = append(fd.Prefixes, s.IPv6)
		}
		cfg.Gateways = append(cfg.Gateways, firewall.Gateway{Bridge: bridgeOf(s), Addr: s.Gateway})
		if s.Gateway6.IsValid() {
			cfg.Gateways = append(cfg.Gateways, firewall.Gateway{Bridge: bridgeOf(s), Addr: s.Gateway6})
		}
	}
	for _, g := range d.Guests {
		if g.Ifname == "" {
			continue
		}
		p := firewall.Port{Ifname: g.Ifname, MAC: g.MAC, Dept: depts[segs[g.Segment].Department].ID}
		for _, a := range append([]netip.Addr{g.Addr, g.Addr6}, g.Serves...) {
			if a.IsValid() && !slices.Contains(p.Addrs, a) {
				p.Addrs = append(p.Addrs, a)
			}
		}
		cfg.Ports = append(cfg.Ports, p)
	}
	cfg.Management = slices.Clone(d.Management)
	for _, v := range d.VIPPorts {
		cfg.VIPPorts = append(cfg.VIPPorts, firewall.VIPPort{Bridge: bridgeOf(segs[v.Segment]), VIP: v.VIP, Proto: v.Proto, Port: v.Port})
	}
	cfg.TenantAllow = d.TenantAllow
	for _, gd := range d.Guards {
		for _, g := range d.Guests {
			if g.Ifname != gd.Ifname {
				continue
			}
			s := segs[g.Segment]
			fg := firewall.Guard{Name: g.Ifname, Bridge: bridgeOf(s), Dept: depts[s.Department].ID, Rules: gd.Rules}
			for _, a := range []netip.Addr{g.Addr, g.Addr6} {
				if a.IsValid() {
					fg.Addrs = append(fg.Addrs, a)
				}
			}
			cfg.Guards = append(cfg.Guards, fg)
		}
	}
	// What may come in from the fabric on each segment's trunk port: its remote guests, and IP
	// routed by a peer host's gateway (from the department's guests or VIPs).
	cfg.GatewayMAC = d.GatewayMAC
	remote := map[string][]firewall.Remote{}
	for _, g := range d.Guests {
		if g.Ifname != "" {
			continue
		}
		r := firewall.Remote{MAC: g.MAC}
		for _, a := range append([]netip.Addr{g.Addr, g.Addr6}, g.Serves...) {
			if a.IsValid() && !slices.Contains(r.Addrs, a) {
				r.Addrs = append(r.Addrs, a)
			}
		}
		remote[g.Segment] = append(remote[g.Segment], r)
	}
	for _, s := range d.Segments {
		var prefixes []netip.Prefix
		for _, o := range d.Segments {
			if o.Department == s.Department {
				prefixes = append(prefixes, o.IPv4)
				if o.IPv6.IsValid() {
					prefixes = append(prefixes, o.IPv6)
				}
			}
		}
		for _, v := range depts[s.Department].VIPs {
			if v.IsValid() {
				prefixes = append(prefixes, netip.PrefixFrom(v, v.BitLen()))
			}
		}
		cfg.FabricPorts = append(cfg.FabricPorts, firewall.FabricPort{Ifname: netdev.BridgePortName(s.VLAN),
			Dept: depts[s.Department].ID, Guests: remote[s.Name], Prefixes: prefixes})
	}
	return cfg
}

// String renders the plan one item a line, for golden tests and debugging.
func (p *Plan) String() string {
	var b strings.Builder
	for _, s := range p.Sysctls {
		fmt.Fprintf(&b, "sysctl %s=%s\n", s.Key, s.Value)
	}
	for _, s := range p.Segments {
		fmt.Fprintf(&b, "segment %s (%s): bridge %s mac %s addrs %v; trunk vlan %d dept %d id %d gw %s %s\n", s.Name, s.Department,
			netdev.BridgeName(s.Bridge.VLAN), s.Bridge.MAC, s.Bridge.Addrs, s.Trunk.VLAN, s.Trunk.Department, s.Trunk.ID, addrOrDash(s.Trunk.Gateway4), addrOrDash(s.Trunk.Gateway6))
		for _, x := range s.Sysctls {
			fmt.Fprintf(&b, "  sysctl %s=%s\n", x.Key, x.Value)
		}
	}
	for _, g := range p.Ports {
		fmt.Fprintf(&b, "port %s master %s (segment %s)\n", g.Ifname, g.Bridge, g.Segment)
	}
	for _, r := range p.Rates {
		fmt.Fprintf(&b, "rate %s (dept %d) %d bit/s burst %d bytes, each direction\n", r.Department, r.ID, r.Rate.BitsPerSecond, r.Rate.BurstBytes)
	}
	for _, g := range p.Policed {
		fmt.Fprintf(&b, "police port %s dept %d segment %d\n", g.Ifname, g.Port.Department, g.Port.Segment)
	}
	for _, n := range p.Neighbors {
		fmt.Fprintf(&b, "neigh %s dev %s lladdr %s", addrOrDash(n.IP), n.Dev, n.MAC)
		if n.FDB != "" {
			fmt.Fprintf(&b, " fdb %s", n.FDB)
		}
		b.WriteByte('\n')
	}
	for _, r := range p.Rules {
		fmt.Fprintf(&b, "rule %s\n", r)
	}
	for _, r := range p.Routes {
		fmt.Fprintf(&b, "route %s\n", r)
	}
	f := p.Firewall
	for _, d := range f.Departments {
		fmt.Fprintf(&b, "firewall department %d mark %#x bridges %v prefixes %v\n", d.ID, d.Mark, d.Bridges, d.Prefixes)
	}
	for _, g := range f.Gateways {
		fmt.Fprintf(&b, "firewall gateway %s %s\n", g.Bridge, g.Addr)
	}
	for _, pt := range f.Ports {
		fmt.Fprintf(&b, "firewall port %s mac %s dept %d addrs %v\n", pt.Ifname, pt.MAC, pt.Dept, pt.Addrs)
	}
	for _, v := range f.VIPPorts {
		fmt.Fprintf(&b, "firewall vip %s %s proto %d port %d\n", v.Bridge, v.VIP, v.Proto, v.Port)
	}
	for _, m := range f.Management {
		fmt.Fprintf(&b, "firewall management %s\n", m)
	}
	for _, a := range f.TenantAllow {
		fmt.Fprintf(&b, "firewall tenant-allow proto %d %s port %d\n", a.Proto, a.Addr, a.Port)
	}
	fmt.Fprintf(&b, "firewall gateway-mac %s\n", f.GatewayMAC)
	for _, fp := range f.FabricPorts {
		fmt.Fprintf(&b, "firewall fabric-port %s dept %d prefixes %v", fp.Ifname, fp.Dept, fp.Prefixes)
		for _, g := range fp.Guests {
			fmt.Fprintf(&b, " %s%v", g.MAC, g.Addrs)
		}
		b.WriteByte('\n')
	}
	for _, g := range f.Guards {
		fmt.Fprintf(&b, "firewall guard %s bridge %s dept %d addrs %v rules %v\n", g.Name, g.Bridge, g.Dept, g.Addrs, g.Rules)
	}
	return b.String()
}

func addrOrDash(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}
