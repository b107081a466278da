// Package reconcile computes the desired state of one host from the whole configuration:
// every host carries every segment and every service (any host may receive a VIP's traffic),
// its own BGP peers, and the VMs and volumes placed on it.
package reconcile

import (
	"net/netip"
	"slices"
	"time"

	"github.com/govcloud/govcloud/controlplane/config"
	"github.com/govcloud/govcloud/controlplane/desired"
)

// ForHost returns host's desired state, or nil when no such Host object exists.
func ForHost(st *config.State, host string, rev int64) *desired.State {
	h := st.Get(config.KindHost, host)
	if h == nil {
		return nil
	}
	hs := h.Spec.(*config.HostSpec)
	// Addresses in st are validated (config.Validate): one that does not parse is left unset.
	out := &desired.State{Host: host, Revision: rev, Uplink: hs.Uplink, Address: parseAddr(hs.Address),
		Departments: []desired.Department{}, Segments: []desired.Segment{}, Services: []desired.Service{},
		VMs: []desired.VM{}, Volumes: []desired.Volume{}, Hosts: map[string]netip.Addr{}}
	for _, o := range st.List(config.KindHost) {
		out.Hosts[o.Metadata.Name] = parseAddr(o.Spec.(*config.HostSpec).Address)
	}
	table := map[string]int{}
	for _, o := range st.List(config.KindDepartment) {
		d := o.Spec.(*config.DepartmentSpec)
		dd := desired.Department{Name: o.Metadata.Name, TableID: o.Status.TableID, Egress: parseAddr(o.Status.Egress[host])}
		if d.Quotas.BandwidthMbps != nil {
			dd.BandwidthMbps = *d.Quotas.BandwidthMbps
		}
		table[o.Metadata.Name] = o.Status.TableID
		out.Departments = append(out.Departments, dd)
	}
	segVLAN := map[string]int{}
	type segNet struct {
		name, dept string
		p4, p6     netip.Prefix
	}
	var nets []segNet
	for _, o := range st.List(config.KindSegment) {
		s := o.Spec.(*config.SegmentSpec)
		nets = append(nets, segNet{o.Metadata.Name, s.Department, s.Prefix4(), s.Prefix6()})
		ds := desired.Segment{Name: o.Metadata.Name, Department: s.Department, Fabric: s.FabricName(),
			VLAN: config.EffectiveVLAN(o), Prefix4: s.Prefix4(), Gateway4: s.Gateway4(), TableID: table[s.Department]}
		if s.IPv6 != "" {
			ds.Prefix6, ds.Gateway6 = s.Prefix6(), s.Gateway6Addr()
		}
		segVLAN[o.Metadata.Name] = ds.VLAN
		out.Segments = append(out.Segments, ds)
	}
	for _, o := range st.List(config.KindService) {
		s := o.Spec.(*config.ServiceSpec)
		ds := desired.Service{Name: o.Metadata.Name, Department: s.Department, VIP: config.EffectiveVIP(o),
			Scope: "public", Mode: s.Mode, Ports: []desired.Port{}, Backends: []desired.Backend{}, TableID: table[s.Department]}
		if s.BGP != nil {
			ds.LocalPref, ds.MED = s.BGP.LocalPref, s.BGP.MED
		}
		if p := config.ServicePool(st, o); p != nil {
			ds.Scope = p.Spec.(*config.AddressPool).ScopeName()
		}
		if ds.Mode == "" { // internal VIPs are dsr only (config.Validate refuses nat)
			ds.Mode = "nat"
			if ds.Scope == "internal" {
				ds.Mode = "dsr"
			}
		}
		for _, p := range s.Ports {
			dp := desired.Port{Port: p.Port, Protocol: p.Protocol, TargetPort: p.TargetPort}
			if dp.Protocol == "" {
				dp.Protocol = "tcp"
			}
			if dp.TargetPort == 0 {
				dp.TargetPort = p.Port
			}
			ds.Ports = append(ds.Ports, dp)
		}
		for _, b := range s.Backends {
			w := 1
			if b.Weight != nil {
				w = *b.Weight
			}
			if b.Address != "" {
				db := desired.Backend{Address: parseAddr(b.Address), Weight: w}
				if a := db.Address; a.IsValid() {
					for _, n := range nets {
						if n.dept == s.Department && (n.p4.Contains(a) || (n.p6.IsValid() && n.p6.Contains(a))) {
							db.Segment = n.name
						}
					}
				}
				ds.Backends = append(ds.Backends, db)
				continue
			}
			vm := st.Get(config.KindVM, b.VM)
			if vm == nil {
				continue
			}
			for _, n := range vm.Status.Networks {
				addr := n.IPv4
				if config.EffectiveVIP(o).Is6() {
					addr = n.IPv6
				}
				if addr != "" {
					ds.Backends = append(ds.Backends, desired.Backend{Address: parseAddr(addr), Weight: w, VM: b.VM, Host: vm.Status.Host, Segment: n.Segment})
					break
				}
			}
		}
		if h := s.HealthCheck; h != nil {
			dh := &desired.HealthCheck{Type: h.Type, Port: h.Port, Path: h.Path, IntervalMs: 5000, TimeoutMs: 2000,
				HealthyThreshold: h.HealthyThreshold, UnhealthyThreshold: h.UnhealthyThreshold}
			if d, err := time.ParseDuration(h.Interval); err == nil {
				dh.IntervalMs = d.Milliseconds()
			}
			if d, err := time.ParseDuration(h.Timeout); err == nil {
				dh.TimeoutMs = d.Milliseconds()
			}
			if dh.HealthyThreshold == 0 {
				dh.HealthyThreshold = 2
			}
			if dh.UnhealthyThreshold == 0 {
				dh.UnhealthyThreshold = 3
			}
			if dh.Type == "http" && dh.Path == "" {
				dh.Path = "/"
			}
			ds.HealthCheck = dh
		}
		out.Services = append(out.Services, ds)
	}
	if hs.ASN != 0 || len(hs.BGPPeers) > 0 {
		b := &desired.BGP{ASN: hs.ASN, RouterID: parseAddr(hs.RouterID), Peers: []desired.Peer{}}
		if h := hs.BGPHoldDown; h != nil {
			b.HoldDown = &desired.HoldDown{Off: h.Off, InitialMs: h.InitialMs, MaxMs: h.MaxMs}
		}
		if !b.RouterID.IsValid() && out.Address.Is4() {
			b.RouterID = out.Address
		}
		for _, p := range hs.BGPPeers {
			b.Peers = append(b.Peers, desired.Peer{Address: parseAddr(p.Address), ASN: p.ASN, PasswordFile: p.PasswordFile,
				PasswordEnv: p.PasswordEnv, GracefulRestart: p.GracefulRestart, Multihop: p.Multihop,
				HoldTime: p.HoldTime, Keepalive: p.Keepalive})
			if p.BFD != nil {
				b.Peers[len(b.Peers)-1].BFD = &desired.BFD{MinTxMs: p.BFD.MinTxMs, MinRxMs: p.BFD.MinRxMs, Multiplier: p.BFD.Multiplier}
			}
		}
		out.BGP = b
	}
	var vols, images []string
	for _, o := range st.List(config.KindVM) {
		if o.Status.Host == "" {
			continue // pending: runs nowhere, so no host routes to it
		}
		if o.Status.Host != host {
			// Elsewhere: this host's gateway routes to it without ARP across the trunk.
			for _, n := range o.Status.Networks {
				if a4 := parseAddr(n.IPv4); a4.IsValid() && n.MAC != "" {
					out.RemoteGuests = append(out.RemoteGuests, desired.RemoteGuest{VM: o.Metadata.Name, Host: o.Status.Host, Segment: n.Segment, MAC: n.MAC, Addr4: a4, Addr6: parseAddr(n.IPv6)})
				}
			}
			continue
		}
		s := o.Spec.(*config.VMSpec)
		vm := desired.VM{Name: o.Metadata.Name, Department: s.Department, VCPUs: s.VCPUs, MemoryMiB: s.MemoryMiB,
			Image: s.Image, Volumes: s.Volumes, Interfaces: []desired.Interface{}, FloatingIP: parseAddr(o.Status.FloatingIP), SSHKeys: s.SSHKeys,
			PowerState: s.PowerState, RestartGeneration: s.RestartGeneration}
		images = append(images, s.Image)
		for _, n := range o.Status.Networks {
			seg := st.Get(config.KindSegment, n.Segment)
			if seg == nil {
				continue
			}
			ss := seg.Spec.(*config.SegmentSpec)
			in := desired.Interface{Segment: n.Segment, VLAN: segVLAN[n.Segment], MAC: n.MAC, Gateway4: ss.Gateway4()}
			if a := parseAddr(n.IPv4); a.IsValid() {
				in.Prefix4 = netip.PrefixFrom(a, ss.Prefix4().Bits())
			}
			if a := parseAddr(n.IPv6); a.IsValid() && ss.Prefix6().IsValid() {
				in.Prefix6, in.Gateway6 = netip.PrefixFrom(a, ss.Prefix6().Bits()), ss.Gateway6Addr()
			}
			vm.Interfaces = append(vm.Interfaces, in)
		}
		vols = append(vols, s.Volumes...)
		out.VMs = append(out.VMs, vm)
	}
	out.Guards = guards(st, host)
	for _, o := range st.List(config.KindVolume) {
		// The host's volumes: those it holds (status.host, also with no VM using them), and
		// ones not yet held that a VM placed here uses (a state not allocated since volumes
		// had a host).
		if o.Status.Host == host || o.Status.Host == "" && slices.Contains(vols, o.Metadata.Name) {
			s := o.Spec.(*config.VolumeSpec)
			out.Volumes = append(out.Volumes, desired.Volume{Name: o.Metadata.Name, Department: s.Department, SizeGiB: s.SizeGiB, Image: s.Image, RestoreFrom: s.RestoreFrom})
			images = append(images, s.Image)
		}
	}
	for _, o := range st.List(config.KindImage) { // sorted by name
		if slices.Contains(images, o.Metadata.Name) {
			s := o.Spec.(*config.ImageSpec)
			out.Images = append(out.Images, desired.Image{Name: o.Metadata.Name, Source: s.Source, SHA256: s.SHA256, OS: s.OS})
		}
	}
	return out
}

// parseAddr parses a validated address; "" (or anything else that does not parse) is the zero
// Addr, which the desired state leaves out.
func parseAddr(s string) netip.Addr {
	a, _ := netip.ParseAddr(s)
	return a
}

// anywhere is a rule's sources when it names none: every address (the host firewall applies
// guards only to what comes from the department's segments).
var anywhere = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

// guards resolves the security policies of the VMs placed on host: for each VM some policy of
// its department selects, every rule of those policies with its sources as prefixes (a
// segment's, a CIDR, the addresses of the department's VMs with the labels).
func guards(st *config.State, host string) []desired.Guard {
	pols := st.List(config.KindSecurityPolicy)
	if len(pols) == 0 {
		return nil
	}
	vms := st.List(config.KindVM)
	var out []desired.Guard
	for _, o := range vms {
		if o.Status.Host != host {
			continue
		}
		dept := o.Spec.(*config.VMSpec).Department
		g := desired.Guard{VM: o.Metadata.Name, Policies: []string{}, Rules: []desired.GuardRule{}}
		for _, po := range pols {
			p := po.Spec.(*config.SecurityPolicySpec)
			if p.Department != dept || !config.Selects(p.Selector, o.Metadata.Labels) {
				continue
			}
			g.Policies = append(g.Policies, po.Metadata.Name)
			for _, r := range p.Allow {
				dr := desired.GuardRule{Policy: po.Metadata.Name, Sources: []netip.Prefix{}, Protocol: r.ProtocolName()}
				for _, port := range r.Ports {
					last := port.EndPort
					if last == 0 {
						last = port.Port
					}
					dr.Ports = append(dr.Ports, desired.PortRange{First: port.Port, Last: last})
				}
				if len(r.From) == 0 {
					dr.Sources = slices.Clone(anywhere)
				}
				for _, f := range r.From {
					switch {
					case f.Segment != "":
						if seg := st.Get(config.KindSegment, f.Segment); seg != nil {
							ss := seg.Spec.(*config.SegmentSpec)
							dr.Sources = appendPrefix(dr.Sources, ss.Prefix4())
							dr.Sources = appendPrefix(dr.Sources, ss.Prefix6())
						}
					case f.CIDR != "":
						if pf, err := netip.ParsePrefix(f.CIDR); err == nil {
							dr.Sources = appendPrefix(dr.Sources, pf.Masked())
						}
					case len(f.VMLabels) > 0:
						for _, src := range vms {
							if src.Spec.(*config.VMSpec).Department != dept || !config.Selects(f.VMLabels, src.Metadata.Labels) {
								continue
							}
							for _, n := range src.Status.Networks {
								for _, a := range []netip.Addr{parseAddr(n.IPv4), parseAddr(n.IPv6)} {
									if a.IsValid() {
										dr.Sources = appendPrefix(dr.Sources, netip.PrefixFrom(a, a.BitLen()))
									}
								}
							}
						}
					}
				}
				g.Rules = append(g.Rules, dr)
			}
		}
		if len(g.Policies) > 0 {
			out = append(out, g)
		}
	}
	return out
}

func appendPrefix(ps []netip.Prefix, p netip.Prefix) []netip.Prefix {
	if !p.IsValid() || slices.Contains(ps, p) {
		return ps
	}
	return append(ps, p)
}
