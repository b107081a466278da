package config

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// VLAN limits (802.1Q: 0 and 4095 are reserved).
const (
	MinVLAN = 1
	MaxVLAN = 4094
)

// ValidateObject checks one object on its own.
func ValidateObject(o *Object) Errors {
	var es Errors
	bad := func(field, value, format string, args ...any) {
		es = append(es, errAt(o, field, value, format, args...))
	}
	need := func(field, value string) bool {
		if value == "" {
			bad(field, "", "required")
			return false
		}
		return true
	}
	nonNeg := func(field string, p *int) {
		if p != nil && *p < 0 {
			bad(field, strconv.Itoa(*p), "must not be negative")
		}
	}
	switch s := o.Spec.(type) {
	case *DepartmentSpec:
		nonNeg("spec.quotas.vcpus", s.Quotas.VCPUs)
		nonNeg("spec.quotas.memoryGiB", s.Quotas.MemoryGiB)
		nonNeg("spec.quotas.storageGiB", s.Quotas.StorageGiB)
		nonNeg("spec.quotas.bandwidthMbps", s.Quotas.BandwidthMbps)
	case *SegmentSpec:
		need("spec.department", s.Department)
		if s.Fabric != "" && !nameRE.MatchString(s.Fabric) {
			bad("spec.fabric", s.Fabric, "must be a lower-case name")
		}
		if s.VLAN != nil && (*s.VLAN < MinVLAN || *s.VLAN > MaxVLAN) {
			bad("spec.vlan", strconv.Itoa(*s.VLAN), "VLAN ID must be from %d to %d (0 and 4095 are reserved); omit it to have one allocated", MinVLAN, MaxVLAN)
		}
		if need("spec.ipv4", s.IPv4) {
			if p, ok := prefix(bad, "spec.ipv4", s.IPv4, false); ok {
				if p.Bits() > 30 {
					bad("spec.ipv4", s.IPv4, "prefix too small for hosts (want /30 or larger)")
				} else if s.Gateway != "" {
					gatewayIn(bad, "spec.gateway", s.Gateway, p)
				}
			}
		}
		if s.IPv6 != "" {
			if p, ok := prefix(bad, "spec.ipv6", s.IPv6, true); ok && s.Gateway6 != "" {
				gatewayIn(bad, "spec.gateway6", s.Gateway6, p)
			}
		} else if s.Gateway6 != "" {
			bad("spec.gateway6", s.Gateway6, "given without spec.ipv6")
		}
	case *AddressPool:
		if len(s.CIDRs) == 0 {
			bad("spec.cidrs", "", "at least one CIDR required")
		}
		var ps []netip.Prefix
		for i, c := range s.CIDRs {
			f := fmt.Sprintf("spec.cidrs[%d]", i)
			if p, ok := prefix(bad, f, c, c != "" && strings.Contains(c, ":")); ok {
				for _, q := range ps {
					if q.Overlaps(p) {
						bad(f, c, "overlaps %s in the same pool", q)
					}
				}
				ps = append(ps, p)
			}
		}
		if len(s.Departments) == 0 {
			bad("spec.departments", "", "list the departments that may draw from this pool")
		}
		if s.Scope != "" && s.Scope != "public" && s.Scope != "internal" {
			bad("spec.scope", s.Scope, "want public or internal")
		}
	case *ServiceSpec:
		need("spec.department", s.Department)
		if s.IPFamily != "" && s.IPFamily != "ipv4" && s.IPFamily != "ipv6" {
			bad("spec.ipFamily", s.IPFamily, "want ipv4 or ipv6")
		}
		if s.VIP != "" {
			a, err := netip.ParseAddr(s.VIP)
			if err != nil || a.Zone() != "" {
				bad("spec.vip", s.VIP, "not an IP address")
			} else if (s.IPFamily == "ipv4" && !a.Is4()) || (s.IPFamily == "ipv6" && !a.Is6()) {
				bad("spec.vip", s.VIP, "does not match ipFamily %s", s.IPFamily)
			}
		}
		if len(s.Ports) == 0 {
			bad("spec.ports", "", "at least one port required")
		}
		seen := map[string]int{}
		for i, p := range s.Ports {
			f := fmt.Sprintf("spec.ports[%d]", i)
			if p.Port < 1 || p.Port > 65535 {
				bad(f+".port", strconv.Itoa(p.Port), "must be from 1 to 65535")
			}
			if p.TargetPort < 0 || p.TargetPort > 65535 {
				bad(f+".targetPort", strconv.Itoa(p.TargetPort), "must be from 1 to 65535")
			}
			proto := p.Protocol
			if proto == "" {
				proto = "tcp"
			}
			if proto != "tcp" && proto != "udp" {
				bad(f+".protocol", p.Protocol, "want tcp or udp")
			}
			k := fmt.Sprintf("%d/%s", p.Port, proto)
			if j, dup := seen[k]; dup {
				bad(f, k, "same port as spec.ports[%d]", j)
			}
			seen[k] = i
		}
		for i, b := range s.Backends {
			f := fmt.Sprintf("spec.backends[%d]", i)
			switch {
			case (b.VM == "") == (b.Address == ""):
				bad(f, "", "give exactly one of vm or address")
			case b.Address != "":
				if a, err := netip.ParseAddr(b.Address); err != nil || a.Zone() != "" {
					bad(f+".address", b.Address, "not an IP address")
				}
			}
			if b.Weight != nil && (*b.Weight < 0 || *b.Weight > 65535) {
				bad(f+".weight", strconv.Itoa(*b.Weight), "must be from 0 to 65535")
			}
		}
		if h := s.HealthCheck; h != nil {
			if h.Type != "tcp" && h.Type != "http" {
				bad("spec.healthCheck.type", h.Type, "want tcp or http")
			}
			if h.Path != "" && h.Type != "http" {
				bad("spec.healthCheck.path", h.Path, "only for type http")
			}
			if h.Port < 0 || h.Port > 65535 {
				bad("spec.healthCheck.port", strconv.Itoa(h.Port), "must be from 1 to 65535")
			}
			for f, d := range map[string]string{"spec.healthCheck.interval": h.Interval, "spec.healthCheck.timeout": h.Timeout} {
				if d != "" {
					if v, err := time.ParseDuration(d); err != nil || v <= 0 {
						bad(f, d, "want a positive duration such as 5s")
					}
				}
			}
			if h.HealthyThreshold < 0 {
				bad("spec.healthCheck.healthyThreshold", strconv.Itoa(h.HealthyThreshold), "must not be negative")
			}
			if h.UnhealthyThreshold < 0 {
				bad("spec.healthCheck.unhealthyThreshold", strconv.Itoa(h.UnhealthyThreshold), "must not be negative")
			}
		}
		if s.Mode != "" && s.Mode != "nat" && s.Mode != "dsr" {
			bad("spec.mode", s.Mode, "want nat or dsr")
		}
	case *HostSpec:
		need("spec.uplink", s.Uplink)
		if need("spec.address", s.Address) {
			if _, err := netip.ParseAddr(s.Address); err != nil {
				bad("spec.address", s.Address, "not an IP address")
			}
		}
		if s.RouterID != "" {
			if a, err := netip.ParseAddr(s.RouterID); err != nil || !a.Is4() {
				bad("spec.routerID", s.RouterID, "want an IPv4 address")
			}
		}
		for i, p := range s.BGPPeers {
			f := fmt.Sprintf("spec.bgpPeers[%d]", i)
			if _, err := netip.ParseAddr(p.Address); err != nil {
				bad(f+".address", p.Address, "not an IP address")
			}
			if p.ASN == 0 {
				bad(f+".asn", "0", "required (1-4294967295)")
			}
			if p.PasswordFile != "" && p.PasswordEnv != "" {
				bad(f, "", "give passwordFile or passwordEnv, not both")
			}
			if p.Multihop < 0 || p.Multihop > 255 {
				bad(f+".multihop", strconv.Itoa(p.Multihop), "must be from 0 to 255")
			}
			if p.HoldTime != 0 && (p.HoldTime < 3 || p.HoldTime > 65535) {
				bad(f+".holdTime", strconv.Itoa(p.HoldTime), "must be 0 (default) or from 3 to 65535 seconds")
			}
			if p.Keepalive < 0 || (p.HoldTime != 0 && p.Keepalive*3 > p.HoldTime) {
				bad(f+".keepalive", strconv.Itoa(p.Keepalive), "must not be negative nor more than a third of holdTime")
			}
		}
		if len(s.BGPPeers) > 0 && s.ASN == 0 {
			bad("spec.asn", "", "required when bgpPeers are given")
		}
	case *VMSpec:
		need("spec.department", s.Department)
		if s.VCPUs < 1 || s.VCPUs > 1024 {
			bad("spec.vcpus", strconv.Itoa(s.VCPUs), "must be from 1 to 1024")
		}
		if s.MemoryMiB < 16 {
			bad("spec.memoryMiB", strconv.Itoa(s.MemoryMiB), "must be at least 16")
		}
		if len(s.Networks) == 0 {
			bad("spec.networks", "", "at least one network (segment) required")
		}
		for i, n := range s.Networks {
			f := fmt.Sprintf("spec.networks[%d]", i)
			need(f+".segment", n.Segment)
			if n.IPv4 != "" {
				if a, err := netip.ParseAddr(n.IPv4); err != nil || !a.Is4() {
					bad(f+".ipv4", n.IPv4, "want an IPv4 address")
				}
			}
			if n.IPv6 != "" {
				if a, err := netip.ParseAddr(n.IPv6); err != nil || !a.Is6() {
					bad(f+".ipv6", n.IPv6, "want an IPv6 address")
				}
			}
		}
	case *VolumeSpec:
		need("spec.department", s.Department)
		if s.SizeGiB < 1 {
			bad("spec.sizeGiB", strconv.Itoa(s.SizeGiB), "must be at least 1")
		}
	}
	return es
}

func prefix(bad func(string, string, string, ...any), field, s string, v6 bool) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		bad(field, s, "not a CIDR prefix")
	case p.Addr().Is6() != v6 || p.Addr().Is4In6():
		if v6 {
			bad(field, s, "want an IPv6 prefix")
		} else {
			bad(field, s, "want an IPv4 prefix")
		}
	case p.Masked() != p:
		bad(field, s, "host bits set (did you mean %s?)", p.Masked())
	default:
		return p, true
	}
	return netip.Prefix{}, false
}

func gatewayIn(bad func(string, string, string, ...any), field, s string, p netip.Prefix) {
	g, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		bad(field, s, "not an IP address")
	case !p.Contains(g):
		bad(field, s, "gateway is outside the segment %s", p)
	case g == p.Addr():
		bad(field, s, "gateway is the network address of %s", p)
	case g.Is4() && g == lastAddr(p):
		bad(field, s, "gateway is the broadcast address of %s", p)
	}
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range a {
		for b := 0; b < 8; b++ {
			if i*8+b >= bits {
				a[i] |= 0x80 >> b
			}
		}
	}
	r, _ := netip.AddrFromSlice(a)
	return r
}

// LastAddr is the highest address of p (the IPv4 broadcast address).
func LastAddr(p netip.Prefix) netip.Addr { return lastAddr(p) }

// Prefix4 returns a segment's IPv4 prefix (valid after validation).
func (s *SegmentSpec) Prefix4() netip.Prefix { p, _ := netip.ParsePrefix(s.IPv4); return p }

// Prefix6 returns a segment's IPv6 prefix (zero when none).
func (s *SegmentSpec) Prefix6() netip.Prefix { p, _ := netip.ParsePrefix(s.IPv6); return p }

// Gateway4 returns the IPv4 gateway: the one given or the first host address.
func (s *SegmentSpec) Gateway4() netip.Addr {
	if g, err := netip.ParseAddr(s.Gateway); err == nil {
		return g
	}
	return s.Prefix4().Addr().Next()
}

// Gateway6Addr returns the IPv6 gateway: the one given or the first address after the prefix's.
func (s *SegmentSpec) Gateway6Addr() netip.Addr {
	if g, err := netip.ParseAddr(s.Gateway6); err == nil {
		return g
	}
	p := s.Prefix6()
	if !p.IsValid() {
		return netip.Addr{}
	}
	return p.Addr().Next()
}

// FabricName returns the segment's fabric ("default" when omitted).
func (s *SegmentSpec) FabricName() string {
	if s.Fabric == "" {
		return "default"
	}
	return s.Fabric
}

// Prefixes returns a pool's prefixes.
func (p *AddressPool) Prefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, c := range p.CIDRs {
		if q, err := netip.ParsePrefix(c); err == nil {
			out = append(out, q)
		}
	}
	return out
}

// ScopeName returns public or internal.
func (p *AddressPool) ScopeName() string {
	if p.Scope == "" {
		return "public"
	}
	return p.Scope
}

// Allows says whether department may draw from the pool.
func (p *AddressPool) Allows(department string) bool {
	return slices.Contains(p.Departments, department)
}

// EffectiveVLAN is the VLAN a segment uses: given or allocated (0 when pending).
func EffectiveVLAN(o *Object) int {
	if s := o.Spec.(*SegmentSpec); s.VLAN != nil {
		return *s.VLAN
	}
	return o.Status.VLAN
}

// EffectiveVIP is the VIP a service uses: given or allocated (invalid when pending).
func EffectiveVIP(o *Object) netip.Addr {
	s := o.Spec.(*ServiceSpec)
	v := s.VIP
	if v == "" {
		v = o.Status.VIP
	}
	a, _ := netip.ParseAddr(v)
	return a
}

// blame picks which of two clashing objects an error is reported on: the one from the input.
func blame(a, b *Object) (*Object, *Object) {
	if a.Source == nil && b.Source != nil {
		return b, a
	}
	if a.Source != nil && b.Source != nil && b.Source.Doc > a.Source.Doc {
		return b, a
	}
	return a, b
}

// Validate checks the objects of a whole state together: references, overlaps inside a
// department, duplicate VLANs per fabric, VIPs inside the department's pools, backends inside
// the department, static addresses and quotas. Allocation is not its job, but values already
// allocated (status) take part in the duplicate checks.
func Validate(st *State) Errors {
	var es Errors
	depts := map[string]*Object{}
	for _, o := range st.List(KindDepartment) {
		depts[o.Metadata.Name] = o
	}
	refDept := func(o *Object, d string) {
		if d != "" && depts[d] == nil {
			es = append(es, errAt(o, "spec.department", d, "unknown department"))
		}
	}
	segs := st.List(KindSegment)
	pools := st.List(KindAddressPool)
	segsOf := map[string][]*Object{}
	vlans := map[string]*Object{}
	for _, o := range segs {
		s := o.Spec.(*SegmentSpec)
		refDept(o, s.Department)
		for _, other := range segsOf[s.Department] {
			t := other.Spec.(*SegmentSpec)
			if s.Prefix4().Overlaps(t.Prefix4()) {
				x, y := blame(o, other)
				es = append(es, errAt(x, "spec.ipv4", x.Spec.(*SegmentSpec).IPv4, "overlaps %s of segment %q in the same department %q (overlap is allowed only across departments)", y.Spec.(*SegmentSpec).IPv4, y.Metadata.Name, s.Department))
			}
			if s.Prefix6().IsValid() && t.Prefix6().IsValid() && s.Prefix6().Overlaps(t.Prefix6()) {
				x, y := blame(o, other)
				es = append(es, errAt(x, "spec.ipv6", x.Spec.(*SegmentSpec).IPv6, "overlaps %s of segment %q in the same department %q", y.Spec.(*SegmentSpec).IPv6, y.Metadata.Name, s.Department))
			}
		}
		segsOf[s.Department] = append(segsOf[s.Department], o)
		if v := EffectiveVLAN(o); v != 0 {
			k := s.FabricName() + "/" + strconv.Itoa(v)
			if other := vlans[k]; other != nil {
				x, y := blame(o, other)
				es = append(es, errAt(x, "spec.vlan", strconv.Itoa(v), "duplicate VLAN: already used by segment %q on fabric %q", y.Metadata.Name, s.FabricName()))
			} else {
				vlans[k] = o
			}
		}
	}
	for i, o := range pools {
		p := o.Spec.(*AddressPool)
		for j, d := range p.Departments {
			if depts[d] == nil {
				es = append(es, errAt(o, fmt.Sprintf("spec.departments[%d]", j), d, "unknown department"))
			}
		}
		for _, other := range pools[:i] {
			for _, a := range p.Prefixes() {
				for _, b := range other.Spec.(*AddressPool).Prefixes() {
					if a.Overlaps(b) {
						x, _ := blame(o, other)
						es = append(es, errAt(x, "spec.cidrs", a.String(), "overlaps %s of address pool %q", b, other.Metadata.Name))
					}
				}
			}
		}
	}
	// Segment lookups for addresses.
	type segNet struct {
		o      *Object
		p4, p6 netip.Prefix
	}
	nets := make([]segNet, 0, len(segs))
	for _, o := range segs {
		s := o.Spec.(*SegmentSpec)
		nets = append(nets, segNet{o, s.Prefix4(), s.Prefix6()})
	}
	segFor := func(a netip.Addr) []*Object {
		var out []*Object
		for _, n := range nets {
			if n.p4.Contains(a) || (n.p6.IsValid() && n.p6.Contains(a)) {
				out = append(out, n.o)
			}
		}
		return out
	}
	vms := map[string]*Object{}
	for _, o := range st.List(KindVM) {
		vms[o.Metadata.Name] = o
	}
	vols := st.List(KindVolume)
	volOwner := map[string]string{}
	for _, o := range vols {
		refDept(o, o.Spec.(*VolumeSpec).Department)
	}
	hosts := map[string]*Object{}
	hostAddr := map[string]*Object{}
	for _, o := range st.List(KindHost) {
		hosts[o.Metadata.Name] = o
		a := o.Spec.(*HostSpec).Address
		if other := hostAddr[a]; other != nil {
			x, y := blame(o, other)
			es = append(es, errAt(x, "spec.address", a, "address already used by host %q", y.Metadata.Name))
		} else {
			hostAddr[a] = o
		}
	}
	staticIPs := map[netip.Addr]string{}
	for _, o := range st.List(KindVM) {
		s := o.Spec.(*VMSpec)
		refDept(o, s.Department)
		if s.Host != "" && hosts[s.Host] == nil {
			es = append(es, errAt(o, "spec.host", s.Host, "unknown host"))
		}
		for i, vn := range s.Volumes {
			f := fmt.Sprintf("spec.volumes[%d]", i)
			v := st.Get(KindVolume, vn)
			switch {
			case v == nil:
				es = append(es, errAt(o, f, vn, "unknown volume"))
			case v.Spec.(*VolumeSpec).Department != s.Department:
				es = append(es, errAt(o, f, vn, "volume belongs to department %q, not %q", v.Spec.(*VolumeSpec).Department, s.Department))
			case volOwner[vn] != "":
				es = append(es, errAt(o, f, vn, "volume already attached to VM %q", volOwner[vn]))
			default:
				volOwner[vn] = o.Metadata.Name
			}
		}
		for i, n := range s.Networks {
			f := fmt.Sprintf("spec.networks[%d]", i)
			seg := st.Get(KindSegment, n.Segment)
			if seg == nil {
				es = append(es, errAt(o, f+".segment", n.Segment, "unknown segment"))
				continue
			}
			ss := seg.Spec.(*SegmentSpec)
			if ss.Department != s.Department {
				es = append(es, errAt(o, f+".segment", n.Segment, "segment belongs to department %q, not %q", ss.Department, s.Department))
				continue
			}
			if n.IPv4 != "" {
				a, _ := netip.ParseAddr(n.IPv4)
				switch {
				case !ss.Prefix4().Contains(a):
					es = append(es, errAt(o, f+".ipv4", n.IPv4, "outside segment %q (%s)", n.Segment, ss.IPv4))
				case a == ss.Gateway4() || a == ss.Prefix4().Addr() || a == lastAddr(ss.Prefix4()):
					es = append(es, errAt(o, f+".ipv4", n.IPv4, "is the gateway, network or broadcast address of segment %q", n.Segment))
				case staticIPs[a] != "":
					es = append(es, errAt(o, f+".ipv4", n.IPv4, "already used by VM %q", staticIPs[a]))
				default:
					staticIPs[a] = o.Metadata.Name
				}
			}
			if n.IPv6 != "" {
				a, _ := netip.ParseAddr(n.IPv6)
				switch {
				case !ss.Prefix6().IsValid() || !ss.Prefix6().Contains(a):
					es = append(es, errAt(o, f+".ipv6", n.IPv6, "outside segment %q (%s)", n.Segment, ss.IPv6))
				case a == ss.Gateway6Addr() || a == ss.Prefix6().Addr():
					es = append(es, errAt(o, f+".ipv6", n.IPv6, "is the gateway or subnet-router address of segment %q", n.Segment))
				case staticIPs[a] != "":
					es = append(es, errAt(o, f+".ipv6", n.IPv6, "already used by VM %q", staticIPs[a]))
				default:
					staticIPs[a] = o.Metadata.Name
				}
			}
		}
	}
	vips := map[netip.Addr]*Object{}
	for _, o := range st.List(KindService) {
		s := o.Spec.(*ServiceSpec)
		refDept(o, s.Department)
		if s.Pool != "" {
			p := st.Get(KindAddressPool, s.Pool)
			if p == nil {
				es = append(es, errAt(o, "spec.pool", s.Pool, "unknown address pool"))
			} else if !p.Spec.(*AddressPool).Allows(s.Department) {
				es = append(es, errAt(o, "spec.pool", s.Pool, "pool does not serve department %q (it serves %s)", s.Department, strings.Join(p.Spec.(*AddressPool).Departments, ", ")))
			}
		}
		if s.VIP != "" {
			vip, _ := netip.ParseAddr(s.VIP)
			var in, allowed []string
			for _, p := range pools {
				ap := p.Spec.(*AddressPool)
				for _, q := range ap.Prefixes() {
					if q.Contains(vip) {
						in = append(in, p.Metadata.Name)
						if ap.Allows(s.Department) && (s.Pool == "" || s.Pool == p.Metadata.Name) {
							allowed = append(allowed, p.Metadata.Name)
						}
					}
				}
			}
			switch {
			case len(in) == 0:
				es = append(es, errAt(o, "spec.vip", s.VIP, "VIP is outside every address pool"))
			case len(allowed) == 0:
				es = append(es, errAt(o, "spec.vip", s.VIP, "VIP is in address pool %q, which does not serve department %q", in[0], s.Department))
			}
		}
		if vip := EffectiveVIP(o); vip.IsValid() {
			if other := vips[vip]; other != nil {
				x, y := blame(o, other)
				es = append(es, errAt(x, "spec.vip", vip.String(), "VIP already used by service %q", y.Metadata.Name))
			} else {
				vips[vip] = o
			}
		}
		for i, b := range s.Backends {
			f := fmt.Sprintf("spec.backends[%d]", i)
			if b.VM != "" {
				vm := vms[b.VM]
				switch {
				case vm == nil:
					es = append(es, errAt(o, f+".vm", b.VM, "unknown VM"))
				case vm.Spec.(*VMSpec).Department != s.Department:
					es = append(es, errAt(o, f+".vm", b.VM, "backend VM belongs to department %q, not %q", vm.Spec.(*VMSpec).Department, s.Department))
				}
				continue
			}
			a, err := netip.ParseAddr(b.Address)
			if err != nil {
				continue
			}
			var mine bool
			var others []string
			for _, seg := range segFor(a) {
				if d := seg.Spec.(*SegmentSpec).Department; d == s.Department {
					mine = true
				} else {
					others = append(others, fmt.Sprintf("segment %q of department %q", seg.Metadata.Name, d))
				}
			}
			if !mine {
				msg := fmt.Sprintf("backend address is not in any segment of department %q", s.Department)
				if len(others) > 0 {
					msg += " (it is in " + strings.Join(others, ", ") + ")"
				}
				es = append(es, errAt(o, f+".address", b.Address, "%s", msg))
			}
		}
	}
	// Quotas.
	type use struct{ vcpus, memMiB, storage int }
	uses := map[string]*use{}
	get := func(d string) *use {
		if uses[d] == nil {
			uses[d] = &use{}
		}
		return uses[d]
	}
	lastVM := map[string]*Object{}
	for _, o := range st.List(KindVM) {
		s := o.Spec.(*VMSpec)
		u := get(s.Department)
		u.vcpus += s.VCPUs
		u.memMiB += s.MemoryMiB
		if lastVM[s.Department] == nil || o.Source != nil {
			lastVM[s.Department] = o
		}
	}
	lastVol := map[string]*Object{}
	for _, o := range vols {
		s := o.Spec.(*VolumeSpec)
		get(s.Department).storage += s.SizeGiB
		if lastVol[s.Department] == nil || o.Source != nil {
			lastVol[s.Department] = o
		}
	}
	names := make([]string, 0, len(uses))
	for d := range uses {
		names = append(names, d)
	}
	sort.Strings(names)
	for _, d := range names {
		dep := depts[d]
		if dep == nil {
			continue
		}
		q, u := dep.Spec.(*DepartmentSpec).Quotas, uses[d]
		if q.VCPUs != nil && u.vcpus > *q.VCPUs {
			es = append(es, errAt(lastVM[d], "spec.vcpus", strconv.Itoa(lastVM[d].Spec.(*VMSpec).VCPUs), "quota exceeded: department %q would use %d vCPUs, quota is %d", d, u.vcpus, *q.VCPUs))
		}
		if q.MemoryGiB != nil && u.memMiB > *q.MemoryGiB*1024 {
			es = append(es, errAt(lastVM[d], "spec.memoryMiB", strconv.Itoa(lastVM[d].Spec.(*VMSpec).MemoryMiB), "quota exceeded: department %q would use %d MiB of memory, quota is %d GiB", d, u.memMiB, *q.MemoryGiB))
		}
		if q.StorageGiB != nil && u.storage > *q.StorageGiB {
			es = append(es, errAt(lastVol[d], "spec.sizeGiB", strconv.Itoa(lastVol[d].Spec.(*VolumeSpec).SizeGiB), "quota exceeded: department %q would use %d GiB of storage, quota is %d GiB", d, u.storage, *q.StorageGiB))
		}
	}
	return es
}

// Dependents lists the objects that refer to o (what blocks deleting it).
func Dependents(st *State, o *Object) []Key {
	var out []Key
	name := o.Metadata.Name
	for _, x := range st.List("") {
		if x.Key() == o.Key() {
			continue
		}
		refers := false
		switch o.Kind {
		case KindDepartment:
			refers = x.Department() == name && x.Kind != KindDepartment
			if p, ok := x.Spec.(*AddressPool); ok && p.Allows(name) {
				refers = true
			}
		case KindSegment:
			if vm, ok := x.Spec.(*VMSpec); ok {
				for _, n := range vm.Networks {
					refers = refers || n.Segment == name
				}
			}
		case KindVolume:
			if vm, ok := x.Spec.(*VMSpec); ok {
				refers = slices.Contains(vm.Volumes, name)
			}
		case KindVM:
			if svc, ok := x.Spec.(*ServiceSpec); ok {
				for _, b := range svc.Backends {
					refers = refers || b.VM == name
				}
			}
		case KindAddressPool:
			if svc, ok := x.Spec.(*ServiceSpec); ok {
				refers = svc.Pool == name || (svc.VIP == "" && x.Status.Pool == name)
			}
		case KindHost:
			if vm, ok := x.Spec.(*VMSpec); ok {
				refers = vm.Host == name
			}
		}
		if refers {
			out = append(out, x.Key())
		}
	}
	return out
}
