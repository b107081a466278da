package lbmap

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/cilium/ebpf"

	"github.com/govcloud/govcloud/dataplane/bpfobj"
	"github.com/govcloud/govcloud/lb"
)

// Capacities of the decapsulation policy maps (bpf/lb/lb_consts.h): MaxTunnels counts
// (tunnel source, local tunnel endpoint of the same family) pairs.
const (
	MaxTunnels   = 4096
	MaxLocalVIPs = MaxVIPs
	// MaxDecapAllow4 bounds (IPv4 tunnel pairs) x (IPv4 local VIPs): the combinations the
	// program accepts in one lookup (decap_allow4).
	MaxDecapAllow4 = 65536
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
	if err := d.syncPolicy(set, d.local, d.localVIPs); err != nil {
		return err
	}
	d.tunnelSrcs = set
	return nil
}

// syncPolicy brings the decapsulation maps to (srcs x endpoints) pairs and vips. decap_allow4
// (their IPv4 cross product, accepted in one lookup) never holds a combination the other maps
// do not: what goes is removed from it first, what comes is added to it last.
func (d *Dataplane) syncPolicy(srcs, endpoints map[netip.Addr]bool, vips []LocalVIP) error {
	allow := map[bpfobj.LbDecap4Key]uint32{}
	for s := range srcs {
		for e := range endpoints {
			if !s.Is4() || !e.Is4() {
				continue
			}
			for _, v := range vips {
				if v.VIP.Addr.Is4() {
					allow[bpfobj.LbDecap4Key{Src: addrWords(s)[0], Dst: addrWords(e)[0], Domain: v.VIP.Domain, Vip: addrWords(v.VIP.Addr)[0],
						Port: htons(v.VIP.Port), Proto: uint8(v.VIP.Proto)}] = v.Department
				}
			}
		}
	}
	if len(allow) > MaxDecapAllow4 {
		return fmt.Errorf("decapsulation policy: %d IPv4 (tunnel, local VIP) combinations, at most %d", len(allow), MaxDecapAllow4)
	}
	if err := pruneHash(d.objs.DecapAllow4, allow, &d.writes); err != nil {
		return fmt.Errorf("decapsulation policy: %w", err)
	}
	if err := d.syncTunnels(srcs, endpoints); err != nil {
		return err
	}
	if err := d.syncLocalVIPs(vips); err != nil {
		return err
	}
	if err := syncHash(d.objs.DecapAllow4, allow, &d.writes); err != nil {
		return fmt.Errorf("decapsulation policy: %w", err)
	}
	return nil
}

// syncTunnels writes every (source, endpoint) pair of one family: IPv4 pairs into
// tunnel_srcs4 (an 8-byte key), IPv6 pairs into tunnel_srcs.
func (d *Dataplane) syncTunnels(srcs, endpoints map[netip.Addr]bool) error {
	want4 := map[bpfobj.LbTunnel4Key]uint32{}
	want6 := map[bpfobj.LbTunnelKey]uint32{}
	for s := range srcs {
		for e := range endpoints {
			switch {
			case s.Is4() && e.Is4():
				want4[bpfobj.LbTunnel4Key{Src: addrWords(s)[0], Dst: addrWords(e)[0]}] = 1
			case s.Is6() && e.Is6():
				want6[bpfobj.LbTunnelKey{Src: addrWords(s), Dst: addrWords(e), Family: family(s)}] = 1
			}
		}
	}
	if n := max(len(want4), len(want6)); n > MaxTunnels {
		return fmt.Errorf("tunnel sources: %d sources x %d endpoints make %d pairs of one family, at most %d", len(srcs), len(endpoints), n, MaxTunnels)
	}
	if err := syncHash(d.objs.TunnelSrcs4, want4, &d.writes); err != nil {
		return fmt.Errorf("tunnel sources: %w", err)
	}
	if err := syncHash(d.objs.TunnelSrcs, want6, &d.writes); err != nil {
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
	}
	vips = slices.Clone(vips)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.syncPolicy(d.tunnelSrcs, d.local, vips); err != nil {
		return err
	}
	d.localVIPs = vips
	return nil
}

// syncLocalVIPs writes vips (validated) into local_vips4 (IPv4) and local_vips (IPv6).
func (d *Dataplane) syncLocalVIPs(vips []LocalVIP) error {
	want := make(map[bpfobj.LbVipKey]uint32, len(vips))
	want4 := make(map[bpfobj.LbVip4Key]uint32, len(vips))
	for _, v := range vips {
		if a := v.VIP.Addr; a.Is4() {
			want4[bpfobj.LbVip4Key{Domain: v.VIP.Domain, Addr: addrWords(a)[0], Port: htons(v.VIP.Port), Proto: uint8(v.VIP.Proto)}] = v.Department
		} else {
			want[vipKey(v.VIP)] = v.Department
		}
	}
	if n := max(len(want), len(want4)); n > MaxLocalVIPs {
		return fmt.Errorf("local VIPs: %d VIPs of one family, at most %d", n, MaxLocalVIPs)
	}
	if err := syncHash(d.objs.LocalVips4, want4, &d.writes); err != nil {
		return fmt.Errorf("local VIPs: %w", err)
	}
	if err := syncHash(d.objs.LocalVips, want, &d.writes); err != nil {
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
	var k4 bpfobj.LbTunnel4Key
	it = d.objs.TunnelSrcs4.Iterate()
	for it.Next(&k4, &v) {
		seen[wordsAddr([4]uint32{k4.Src}, family(netip.IPv4Unspecified()))] = true
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
	var k4 bpfobj.LbVip4Key
	it = d.objs.LocalVips4.Iterate()
	for it.Next(&k4, &dep) {
		a := wordsAddr([4]uint32{k4.Addr}, family(netip.IPv4Unspecified()))
		out = append(out, LocalVIP{VIP: lb.VIP{Domain: k4.Domain, Addr: a, Port: htons(k4.Port), Proto: lb.Protocol(k4.Proto)}, Department: dep})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading local VIPs: %w", err)
	}
	return out, nil
}

// pruneHash deletes from a hash map every key not in want (and writes nothing), counting
// deletions in writes.
func pruneHash[K comparable](m *ebpf.Map, want map[K]uint32, writes *atomic.Uint64) error {
	have, err := readHash[K, uint32](m)
	if err != nil {
		return err
	}
	var stale []K
	for k := range have {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	return deleteHash(m, stale, writes)
}

// syncHash brings a hash map to want: stale keys are deleted first (what is no longer allowed
// stops at once, and the map never needs room for both sets), then missing or changed entries
// are written. Unchanged entries are not touched; deletions and writes are counted in writes.
// Reads and writes go in batches: a pass over an unchanged map of n entries costs a few
// system calls, not 2n.
func syncHash[K comparable](m *ebpf.Map, want map[K]uint32, writes *atomic.Uint64) error {
	have, err := readHash[K, uint32](m)
	if err != nil {
		return err
	}
	var stale, keys []K
	var vals []uint32
	for k := range have {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := deleteHash(m, stale, writes); err != nil {
		return err
	}
	for k, v := range want {
		if old, ok := have[k]; !ok || old != v {
			keys, vals = append(keys, k), append(vals, v)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	if _, err := m.BatchUpdate(keys, vals, nil); err != nil {
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("writing map %s: %w", m, err)
		}
		for i, k := range keys {
			if err := m.Put(k, vals[i]); err != nil {
				return fmt.Errorf("writing map %s: %w", m, err)
			}
		}
	}
	writes.Add(uint64(len(keys)))
	return nil
}

// hashBatch is how many entries one system call reads from a hash map. The kernel refuses a
// batch smaller than one bucket's entries (ENOSPC); buckets hold a handful.
const hashBatch = 1024

// readHash reads every entry of a hash map, hashBatch entries a system call (one per entry
// where the kernel has no batch lookup for the map).
func readHash[K comparable, V any](m *ebpf.Map) (map[K]V, error) {
	out := map[K]V{}
	keys := make([]K, hashBatch)
	vals := make([]V, hashBatch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			out[keys[i]] = vals[i]
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading map %s: %w", m, err)
		}
	}
	clear(out)
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		out[k] = v
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading map %s: %w", m, err)
	}
	return out, nil
}

// deleteHash deletes keys from a hash map in one batch, counting them in writes. A key gone
// meanwhile fails the batch; the rest are then deleted one by one.
func deleteHash[K comparable](m *ebpf.Map, keys []K, writes *atomic.Uint64) error {
	if len(keys) == 0 {
		return nil
	}
	done, err := m.BatchDelete(keys, nil)
	if err != nil {
		for _, k := range keys[done:] {
			if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("deleting from map %s: %w", m, err)
			}
		}
	}
	writes.Add(uint64(len(keys)))
	return nil
}
