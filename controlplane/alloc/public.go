package alloc

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/govcloud/govcloud/controlplane/config"
)

// publicAddrs gives each department with spec.egress one SNAT address per host (Status.Egress,
// host name -> address) and each VM with spec.floatingIP one address (Status.FloatingIP), from
// the IPv4 prefixes of the named pool. One egress address per host, rather than one shared by
// all hosts, means return traffic is routed by the fabric to the host holding the connection's
// conntrack entry, with no steering between hosts. Addresses held and still in their pool are
// kept; service VIPs and each other's addresses are never handed out twice.
func publicAddrs(st *config.State) config.Errors {
	var es config.Errors
	used := map[netip.Addr]bool{}
	for _, o := range st.List(config.KindService) {
		if a := config.EffectiveVIP(o); a.IsValid() {
			used[a] = true
		}
	}
	hosts := map[string]bool{}
	for _, o := range st.List(config.KindHost) {
		hosts[o.Metadata.Name] = true
	}
	inPool := func(pool string, a netip.Addr) bool {
		p := st.Get(config.KindAddressPool, pool)
		if p == nil || !a.Is4() {
			return false
		}
		for _, q := range p.Spec.(*config.AddressPool).Prefixes() {
			if q.Contains(a) && !Reserved(q, a) {
				return true
			}
		}
		return false
	}
	// keep returns the held address s when it is still valid, marking it used.
	keep := func(pool, s string) bool {
		a, err := netip.ParseAddr(s)
		if err != nil || used[a] || !inPool(pool, a) {
			return false
		}
		used[a] = true
		return true
	}
	depts := st.List(config.KindDepartment)
	vms := st.List(config.KindVM)
	for _, o := range depts {
		pool := o.Spec.(*config.DepartmentSpec).Egress
		for _, h := range slices.Sorted(maps.Keys(o.Status.Egress)) {
			if pool == "" || !hosts[h] || !keep(pool, o.Status.Egress[h]) {
				delete(o.Status.Egress, h)
			}
		}
		if len(o.Status.Egress) == 0 {
			o.Status.Egress = nil
		}
	}
	for _, o := range vms {
		if pool := o.Spec.(*config.VMSpec).FloatingIP; pool == "" || !keep(pool, o.Status.FloatingIP) {
			o.Status.FloatingIP = ""
		}
	}
	draw := func(pool string) (netip.Addr, bool) {
		p := st.Get(config.KindAddressPool, pool)
		if p == nil {
			return netip.Addr{}, false
		}
		for _, q := range p.Spec.(*config.AddressPool).Prefixes() {
			if !q.Addr().Is4() {
				continue
			}
			if a, ok := firstFree(q, used, nil); ok {
				used[a] = true
				return a, true
			}
		}
		return netip.Addr{}, false
	}
	hostNames := slices.Sorted(maps.Keys(hosts))
	for _, o := range depts {
		pool := o.Spec.(*config.DepartmentSpec).Egress
		if pool == "" {
			continue
		}
		for _, h := range hostNames {
			if _, ok := o.Status.Egress[h]; ok {
				continue
			}
			a, ok := draw(pool)
			if !ok {
				es = es.Add(config.ErrStranded(o, st.Get(config.KindAddressPool, pool), "spec.cidrs", "spec.egress", pool,
					"%s", fmt.Sprintf("no free IPv4 address in pool %q for department %q's egress on host %q (one per department per host)", pool, o.Metadata.Name, h)))
				break
			}
			if o.Status.Egress == nil {
				o.Status.Egress = map[string]string{}
			}
			o.Status.Egress[h] = a.String()
		}
	}
	for _, o := range vms {
		pool := o.Spec.(*config.VMSpec).FloatingIP
		if pool == "" || o.Status.FloatingIP != "" {
			continue
		}
		a, ok := draw(pool)
		if !ok {
			es = es.Add(config.ErrStranded(o, st.Get(config.KindAddressPool, pool), "spec.cidrs", "spec.floatingIP", pool,
				"%s", fmt.Sprintf("no free IPv4 address in pool %q for VM %q's floating IP", pool, o.Metadata.Name)))
			continue
		}
		o.Status.FloatingIP = a.String()
	}
	return es
}

// heldPublic lists the egress addresses and floating IPs held in status, so a service's VIP
// drawn from the same pool never takes one.
func heldPublic(st *config.State) []netip.Addr {
	var out []netip.Addr
	for _, o := range st.List(config.KindDepartment) {
		for _, h := range slices.Sorted(maps.Keys(o.Status.Egress)) {
			if a, err := netip.ParseAddr(o.Status.Egress[h]); err == nil {
				out = append(out, a)
			}
		}
	}
	for _, o := range st.List(config.KindVM) {
		if a, err := netip.ParseAddr(o.Status.FloatingIP); err == nil {
			out = append(out, a)
		}
	}
	return out
}
