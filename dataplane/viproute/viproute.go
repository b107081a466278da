// Package viproute keeps the kernel routes of VIPs: one /32 (or /128) per VIP with a next hop
// per healthy backend (multipath: the kernel spreads flows by hash, L4 with the host network's
// fib_multipath_hash_policy).
//   - A public VIP's route is in the main table and lists the backends on this host: it
//     delivers what the load balancer passed or decapsulated.
//   - An internal VIP's route is in its department's table and lists every backend, on any
//     host (remote guests are reached over their segment's bridge and the trunk): the
//     department's guests reach it through their gateway, and no other table knows it.
//
// Set is declarative: routes it made that are no longer wanted are removed, in any table.
// Routes carry their own protocol number so nothing else on the host is touched.
package viproute

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Proto marks the routes this package owns (rtnetlink protocol number, unused by iproute2).
const Proto netlink.RouteProtocol = 0x47

// NextHop is one backend: its address and the bridge of its segment. Table is the routing
// table of the VIP's route (0: main); every next hop of a VIP names the same table.
type NextHop struct {
	Addr  netip.Addr
	Dev   string
	Table int
}

// table is the routing table of a VIP's route: its next hops' (0 meaning main), or an error
// when they disagree.
func table(vip netip.Addr, nhs []NextHop) (int, error) {
	t := nhs[0].Table
	for _, nh := range nhs[1:] {
		if nh.Table != t {
			return 0, fmt.Errorf("route to VIP %s: next hops in tables %d and %d", vip, t, nh.Table)
		}
	}
	if t == 0 {
		t = unix.RT_TABLE_MAIN
	}
	return t, nil
}

// Routes realises VIP routes through one netlink handle (the host's namespace).
type Routes struct {
	nl     *netlink.Handle
	own    bool // Open made nl: Close closes it
	log    *slog.Logger
	writes atomic.Uint64
}

// Writes is the number of routes Set replaced or removed since the Routes was made; a Set
// given the routes the kernel holds adds 0.
func (r *Routes) Writes() uint64 { return r.writes.Load() }

// New returns a Routes working through nl; nl stays the caller's to close.
func New(nl *netlink.Handle, log *slog.Logger) *Routes {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Routes{nl: nl, log: log}
}

// Open returns a Routes with a netlink handle of its own in the calling thread's network
// namespace; Close closes the handle.
func Open(log *slog.Logger) (*Routes, error) {
	nl, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("vip routes: netlink: %w", err)
	}
	r := New(nl, log)
	r.own = true
	return r, nil
}

// Close releases the netlink handle Open made. The routes stay; Set(nil) removes them.
func (r *Routes) Close() error {
	if r.own {
		r.nl.Close()
	}
	return nil
}

// Set makes the owned routes exactly want: VIP -> next hops. A VIP with no next hop gets no
// route (its traffic is not delivered here).
func (r *Routes) Set(want map[netip.Addr][]NextHop) error {
	have, err := r.list()
	if err != nil {
		return err
	}
	var errs []error
	for vip, nhs := range want {
		if len(nhs) == 0 {
			continue
		}
		route, err := r.route(vip, nhs)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if old, ok := have[vip]; ok && old.Table == route.Table && sameNextHops(old, route) {
			continue
		}
		if old, ok := have[vip]; ok && old.Table != route.Table { // moved to another table (scope change)
			r.writes.Add(1)
			if err := r.nl.RouteDel(&old); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("removing route to VIP %s from table %d: %w", vip, old.Table, err))
				continue
			}
		}
		r.writes.Add(1)
		if err := r.nl.RouteReplace(route); err != nil {
			errs = append(errs, fmt.Errorf("route to VIP %s via %v: %w", vip, nhs, err))
			continue
		}
		r.log.Debug("vip route set", "vip", vip, "nexthops", len(nhs))
	}
	for vip, old := range have {
		if len(want[vip]) > 0 {
			continue
		}
		r.writes.Add(1)
		if err := r.nl.RouteDel(&old); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("removing route to VIP %s: %w", vip, err))
		}
	}
	return errors.Join(errs...)
}

func (r *Routes) route(vip netip.Addr, nhs []NextHop) (*netlink.Route, error) {
	bits := 32
	if vip.Is6() {
		bits = 128
	}
	t, err := table(vip, nhs)
	if err != nil {
		return nil, err
	}
	rt := &netlink.Route{Dst: &net.IPNet{IP: vip.AsSlice(), Mask: net.CIDRMask(bits, bits)}, Protocol: Proto, Table: t}
	sorted := slices.Clone(nhs)
	slices.SortFunc(sorted, func(a, b NextHop) int { return a.Addr.Compare(b.Addr) })
	for _, nh := range sorted {
		l, err := r.nl.LinkByName(nh.Dev)
		if err != nil {
			return nil, fmt.Errorf("VIP %s: backend %s: device %q: %w", vip, nh.Addr, nh.Dev, err)
		}
		rt.MultiPath = append(rt.MultiPath, &netlink.NexthopInfo{LinkIndex: l.Attrs().Index, Gw: nh.Addr.AsSlice(), Flags: int(netlink.FLAG_ONLINK)})
	}
	if len(rt.MultiPath) == 1 {
		rt.LinkIndex, rt.Gw, rt.Flags = rt.MultiPath[0].LinkIndex, rt.MultiPath[0].Gw, int(netlink.FLAG_ONLINK)
		rt.MultiPath = nil
	}
	return rt, nil
}

func (r *Routes) list() (map[netip.Addr]netlink.Route, error) {
	out := map[netip.Addr]netlink.Route{}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		// Table unspecified with RT_FILTER_TABLE: every table's.
		rs, err := r.nl.RouteListFiltered(fam, &netlink.Route{Protocol: Proto, Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("listing VIP routes: %w", err)
		}
		for _, rt := range rs {
			if rt.Dst == nil {
				continue
			}
			if a, ok := netip.AddrFromSlice(rt.Dst.IP); ok {
				out[a.Unmap()] = rt
			}
		}
	}
	return out, nil
}

func sameNextHops(have netlink.Route, want *netlink.Route) bool {
	key := func(r *netlink.Route) string {
		var parts []string
		if len(r.MultiPath) == 0 {
			parts = append(parts, fmt.Sprintf("%d/%s", r.LinkIndex, r.Gw))
		}
		for _, nh := range r.MultiPath {
			parts = append(parts, fmt.Sprintf("%d/%s", nh.LinkIndex, nh.Gw))
		}
		slices.Sort(parts)
		return strings.Join(parts, ",")
	}
	return key(&have) == key(want)
}
