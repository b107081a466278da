// Package alloc assigns the values the controller owns: VLAN IDs per fabric from a configured
// range, a routing table ID per department (VRF-lite; no RD/RT: nothing routes by them), service VIPs from
// address pools (IPv4 and IPv6), VM placement and VM addresses inside their segments. It works
// on a whole config.State: a value already assigned and still valid is kept, a value in use is
// never handed out again, and everything is deterministic (lowest free value first), so the
// result can be committed in the same etcd transaction as the objects.
package alloc

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/govcloud/govcloud/controlplane/config"
)

// Range is an inclusive integer range.
type Range struct{ First, Last int }

func (r Range) contains(v int) bool { return v >= r.First && v <= r.Last }

// ParseRange reads "100-3999".
func ParseRange(s string) (Range, error) {
	a, b, ok := strings.Cut(s, "-")
	x, err1 := strconv.Atoi(strings.TrimSpace(a))
	y, err2 := strconv.Atoi(strings.TrimSpace(b))
	if !ok || err1 != nil || err2 != nil || x > y || x < 1 {
		return Range{}, fmt.Errorf("range %q: want FIRST-LAST with 1 <= FIRST <= LAST", s)
	}
	return Range{x, y}, nil
}

// Config holds the ranges allocation draws from.
type Config struct {
	VLANs  map[string]Range // per fabric; "default" applies to fabrics not listed
	Tables Range            // routing table IDs for department VRFs
}

// DefaultConfig is what the controller uses unless told otherwise.
func DefaultConfig() Config {
	return Config{VLANs: map[string]Range{"default": {100, 3999}}, Tables: Range{1000, 1999}}
}

func (c Config) vlanRange(fabric string) Range {
	if r, ok := c.VLANs[fabric]; ok {
		return r
	}
	if r, ok := c.VLANs["default"]; ok {
		return r
	}
	return Range{100, 3999}
}

// Allocate fills the status of every object in st that needs a value, keeping values already
// held. It changes objects in place: callers pass clones.
func Allocate(st *config.State, c Config) config.Errors {
	var es config.Errors
	es = es.Add(tables(st, c)...)
	es = es.Add(vlans(st, c)...)
	es = es.Add(vips(st)...)
	es = es.Add(vms(st)...)
	es = es.Add(publicAddrs(st)...)
	return es
}

func tables(st *config.State, c Config) config.Errors {
	depts := st.List(config.KindDepartment)
	used := map[int]bool{}
	var need []*config.Object
	for _, o := range depts {
		if t := o.Status.TableID; t != 0 && c.Tables.contains(t) && !used[t] {
			used[t] = true
		} else {
			need = append(need, o)
		}
	}
	var es config.Errors
	next := c.Tables.First
	for _, o := range need {
		for next <= c.Tables.Last && used[next] {
			next++
		}
		if next > c.Tables.Last {
			es = es.Add(config.ErrAt(o, "metadata.name", o.Metadata.Name, "no free routing table ID left in %d-%d", c.Tables.First, c.Tables.Last))
			continue
		}
		used[next] = true
		o.Status.TableID = next
	}
	return es
}

func vlans(st *config.State, c Config) config.Errors {
	segs := st.List(config.KindSegment)
	used := map[string]bool{} // fabric/vlan
	key := func(f string, v int) string { return f + "/" + strconv.Itoa(v) }
	var need []*config.Object
	// Given VLANs first, then kept allocations, then new ones.
	for _, o := range segs {
		s := o.Spec.(*config.SegmentSpec)
		if s.VLAN != nil {
			o.Status.VLAN, o.Status.Fabric = *s.VLAN, s.FabricName()
			used[key(s.FabricName(), *s.VLAN)] = true
		}
	}
	for _, o := range segs {
		s := o.Spec.(*config.SegmentSpec)
		if s.VLAN != nil {
			continue
		}
		k := key(s.FabricName(), o.Status.VLAN)
		if o.Status.VLAN != 0 && o.Status.Fabric == s.FabricName() && !used[k] {
			used[k] = true
			continue
		}
		need = append(need, o)
	}
	var es config.Errors
	for _, o := range need {
		s := o.Spec.(*config.SegmentSpec)
		r := c.vlanRange(s.FabricName())
		v := r.First
		for v <= r.Last && used[key(s.FabricName(), v)] {
			v++
		}
		if v > r.Last {
			es = es.Add(config.ErrAt(o, "spec.vlan", "", "no free VLAN left in %d-%d on fabric %q", r.First, r.Last, s.FabricName()))
			continue
		}
		used[key(s.FabricName(), v)] = true
		o.Status.VLAN, o.Status.Fabric = v, s.FabricName()
	}
	return es
}

// poolFor returns the pool holding a (that serves department and matches want, when set).
func poolFor(pools []*config.Object, a netip.Addr, department, want string) *config.Object {
	for _, p := range pools {
		ap := p.Spec.(*config.AddressPool)
		if !ap.Allows(department) || (want != "" && want != p.Metadata.Name) {
			continue
		}
		for _, q := range ap.Prefixes() {
			if q.Contains(a) {
				return p
			}
		}
	}
	return nil
}

func vips(st *config.State) config.Errors {
	svcs := st.List(config.KindService)
	pools := st.List(config.KindAddressPool)
	used := map[netip.Addr]bool{}
	var need []*config.Object
	var es config.Errors
	for _, o := range svcs {
		s := o.Spec.(*config.ServiceSpec)
		if s.VIP != "" {
			a, _ := netip.ParseAddr(s.VIP)
			used[a] = true
			o.Status.VIP, o.Status.Pool = a.String(), ""
			if p := poolFor(pools, a, s.Department, s.Pool); p != nil {
				o.Status.Pool = p.Metadata.Name
				if reservedIn(p, a) {
					es = es.Add(config.ErrAt(o, "spec.vip", s.VIP, "is a reserved address of pool %q (network, broadcast or subnet anycast address); choose another", p.Metadata.Name))
				}
			}
		}
	}
	// Egress addresses and floating IPs drawn from the same pools stay theirs (publicAddrs).
	for _, a := range heldPublic(st) {
		used[a] = true
	}
	held := map[*config.Object]string{} // pool each service held its VIP from before this pass
	for _, o := range svcs {
		s := o.Spec.(*config.ServiceSpec)
		if s.VIP != "" {
			continue
		}
		held[o] = o.Status.Pool
		a, err := netip.ParseAddr(o.Status.VIP)
		if err == nil && !used[a] && a.Is6() == wantsIPv6(s, pools) {
			// A VIP allocated before Reserved existed (an IPv6 pool's all-zero address) is
			// given a new one: routers answer the Subnet-Router anycast address themselves.
			if p := poolFor(pools, a, s.Department, s.Pool); p != nil && !reservedIn(p, a) && (s.Pool != "" || s.Mode != "nat" || p.Spec.(*config.AddressPool).ScopeName() != "internal") {
				used[a] = true
				o.Status.Pool = p.Metadata.Name
				continue
			}
		}
		o.Status.VIP, o.Status.Pool = "", ""
		need = append(need, o)
	}
	for _, o := range need {
		s := o.Spec.(*config.ServiceSpec)
		v6 := wantsIPv6(s, pools)
		var found bool
		var tried []string
		// A service naming no pool draws from the public pools that serve its department first,
		// and from internal ones only when none of those has an address and its mode is not nat
		// (internal VIPs are dsr only; config.Validate checks a named pool).
		byScope := slices.Clone(pools)
		internal := func(p *config.Object) int {
			if p.Spec.(*config.AddressPool).ScopeName() == "internal" {
				return 1
			}
			return 0
		}
		slices.SortStableFunc(byScope, func(x, y *config.Object) int { return internal(x) - internal(y) })
		for _, p := range byScope {
			ap := p.Spec.(*config.AddressPool)
			if !ap.Allows(s.Department) || (s.Pool != "" && s.Pool != p.Metadata.Name) {
				continue
			}
			if s.Pool == "" && s.Mode == "nat" && ap.ScopeName() == "internal" {
				continue
			}
			tried = append(tried, p.Metadata.Name)
			for _, q := range ap.Prefixes() {
				if q.Addr().Is6() != v6 {
					continue
				}
				if a, ok := firstFree(q, used, nil); ok {
					used[a] = true
					o.Status.VIP, o.Status.Pool = a.String(), p.Metadata.Name
					found = true
					break
				}
			}
			if found {
				break
			}
		}
		if !found {
			fam := "IPv4"
			if v6 {
				fam = "IPv6"
			}
			msg := fmt.Sprintf("no free %s VIP for department %q", fam, s.Department)
			if len(tried) == 0 {
				msg += `: no address pool serves this department (name it in a pool's spec.departments, or give a pool departments: ["*"] to serve every department)`
			} else if p := st.Get(config.KindAddressPool, s.Pool); p != nil && s.IPFamily != "" && !hasFamily(p, v6) {
				msg += fmt.Sprintf(": pool %q has no %s prefix (spec.ipFamily is %s); leave ipFamily out to take the pool's family, or name a pool with %s prefixes", s.Pool, fam, s.IPFamily, fam)
			} else {
				msg += " in pools " + strings.Join(tried, ", ")
			}
			// A stored service loses its VIP only through a pool in the input: blame that pool.
			var cause *config.Object
			causeField := "spec.departments"
			if p := st.Get(config.KindAddressPool, held[o]); p != nil {
				cause = p
				if p.Spec.(*config.AddressPool).Allows(s.Department) {
					causeField = "spec.cidrs"
				}
			}
			es = es.Add(config.ErrStranded(o, cause, causeField, "spec.vip", "", "%s", msg))
		}
	}
	return es
}

// wantsIPv6 is the address family of a service's VIP: its ipFamily, else the family of the pool
// it names when that pool has prefixes of one family only, else IPv4.
func wantsIPv6(s *config.ServiceSpec, pools []*config.Object) bool {
	if s.IPFamily != "" {
		return s.IPFamily == "ipv6"
	}
	for _, p := range pools {
		if p.Metadata.Name != s.Pool {
			continue
		}
		v4, v6 := false, false
		for _, q := range p.Spec.(*config.AddressPool).Prefixes() {
			v4, v6 = v4 || q.Addr().Is4(), v6 || q.Addr().Is6()
		}
		return v6 && !v4
	}
	return false
}

// hasFamily reports whether pool p has a prefix of the family (IPv6 when v6).
func hasFamily(p *config.Object, v6 bool) bool {
	for _, q := range p.Spec.(*config.AddressPool).Prefixes() {
		if q.Addr().Is6() == v6 {
			return true
		}
	}
	return false
}

// Reserved reports whether a is an address of prefix q that must not be given to a VIP or a
// guest: for IPv4 prefixes shorter than /31 the network and broadcast addresses; for IPv6
// prefixes shorter than /127 the Subnet-Router anycast address (the all-zero interface ID,
// RFC 4291 §2.6.1; /127 and /128 are exempt, RFC 6164), and in prefixes of /64 or shorter the
// reserved subnet anycast interface IDs fdff:ffff:ffff:ff80 to fdff:ffff:ffff:ffff (RFC 2526 §2).
func Reserved(q netip.Prefix, a netip.Addr) bool {
	net := q.Masked().Addr()
	switch {
	case a.Is4():
		return q.Bits() < 31 && (a == net || a == config.LastAddr(q))
	case q.Bits() < 127 && a == net:
		return true
	case q.Bits() <= 64:
		b := a.As16()
		return b[8] == 0xfd && b[9] == 0xff && b[10] == 0xff && b[11] == 0xff && b[12] == 0xff && b[13] == 0xff && b[14] == 0xff && b[15] >= 0x80
	}
	return false
}

// reservedIn reports whether a is Reserved in the prefix of pool p that holds it.
func reservedIn(p *config.Object, a netip.Addr) bool {
	for _, q := range p.Spec.(*config.AddressPool).Prefixes() {
		if q.Contains(a) && Reserved(q, a) {
			return true
		}
	}
	return false
}

// firstFree returns the lowest address of q not in used or reserved and not Reserved. It gives
// up after 1<<20 candidates.
func firstFree(q netip.Prefix, used map[netip.Addr]bool, reserved map[netip.Addr]bool) (netip.Addr, bool) {
	a := q.Masked().Addr()
	last := config.LastAddr(q)
	for i := 0; i < 1<<20 && q.Contains(a); i++ {
		if !Reserved(q, a) && !used[a] && !reserved[a] {
			return a, true
		}
		if a == last {
			break
		}
		a = a.Next()
	}
	return netip.Addr{}, false
}

// MAC derives a stable locally administered MAC address for a VM interface.
func MAC(vm, segment string) string {
	h := sha256.Sum256([]byte(vm + "/" + segment))
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", h[0], h[1], h[2], h[3], h[4])
}

func vms(st *config.State) config.Errors {
	list := st.List(config.KindVM)
	hosts := st.List(config.KindHost)
	load := map[string]int{}
	used := map[netip.Addr]bool{}
	// Static addresses and kept placement/addresses first.
	for _, o := range list {
		s := o.Spec.(*config.VMSpec)
		for _, n := range s.Networks {
			if a, err := netip.ParseAddr(n.IPv4); err == nil {
				used[a] = true
			}
			if a, err := netip.ParseAddr(n.IPv6); err == nil {
				used[a] = true
			}
		}
	}
	matches := func(h *config.Object, sel map[string]string) bool {
		labels := h.Spec.(*config.HostSpec).Labels
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return true
	}
	// Capacity: what the VMs placed so far take of each host, and what each host may hold.
	use := map[string]res{}
	limits := map[string]res{}
	for _, h := range hosts {
		limits[h.Metadata.Name] = hostLimit(h)
	}
	limit := func(h *config.Object) res { return limits[h.Metadata.Name] }
	fits := func(h *config.Object, n res) bool {
		free, _ := short(limit(h), use[h.Metadata.Name], n)
		return len(free) == 0
	}
	prev := map[string]map[string]config.VMAddress{}
	newlyPinned := map[string]bool{} // VMs whose spec.host puts them on a host they were not on
	for _, o := range list {
		s := o.Spec.(*config.VMSpec)
		if s.Host != "" {
			newlyPinned[o.Metadata.Name] = o.Status.Host != s.Host
			o.Status.Host = s.Host
		} else if h := st.Get(config.KindHost, o.Status.Host); h == nil || !matches(h, s.HostSelector) {
			o.Status.Host = ""
		}
		o.Status.Reason = ""
		if o.Status.Host != "" {
			load[o.Status.Host]++
			use[o.Status.Host] = use[o.Status.Host].plus(vmNeed(st, s))
		}
		m := map[string]config.VMAddress{}
		for _, n := range o.Status.Networks {
			m[n.Segment] = n
		}
		prev[o.Metadata.Name] = m
		o.Status.Networks = nil
	}
	// Keep previous addresses still inside their segment and free.
	keep := map[string]map[string]config.VMAddress{}
	for _, o := range list {
		s := o.Spec.(*config.VMSpec)
		keep[o.Metadata.Name] = map[string]config.VMAddress{}
		for _, n := range s.Networks {
			seg := st.Get(config.KindSegment, n.Segment)
			p, ok := prev[o.Metadata.Name][n.Segment]
			if seg == nil || !ok {
				continue
			}
			ss := seg.Spec.(*config.SegmentSpec)
			k := config.VMAddress{Segment: n.Segment, MAC: p.MAC}
			if a, err := netip.ParseAddr(p.IPv4); n.IPv4 == "" && err == nil && ss.Prefix4().Contains(a) && !used[a] && a != ss.Gateway4() {
				used[a] = true
				k.IPv4 = p.IPv4
			}
			if a, err := netip.ParseAddr(p.IPv6); n.IPv6 == "" && err == nil && ss.Prefix6().IsValid() && ss.Prefix6().Contains(a) && !used[a] && a != ss.Gateway6Addr() {
				used[a] = true
				k.IPv6 = p.IPv6
			}
			keep[o.Metadata.Name][n.Segment] = k
		}
	}
	var es config.Errors
	// Volumes stay on the host that made them (status.host): a VM using one runs there.
	volHost := map[string]string{} // VM -> the host its volumes hold it to
	volOn := map[string]string{}   // VM -> the volume naming that host
	for _, o := range list {
		s := o.Spec.(*config.VMSpec)
		for i, vn := range s.Volumes {
			v := st.Get(config.KindVolume, vn)
			if v == nil || v.Status.Host == "" {
				continue
			}
			if h := volHost[o.Metadata.Name]; h != "" && h != v.Status.Host {
				o.Status.Reason = fmt.Sprintf("volume %q is on host %q and volume %q on host %q: a VM runs on one host", volOn[o.Metadata.Name], h, vn, v.Status.Host)
				if o.Source != nil {
					es = es.Add(config.ErrAt(o, fmt.Sprintf("spec.volumes[%d]", i), vn, "%s", o.Status.Reason))
				}
				continue
			}
			volHost[o.Metadata.Name], volOn[o.Metadata.Name] = v.Status.Host, vn
		}
		if h := volHost[o.Metadata.Name]; h != "" && o.Status.Host != "" && o.Status.Host != h {
			why := volumeMoveReason(volOn[o.Metadata.Name], h, o.Metadata.Name, o.Status.Host)
			if o.Source != nil {
				field, value := "spec.volumes", volOn[o.Metadata.Name]
				if s.Host != "" {
					field, value = "spec.host", s.Host
				}
				es = es.Add(config.ErrAt(o, field, value, "%s", why))
			}
			o.Status.Reason = why
		}
	}
	// Placed VMs beyond their host's capacity (pinned, or the capacity shrank) stay where they
	// are: each says so in its reason. Only a VM this input newly pins there is refused.
	for _, h := range hosts {
		l, u := limit(h), use[h.Metadata.Name]
		if free, _ := short(l, u, res{}); len(free) == 0 {
			continue
		}
		why := overReason(h.Metadata.Name, l, u)
		for _, o := range list {
			if o.Status.Host != h.Metadata.Name {
				continue
			}
			o.Status.Reason = why
			if o.Source != nil && newlyPinned[o.Metadata.Name] {
				es = es.Add(config.ErrAt(o, "spec.host", h.Metadata.Name, "host capacity exceeded: %s", why))
			}
		}
	}
	// Pending VMs in name order, each on the matching host with room that holds the fewest
	// VMs, ties to the lowest host name: spread, so a host failure takes as few VMs as
	// possible. A VM that fits nowhere stays pending with its reason.
	for _, o := range list {
		s := o.Spec.(*config.VMSpec)
		if o.Status.Host == "" {
			n := vmNeed(st, s)
			best := ""
			var matching []*config.Object
			for _, h := range hosts {
				if !matches(h, s.HostSelector) || volHost[o.Metadata.Name] != "" && h.Metadata.Name != volHost[o.Metadata.Name] {
					continue
				}
				matching = append(matching, h)
				if fits(h, n) && (best == "" || load[h.Metadata.Name] < load[best]) {
					best = h.Metadata.Name
				}
			}
			switch {
			case best != "":
				o.Status.Host = best
				load[best]++
				use[best] = use[best].plus(n)
			case volHost[o.Metadata.Name] != "" && len(matching) == 0:
				o.Status.Reason = fmt.Sprintf("no host for VM %q: its volume %q is on host %q, which does not match hostSelector %s",
					o.Metadata.Name, volOn[o.Metadata.Name], volHost[o.Metadata.Name], selectorText(s.HostSelector))
			case len(matching) > 0:
				o.Status.Reason = noRoomReason(o.Metadata.Name, s.HostSelector, matching, limit, use, n)
			default:
				o.Status.Reason = noMatchReason(o.Metadata.Name, s.HostSelector, len(hosts))
			}
		}
		for i, n := range s.Networks {
			seg := st.Get(config.KindSegment, n.Segment)
			if seg == nil {
				continue
			}
			ss := seg.Spec.(*config.SegmentSpec)
			a := keep[o.Metadata.Name][n.Segment]
			a.Segment = n.Segment
			if a.MAC == "" {
				a.MAC = MAC(o.Metadata.Name, n.Segment)
			}
			reserved := map[netip.Addr]bool{ss.Gateway4(): true}
			if n.IPv4 != "" {
				a.IPv4 = n.IPv4
			} else if a.IPv4 == "" {
				if ip, ok := firstFree(ss.Prefix4(), used, reserved); ok {
					used[ip] = true
					a.IPv4 = ip.String()
				} else {
					es = es.Add(config.ErrStranded(o, seg, "spec.ipv4", fmt.Sprintf("spec.networks[%d].segment", i), n.Segment, "no free IPv4 address left in segment (%s)", ss.IPv4))
				}
			}
			if p6 := ss.Prefix6(); p6.IsValid() {
				if n.IPv6 != "" {
					a.IPv6 = n.IPv6
				} else if a.IPv6 == "" {
					reserved6 := map[netip.Addr]bool{p6.Addr(): true, ss.Gateway6Addr(): true}
					if ip, ok := firstFree(p6, used, reserved6); ok {
						used[ip] = true
						a.IPv6 = ip.String()
					}
				}
			}
			o.Status.Networks = append(o.Status.Networks, a)
		}
	}
	// A volume first used by a placed VM belongs to that VM's host from then on, until it is
	// deleted: detaching it or deleting its VM leaves it there.
	for _, o := range list {
		if o.Status.Host == "" || (volHost[o.Metadata.Name] != "" && volHost[o.Metadata.Name] != o.Status.Host) {
			continue
		}
		for _, vn := range o.Spec.(*config.VMSpec).Volumes {
			if v := st.Get(config.KindVolume, vn); v != nil && v.Status.Host == "" {
				v.Status.Host = o.Status.Host
			}
		}
	}
	sort.SliceStable(es, func(i, j int) bool { return es[i].Name < es[j].Name })
	return es
}

// volumeMoveReason says why VM may not use volume on host vmHost: the volume's data is in
// the storage pool of host volHost (each host's pool is its own; see README "VM lifecycle
// and volumes").
func volumeMoveReason(volume, volHost, vm, vmHost string) string {
	return fmt.Sprintf("volume %q is on host %q, VM %q on host %q: a volume stays on the host that made it "+
		"(its data is in that host's storage pool); place the VM on %q, or back the volume up and restore it as a new volume (spec.restoreFrom)",
		volume, volHost, vm, vmHost, volHost)
}
