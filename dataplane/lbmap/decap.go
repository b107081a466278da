package lbmap

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/govcloud/govcloud/dataplane/bpfobj"
	"github.com/govcloud/govcloud/lb"
)

// Capacities of the decapsulation policy maps (bpf/lb/lb_consts.h): MaxTunnels counts
// (tunnel source, local tunnel endpoint of the same family) pairs.
const (
	MaxTunnels   = 4096
	MaxLocalVIPs = MaxVIPs
)

// LocalVIP is a VIP with at least one dsr backend on this host: a decapsulated packet must be
// TCP or UDP to exactly this (domain, address, port, protocol). Department is the owning
// department's id (its routing table id); the program keeps it with the VIP for later checks.
type LocalVIP struct {
	VIP        lb.VIP
	Department uint32
}

// SetTunnelSources replaces the set of outer source addresses whose tunnels (IPIP, IP6IP6,
// 4in6, 6in4) this host decapsulates: the fabric addresses, IPv4 or IPv6, of every host that
// runs the load balancer. A tunnel to one of this host's endpoints (SetDecapAddrs) from any
// other source is dropped in XDP and counted as drop reason "decap_source". An empty set
// decapsulates nothing. The program keys the map by (source, endpoint) pairs of one family,
// so the accepted path costs one lookup; SetDecapAddrs rewrites the pairs too.
//
// Level-triggered: srcs is the whole set; the map is brought to it by difference, so the same
// set twice writes nothing. Errors name the bad address (invalid, unspecified, multicast or
// IPv4-mapped IPv6) or the number of pairs beyond MaxTunnels; those leave the map unchanged.
func (d *Dataplane) SetTunnelSources(srcs []netip.Addr) error {
	set := make(map[netip.Addr]bool, len(srcs))
	for _, a := range srcs {
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.Is4In6() || a.Zone() != "" {
			return fmt.Errorf("tunnel source %q: want a unicast IPv4 or IPv6 address without zone (IPv4 as IPv4, not mapped)", a)
		}
		set[a] = true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.syncTunnels(set, d.local); err != nil {
		return err
	}
	d.tunnelSrcs = set
	return nil
}

// syncTunnels writes every (source, endpoint) pair of one family into tunnel_srcs.
func (d *Dataplane) syncTunnels(srcs, endpoints map[netip.Addr]bool) error {
	want := map[bpfobj.LbTunnelKey]uint32{}
	for s := range srcs {
		for e := range endpoints {
			if s.Is4() == e.Is4() {
				want[bpfobj.LbTunnelKey{Src: addrWords(s), Dst: addrWords(e), Family: family(s)}] = 1
			}
		}
	}
	if len(want) > MaxTunnels {
		return fmt.Errorf("tunnel sources: %d sources x %d endpoints make %d pairs, at most %d", len(srcs), len(endpoints), len(want), MaxTunnels)
	}
	if err := syncHash(d.objs.TunnelSrcs, want); err != nil {
		return fmt.Errorf("tunnel sources: %w", err)
	}
	return nil
}

// SetLocalVIPs replaces the set of VIPs with a dsr backend on this host: the only inner
// destinations a tunnelled packet may have to be decapsulated here. A tunnelled packet to
// anything else (a guest's private address, another port or protocol of the VIP, a VIP in
// another domain, a nested tunnel) is dropped in XDP and counted as "decap_not_local_vip".
// Each VIP's Domain is the routing domain its frames carry (0: untagged, the public fabric;
// a department's id for its VLAN, see SetVLANDomains).
//
// Level-triggered like SetTunnelSources. Errors name the bad VIP (invalid or IPv4-mapped
// address, port 0, protocol other than tcp/udp, the same VIP in two departments) or the size
// beyond MaxLocalVIPs; those leave the map unchanged.
func (d *Dataplane) SetLocalVIPs(vips []LocalVIP) error {
	want := make(map[bpfobj.LbVipKey]uint32, len(vips))
	dept := make(map[lb.VIP]uint32, len(vips))
	for _, v := range vips {
		a := v.VIP.Addr
		switch {
		case !a.IsValid() || a.IsUnspecified() || a.Is4In6() || a.Zone() != "":
			return fmt.Errorf("local VIP %s: want an IPv4 or IPv6 address (IPv4 as IPv4, not mapped)", v.VIP)
		case v.VIP.Port == 0:
			return fmt.Errorf("local VIP %s: port 0", v.VIP)
		case v.VIP.Proto != lb.TCP && v.VIP.Proto != lb.UDP:
			return fmt.Errorf("local VIP %s: protocol %s, want tcp or udp", v.VIP, v.VIP.Proto)
		}
		if old, ok := dept[v.VIP]; ok && old != v.Department {
			return fmt.Errorf("local VIP %s: in departments %d and %d", v.VIP, old, v.Department)
		}
		dept[v.VIP] = v.Department
		want[vipKey(v.VIP)] = v.Department
	}
	if len(want) > MaxLocalVIPs {
		return fmt.Errorf("local VIPs: %d VIPs, at most %d", len(want), MaxLocalVIPs)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := syncHash(d.objs.LocalVips, want); err != nil {
		return fmt.Errorf("local VIPs: %w", err)
	}
	return nil
}

// TunnelSources returns the sources of the programmed tunnels, sorted (read from the map, so
// after a restart it shows what an earlier agent left).
func (d *Dataplane) TunnelSources() ([]netip.Addr, error) {
	seen := map[netip.Addr]bool{}
	var k bpfobj.LbTunnelKey
	var v uint32
	it := d.objs.TunnelSrcs.Iterate()
	for it.Next(&k, &v) {
		seen[wordsAddr(k.Src, k.Family)] = true
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading tunnel sources: %w", err)
	}
	return slices.SortedFunc(maps.Keys(seen), netip.Addr.Compare), nil
}

// LocalVIPs returns the programmed local VIPs (in no particular order).
func (d *Dataplane) LocalVIPs() ([]LocalVIP, error) {
	var out []LocalVIP
	var k bpfobj.LbVipKey
	var dep uint32
	it := d.objs.LocalVips.Iterate()
	for it.Next(&k, &dep) {
		out = append(out, LocalVIP{VIP: lb.VIP{Domain: k.Domain, Addr: wordsAddr(k.Addr, k.Family), Port: htons(k.Port), Proto: lb.Protocol(k.Proto)}, Department: dep})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading local VIPs: %w", err)
	}
	return out, nil
}

// syncHash brings a hash map to want: stale keys are deleted first (what is no longer allowed
// stops at once, and the map never needs room for both sets), then missing or changed entries
// are written. Unchanged entries are not touched.
func syncHash[K comparable](m *ebpf.Map, want map[K]uint32) error {
	have := map[K]uint32{}
	var k K
	var v uint32
	it := m.Iterate()
	for it.Next(&k, &v) {
		have[k] = v
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading map %s: %w", m, err)
	}
	for k := range have {
		if _, ok := want[k]; ok {
			continue
		}
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("deleting from map %s: %w", m, err)
		}
	}
	for k, v := range want {
		if old, ok := have[k]; ok && old == v {
			continue
		}
		if err := m.Put(k, v); err != nil {
			return fmt.Errorf("writing map %s: %w", m, err)
		}
	}
	return nil
}
