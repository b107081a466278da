package netdev

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Rule selects a department's table for traffic arriving on a segment bridge.
type Rule struct {
	Family   int // unix.AF_INET or unix.AF_INET6
	IifName  string
	Mark     uint32 // fwmark match (0: none)
	Table    int
	Priority int
}

func (r Rule) String() string {
	f := "v4"
	if r.Family == unix.AF_INET6 {
		f = "v6"
	}
	if r.Mark != 0 {
		return fmt.Sprintf("%s pref %d fwmark %#x lookup %d", f, r.Priority, r.Mark, r.Table)
	}
	return fmt.Sprintf("%s pref %d iif %s lookup %d", f, r.Priority, r.IifName, r.Table)
}

// OwnedRules lists the policy rules carrying Proto.
func (m *Manager) OwnedRules() ([]Rule, error) {
	var out []Rule
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		rules, err := m.nl.RuleListFiltered(fam, &netlink.Rule{Protocol: Proto}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return nil, fmt.Errorf("listing rules: %w", err)
		}
		for _, r := range rules {
			if r.Protocol != Proto {
				continue
			}
			out = append(out, Rule{Family: fam, IifName: r.IifName, Mark: r.Mark, Table: r.Table, Priority: r.Priority})
		}
	}
	return out, nil
}

// EnsureRules makes the Proto rules exactly want.
func (m *Manager) EnsureRules(want []Rule) error {
	have, err := m.OwnedRules()
	if err != nil {
		return err
	}
	return converge(m, "rule", have, want,
		func(r Rule) error { return ignore(m.nl.RuleDel(m.rule(r)), unix.ENOENT) },
		func(r Rule) error { return ignore(m.nl.RuleAdd(m.rule(r)), unix.EEXIST) })
}

// converge brings what the kernel holds (have) to want: what is not wanted is deleted first,
// then what is missing added. A failure is collected and the rest still converges; each
// change is logged as "<what> deleted|added".
func converge[T interface {
	comparable
	fmt.Stringer
}](m *Manager, what string, have, want []T, del, add func(T) error) error {
	var errs []error
	wantSet, haveSet := setOf(want), setOf(have)
	for _, x := range have {
		if wantSet[x] {
			continue
		}
		if err := del(x); err != nil {
			errs = append(errs, fmt.Errorf("deleting %s %s: %w", what, x, err))
			continue
		}
		m.changed(what+" deleted", what, x.String())
	}
	for _, x := range want {
		if haveSet[x] {
			continue
		}
		if err := add(x); err != nil {
			errs = append(errs, fmt.Errorf("adding %s %s: %w", what, x, err))
			continue
		}
		m.changed(what+" added", what, x.String())
	}
	return errors.Join(errs...)
}

// ignore is err unless it is one of the errnos that mean "already so".
func ignore(err error, already ...unix.Errno) error {
	for _, e := range already {
		if errors.Is(err, e) {
			return nil
		}
	}
	return err
}

func setOf[T comparable](xs []T) map[T]bool {
	m := make(map[T]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

func (m *Manager) rule(r Rule) *netlink.Rule {
	nr := netlink.NewRule()
	nr.Family = r.Family
	nr.IifName = r.IifName
	if r.Mark != 0 {
		nr.Mark = r.Mark
	}
	nr.Table = r.Table
	nr.Priority = r.Priority
	nr.Protocol = Proto
	return nr
}

// Route is one route in a department table: a segment prefix on its bridge, or (Dev "") an
// unreachable route that ends the lookup so traffic never falls through to other tables.
type Route struct {
	Table int
	Dst   netip.Prefix
	Dev   string     // "" for unreachable
	Src   netip.Addr // preferred source (the gateway), optional
	Via   netip.Addr // next hop on Dev (a department's egress toward the fabric), optional
}

func (r Route) String() string {
	if r.Dev == "" {
		return fmt.Sprintf("table %d unreachable %s", r.Table, r.Dst)
	}
	if r.Via.IsValid() {
		return fmt.Sprintf("table %d %s via %s dev %s", r.Table, r.Dst, r.Via, r.Dev)
	}
	return fmt.Sprintf("table %d %s dev %s src %s", r.Table, r.Dst, r.Dev, r.Src)
}

// OwnedRoutes lists the Proto routes of all tables.
func (m *Manager) OwnedRoutes() ([]Route, error) {
	var out []Route
	names := map[int]string{}
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		routes, err := m.nl.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_UNSPEC, Protocol: Proto},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return nil, fmt.Errorf("listing routes: %w", err)
		}
		for _, r := range routes {
			if r.Protocol != Proto {
				continue
			}
			rt := Route{Table: r.Table}
			if r.Dst != nil {
				rt.Dst, _ = PrefixOf(r.Dst)
			} else if fam == unix.AF_INET {
				rt.Dst = netip.MustParsePrefix("0.0.0.0/0")
			} else {
				rt.Dst = netip.MustParsePrefix("::/0")
			}
			if r.Type != unix.RTN_UNREACHABLE {
				if _, ok := names[r.LinkIndex]; !ok {
					if l, err := m.nl.LinkByIndex(r.LinkIndex); err == nil {
						names[r.LinkIndex] = l.Attrs().Name
					} else {
						names[r.LinkIndex] = fmt.Sprintf("if%d", r.LinkIndex)
					}
				}
				rt.Dev = names[r.LinkIndex]
				if a, ok := netip.AddrFromSlice(r.Src); ok {
					rt.Src = a.Unmap()
				}
				if a, ok := netip.AddrFromSlice(r.Gw); ok {
					rt.Via = a.Unmap()
				}
			}
			out = append(out, rt)
		}
	}
	return out, nil
}

// EnsureRoutes makes the Proto routes (in every table) exactly want.
func (m *Manager) EnsureRoutes(want []Route) error {
	have, err := m.OwnedRoutes()
	if err != nil {
		return err
	}
	return converge(m, "route", have, want,
		func(r Route) error {
			nr, err := m.route(r, true)
			if err != nil {
				return err
			}
			return ignore(m.nl.RouteDel(nr), unix.ESRCH)
		},
		func(r Route) error {
			nr, err := m.route(r, false)
			if err != nil {
				return err
			}
			return m.nl.RouteReplace(nr)
		})
}

func (m *Manager) route(r Route, forDelete bool) (*netlink.Route, error) {
	nr := &netlink.Route{Table: r.Table, Dst: ipnet(r.Dst), Protocol: Proto}
	if r.Dst.Addr().Is4() {
		nr.Family = unix.AF_INET
	} else {
		nr.Family = unix.AF_INET6
	}
	if r.Dev == "" {
		nr.Type = unix.RTN_UNREACHABLE
		return nr, nil
	}
	l, err := m.linkByName(r.Dev)
	if err != nil {
		if forDelete {
			return nr, nil
		}
		return nil, fmt.Errorf("device %s: %w", r.Dev, err)
	}
	nr.LinkIndex = l.Attrs().Index
	nr.Scope = netlink.SCOPE_LINK
	if r.Via.IsValid() {
		nr.Gw = r.Via.AsSlice()
		nr.Scope = netlink.SCOPE_UNIVERSE
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	if r.Src.IsValid() {
		nr.Src = r.Src.AsSlice()
	}
	return nr, nil
}

// Neighbor is a permanent IP -> MAC entry on a bridge: guests the distributed gateway routes
// to are known, so the gateway never has to ARP (which would leave onto the trunk).
type Neighbor struct {
	Dev  string
	IP   netip.Addr
	MAC  string // canonical lower-case form
	FDB  string // when set: also a static bridge FDB entry pointing the MAC at this port
	Link int    // filled by the reader
}

// EnsureNeighbors makes the permanent neighbours and static FDB entries on the given bridges
// exactly want (other bridges are not looked at).
func (m *Manager) EnsureNeighbors(bridges []string, want []Neighbor) error {
	var errs []error
	type nkey struct {
		dev string
		ip  netip.Addr
	}
	type fkey struct{ port, mac string }
	wantN := map[nkey]string{}
	wantF := map[fkey]bool{}
	for _, n := range want {
		wantN[nkey{n.Dev, n.IP}] = n.MAC
		if n.FDB != "" {
			wantF[fkey{n.FDB, n.MAC}] = true
		}
	}
	ports := map[string]bool{}
	for _, n := range want {
		if n.FDB != "" {
			ports[n.FDB] = true
		}
	}
	// One dump of the FDB for all bridges (static entries only matter here).
	fdbAll, fdbErr := m.nl.NeighList(0, unix.AF_BRIDGE)
	if fdbErr != nil {
		errs = append(errs, fmt.Errorf("listing fdb: %w", fdbErr))
	}
	fdbBy := map[int][]netlink.Neigh{}
	for _, n := range fdbAll {
		if n.State == unix.NUD_NOARP {
			fdbBy[n.MasterIndex] = append(fdbBy[n.MasterIndex], n)
		}
	}
	for _, b := range bridges {
		br, err := m.linkByName(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("bridge %s: %w", b, err))
			continue
		}
		for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
			var have []netlink.Neigh
			if m.snap != nil && m.snap.links[b] != nil {
				for _, n := range m.snap.neigh[br.Attrs().Index] {
					if (fam == unix.AF_INET) == (n.IP.To4() != nil) {
						have = append(have, n)
					}
				}
			} else if have, err = m.nl.NeighList(br.Attrs().Index, fam); err != nil {
				errs = append(errs, fmt.Errorf("neighbours of %s: %w", b, err))
				continue
			}
			for _, n := range have {
				if n.State&unix.NUD_PERMANENT == 0 {
					continue
				}
				ip, _ := netip.AddrFromSlice(n.IP)
				k := nkey{b, ip.Unmap()}
				if mac, ok := wantN[k]; ok && mac == n.HardwareAddr.String() {
					delete(wantN, k)
					continue
				}
				if err := m.nl.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
					errs = append(errs, fmt.Errorf("deleting neighbour %s on %s: %w", ip, b, err))
					continue
				}
				m.changed("neighbour deleted", "dev", b, "ip", ip)
			}
		}
		// Static FDB entries live on the bridge ports (family AF_BRIDGE, master).
		for _, n := range fdbBy[br.Attrs().Index] {
			// Static entries dump as NUD_NOARP with the bridge as master (no NTF_MASTER
			// flag); learned ones are reachable/stale, the bridge's own are permanent.
			if n.MasterIndex != br.Attrs().Index || n.State != unix.NUD_NOARP {
				continue
			}
			pl, err := m.nl.LinkByIndex(n.LinkIndex)
			if err != nil || pl.Attrs().MasterIndex != br.Attrs().Index {
				continue
			}
			k := fkey{pl.Attrs().Name, n.HardwareAddr.String()}
			if wantF[k] {
				delete(wantF, k)
				continue
			}
			if !ports[pl.Attrs().Name] && !isOurName(pl.Attrs().Name) {
				continue
			}
			if err := m.nl.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("deleting fdb %s on %s: %w", n.HardwareAddr, pl.Attrs().Name, err))
				continue
			}
			m.changed("fdb deleted", "port", pl.Attrs().Name, "mac", n.HardwareAddr)
		}
	}
	for _, n := range want {
		if mac, ok := wantN[nkey{n.Dev, n.IP}]; ok {
			l, err := m.linkByName(n.Dev)
			if err != nil {
				errs = append(errs, fmt.Errorf("neighbour %s: device %s: %w", n.IP, n.Dev, err))
				continue
			}
			hw, _ := net.ParseMAC(mac)
			fam := unix.AF_INET
			if n.IP.Is6() {
				fam = unix.AF_INET6
			}
			nn := &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: fam, State: unix.NUD_PERMANENT, IP: n.IP.AsSlice(), HardwareAddr: hw}
			if err := m.nl.NeighSet(nn); err != nil {
				errs = append(errs, fmt.Errorf("neighbour %s lladdr %s on %s: %w", n.IP, mac, n.Dev, err))
				continue
			}
			delete(wantN, nkey{n.Dev, n.IP})
			m.changed("neighbour set", "dev", n.Dev, "ip", n.IP)
		}
		if n.FDB != "" && wantF[fkey{n.FDB, n.MAC}] {
			l, err := m.linkByName(n.FDB)
			if err != nil {
				errs = append(errs, fmt.Errorf("fdb %s: port %s: %w", n.MAC, n.FDB, err))
				continue
			}
			hw, _ := net.ParseMAC(n.MAC)
			fe := &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_BRIDGE, State: unix.NUD_NOARP, Flags: unix.NTF_MASTER, HardwareAddr: hw}
			if err := m.nl.NeighSet(fe); err != nil {
				errs = append(errs, fmt.Errorf("fdb %s on %s: %w", n.MAC, n.FDB, err))
				continue
			}
			delete(wantF, fkey{n.FDB, n.MAC})
			m.changed("fdb set", "port", n.FDB, "mac", n.MAC)
		}
	}
	return errors.Join(errs...)
}
