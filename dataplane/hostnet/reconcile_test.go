package hostnet_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/govcloud/govcloud/dataplane/hostnet"
	"github.com/govcloud/govcloud/dataplane/netdev"
	"github.com/govcloud/govcloud/dataplane/netnstest"
	tt "github.com/govcloud/govcloud/dataplane/trunk/trunktest"
)

// Desired states for the reconcile tests: A, then B (one segment gone, one new, a guest moved
// and one replaced, a department's table renumbered), then empty.
func stateA() hostnet.HostNetwork {
	return hostnet.HostNetwork{
		Uplink:      "up0",
		Departments: []hostnet.Department{{Name: "lands", ID: 3, Table: 100}, {Name: "health", ID: 7, Table: 200}},
		Segments: []hostnet.Segment{
			{Name: "lands-web", Department: "lands", VLAN: 120, IPv4: pfx("198.18.20.0/24"), Gateway: ip("198.18.20.1"), IPv6: pfx("2001:db8:20::/64")},
			{Name: "lands-db", Department: "lands", VLAN: 121, IPv4: pfx("198.18.21.0/24"), Gateway: ip("198.18.21.1")},
			{Name: "health-web", Department: "health", VLAN: 130, IPv4: pfx("198.18.30.0/24"), Gateway: ip("198.18.30.1")},
		},
		Guests: []hostnet.Guest{
			{Segment: "lands-web", Ifname: "vga", MAC: tt.MAC("02:00:00:00:00:0a"), Addr: ip("198.18.20.10"), Addr6: ip("2001:db8:20::a")},
			{Segment: "health-web", Ifname: "vgb", MAC: tt.MAC("02:00:00:00:00:0b"), Addr: ip("198.18.30.10")},
			{Segment: "lands-web", MAC: tt.MAC("02:00:00:00:00:0c"), Addr: ip("198.18.20.11")}, // remote
		},
		Management: []netip.Prefix{pfx("192.0.2.0/24")},
	}
}

func stateB() hostnet.HostNetwork {
	return hostnet.HostNetwork{
		Uplink:      "up0",
		Departments: []hostnet.Department{{Name: "lands", ID: 3, Table: 101}, {Name: "health", ID: 7, Table: 200}},
		Segments: []hostnet.Segment{
			{Name: "lands-web", Department: "lands", VLAN: 120, IPv4: pfx("198.18.20.0/24"), Gateway: ip("198.18.20.254")},
			{Name: "health-web", Department: "health", VLAN: 130, IPv4: pfx("198.18.30.0/24"), Gateway: ip("198.18.30.1")},
			{Name: "health-db", Department: "health", VLAN: 131, ID: 9131, IPv4: pfx("198.18.31.0/24"), Gateway: ip("198.18.31.1")},
		},
		Guests: []hostnet.Guest{
			{Segment: "health-db", Ifname: "vga", MAC: tt.MAC("02:00:00:00:00:0a"), Addr: ip("198.18.31.10")},
			{Segment: "lands-web", MAC: tt.MAC("02:00:00:00:00:0d"), Addr: ip("198.18.20.12")}, // remote
		},
	}
}

// expected renders what the kernel must hold for d, written out from the desired state
// independently of hostnet's code.
func expected(d hostnet.HostNetwork) []string {
	var out []string
	table := map[string]int{}
	deptID := map[string]uint32{}
	for _, dp := range d.Departments {
		table[dp.Name], deptID[dp.Name] = dp.Table, dp.ID
	}
	vlanOf := map[string]uint16{}
	used := map[string]bool{}
	for _, s := range d.Segments {
		vlanOf[s.Name] = s.VLAN
		used[s.Department] = true
		br := fmt.Sprintf("gcbr%d", s.VLAN)
		addrs := []string{fmt.Sprintf("%s/%d", s.Gateway, s.IPv4.Bits())}
		if s.IPv6.IsValid() {
			addrs = append(addrs, fmt.Sprintf("%s/%d", s.IPv6.Addr().Next(), s.IPv6.Bits()))
		}
		slices.Sort(addrs)
		out = append(out,
			fmt.Sprintf("link %s bridge master= mac=02:67:63:00:00:01 addrs=%s", br, strings.Join(addrs, ",")),
			fmt.Sprintf("link gcvb%d veth master=%s", s.VLAN, br),
			fmt.Sprintf("link gcvt%d veth master=", s.VLAN),
			fmt.Sprintf("rule v4 pref 1000 iif %s lookup %d", br, table[s.Department]),
			fmt.Sprintf("rule v6 pref 1000 iif %s lookup %d", br, table[s.Department]),
			fmt.Sprintf("route table %d %s dev %s src %s", table[s.Department], s.IPv4, br, s.Gateway))
		if s.IPv6.IsValid() {
			out = append(out, fmt.Sprintf("route table %d %s dev %s src %s", table[s.Department], s.IPv6, br, s.IPv6.Addr().Next()))
		}
		id := s.ID
		if id == 0 {
			id = uint32(s.VLAN)
		}
		out = append(out, fmt.Sprintf("trunk vlan %d port gcvt%d dept %d seg %d", s.VLAN, s.VLAN, deptID[s.Department], id))
	}
	for _, dp := range d.Departments {
		if used[dp.Name] {
			out = append(out, fmt.Sprintf("rule v4 pref 1000 fwmark %#x lookup %d", dp.Table, dp.Table),
				fmt.Sprintf("rule v6 pref 1000 fwmark %#x lookup %d", dp.Table, dp.Table))
			out = append(out, fmt.Sprintf("route table %d unreachable 0.0.0.0/0", dp.Table), fmt.Sprintf("route table %d unreachable ::/0", dp.Table))
		}
	}
	for _, g := range d.Guests {
		br := fmt.Sprintf("gcbr%d", vlanOf[g.Segment])
		if g.Ifname != "" {
			out = append(out, fmt.Sprintf("port %s master=%s", g.Ifname, br))
		} else {
			out = append(out, fmt.Sprintf("fdb %s on gcvb%d", g.MAC, vlanOf[g.Segment]))
		}
		for _, a := range []netip.Addr{g.Addr, g.Addr6} {
			if a.IsValid() {
				out = append(out, fmt.Sprintf("neigh %s %s lladdr %s", br, a, g.MAC))
			}
		}
	}
	if len(d.Segments) > 0 {
		out = append(out, "nft bridge govcloud", "nft inet govcloud")
		out = append(out, "link-attach uplink up0")
	}
	for _, s := range d.Segments {
		out = append(out, fmt.Sprintf("link-attach segment gcvt%d", s.VLAN))
	}
	slices.Sort(out)
	return out
}

// observe reads the kernel state of the namespace in the same form.
func observe(t *testing.T, ns *netnstest.NS, h *hostnet.Host, guestPorts []string) []string {
	t.Helper()
	nl := ns.Netlink()
	var out []string
	links, err := nl.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	name := map[int]string{}
	for _, l := range links {
		name[l.Attrs().Index] = l.Attrs().Name
	}
	bridges := map[int]bool{}
	for _, l := range links {
		a := l.Attrs()
		if _, ours := netdev.SegmentVLAN(a.Name); !ours && a.Alias != netdev.Alias {
			if slices.Contains(guestPorts, a.Name) && a.MasterIndex != 0 {
				out = append(out, fmt.Sprintf("port %s master=%s", a.Name, name[a.MasterIndex]))
			}
			continue
		}
		s := fmt.Sprintf("link %s %s master=%s", a.Name, l.Type(), name[a.MasterIndex])
		if l.Type() == "bridge" {
			bridges[a.Index] = true
			addrs, _ := nl.AddrList(l, unix.AF_UNSPEC)
			var as []string
			for _, ad := range addrs {
				as = append(as, ad.IPNet.String())
			}
			slices.Sort(as)
			s += fmt.Sprintf(" mac=%s addrs=%s", a.HardwareAddr, strings.Join(as, ","))
			for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
				ns, _ := nl.NeighList(a.Index, fam)
				for _, n := range ns {
					if n.State&unix.NUD_PERMANENT != 0 {
						out = append(out, fmt.Sprintf("neigh %s %s lladdr %s", a.Name, n.IP, n.HardwareAddr))
					}
				}
			}
		}
		out = append(out, s)
	}
	fdb, _ := nl.NeighList(0, unix.AF_BRIDGE)
	for _, n := range fdb {
		if n.State == unix.NUD_NOARP && n.MasterIndex != 0 {
			out = append(out, fmt.Sprintf("fdb %s on %s", n.HardwareAddr, name[n.LinkIndex]))
		}
	}
	m := netdev.New(nl, nil)
	rules, err := m.OwnedRules()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		out = append(out, "rule "+r.String())
	}
	routes, err := m.OwnedRoutes()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		out = append(out, "route "+r.String())
	}
	if h != nil {
		segs, err := h.Trunk().Segments()
		if err != nil {
			t.Fatal(err)
		}
		for v, s := range segs {
			out = append(out, fmt.Sprintf("trunk vlan %d port %s dept %d seg %d", v, name[s.Ifindex], s.Department, s.ID))
		}
		att, err := h.Trunk().Attached()
		if err != nil {
			t.Fatal(err)
		}
		for role, names := range att {
			for _, n := range names {
				out = append(out, fmt.Sprintf("link-attach %s %s", role, n))
			}
		}
	}
	rs := ns.MustRun(t, "nft", "list", "tables")
	for _, line := range strings.Split(rs, "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[2] == "govcloud" {
			out = append(out, "nft "+f[1]+" govcloud")
		}
	}
	slices.Sort(out)
	return out
}

func diff(got, want []string) string {
	var b strings.Builder
	for _, w := range want {
		if !slices.Contains(got, w) {
			fmt.Fprintf(&b, "  missing: %s\n", w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			fmt.Fprintf(&b, "  extra:   %s\n", g)
		}
	}
	return b.String()
}

// quiet runs fn and returns the netlink notifications (links, addresses, routes, neighbours)
// the namespace emitted meanwhile.
func quiet(t *testing.T, ns *netnstest.NS, fn func()) []string {
	t.Helper()
	done := make(chan struct{})
	lu, au, ru, nu := make(chan netlink.LinkUpdate, 256), make(chan netlink.AddrUpdate, 256), make(chan netlink.RouteUpdate, 256), make(chan netlink.NeighUpdate, 256)
	if err := netlink.LinkSubscribeAt(ns.Handle(), lu, done); err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrSubscribeAt(ns.Handle(), au, done); err != nil {
		t.Fatal(err)
	}
	if err := netlink.RouteSubscribeAt(ns.Handle(), ru, done); err != nil {
		t.Fatal(err)
	}
	if err := netlink.NeighSubscribeAt(ns.Handle(), nu, done); err != nil {
		t.Fatal(err)
	}
	// Let the kernel finish what earlier changes started (carrier, IPv6 multicast routes).
	for settled := false; !settled; {
		select {
		case <-lu:
		case <-au:
		case <-ru:
		case <-nu:
		case <-time.After(500 * time.Millisecond):
			settled = true
		}
	}
	fn()
	time.Sleep(200 * time.Millisecond)
	defer close(done)
	var ev []string
	for {
		select {
		case u := <-lu:
			ev = append(ev, "link "+u.Attrs().Name)
		// The kernel's own IPv6 housekeeping (link-local DAD finishing, multicast routes)
		// on interfaces that came up earlier is not a change Set made.
		case u := <-au:
			if !u.LinkAddress.IP.IsLinkLocalUnicast() {
				ev = append(ev, "addr "+u.LinkAddress.String())
			}
		case u := <-ru:
			if u.Route.Table != unix.RT_TABLE_LOCAL || u.Route.Dst == nil || !(u.Route.Dst.IP.IsLinkLocalUnicast() || u.Route.Dst.IP.IsMulticast()) {
				ev = append(ev, "route "+u.Route.String())
			}
		case u := <-nu:
			if u.State&unix.NUD_PERMANENT != 0 && u.Family != unix.AF_BRIDGE || u.Family == unix.AF_BRIDGE && u.State == unix.NUD_NOARP {
				ev = append(ev, "neigh "+u.String())
			}
		default:
			return ev
		}
	}
}

func TestReconcile(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "nft")
	host := netnstest.New(t, "gct-rh")
	peer := netnstest.New(t, "gct-rp")
	if err := netnstest.Veth(host, "up0", peer, "up1"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"vga", "vgb"} {
		if err := netnstest.Veth(host, p, peer, p+"p"); err != nil {
			t.Fatal(err)
		}
	}
	ports := []string{"vga", "vgb"}
	pin := filepath.Join(tt.BPFFS(t), "host")
	fwdBefore := strings.TrimSpace(host.MustRun(t, "cat", "/proc/sys/net/ipv4/ip_forward"))

	state := t.TempDir()
	h, err := hostnet.New(hostnet.Config{NetNS: host.Handle(), PinPath: pin, StateDir: state, Keep: true})
	if err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, h *hostnet.Host, d hostnet.HostNetwork) {
		t.Helper()
		if got, want := observe(t, host, h, ports), expected(d); !slices.Equal(got, want) {
			t.Fatalf("kernel state differs from desired:\n%s", diff(got, want))
		}
	}

	t.Run("apply A", func(t *testing.T) {
		if err := h.Set(stateA()); err != nil {
			t.Fatal(err)
		}
		check(t, h, stateA())
		if v := strings.TrimSpace(host.MustRun(t, "cat", "/proc/sys/net/ipv4/ip_forward")); v != "1" {
			t.Fatalf("ip_forward = %s", v)
		}
	})
	t.Run("apply A again changes nothing", func(t *testing.T) {
		rulesBefore := host.MustRun(t, "ip", "rule")
		nftList := func() string { // rule handles show any re-creation; counters move with traffic
			return packetsRE.ReplaceAllString(host.MustRun(t, "nft", "-a", "list", "ruleset"), "packets")
		}
		nftBefore := nftList()
		ev := quiet(t, host, func() {
			if err := h.Set(stateA()); err != nil {
				t.Fatal(err)
			}
		})
		if len(ev) != 0 {
			t.Fatalf("second Set emitted netlink changes: %v", ev)
		}
		if n := h.Changes(); n != 0 {
			t.Fatalf("second Set made %d writes", n)
		}
		if after := nftList(); host.MustRun(t, "ip", "rule") != rulesBefore || after != nftBefore {
			t.Fatalf("rules or nftables changed:\n%s", diff(strings.Split(after, "\n"), strings.Split(nftBefore, "\n")))
		}
	})
	t.Run("change to B", func(t *testing.T) {
		if err := h.Set(stateB()); err != nil {
			t.Fatal(err)
		}
		check(t, h, stateB())
	})
	t.Run("restart after a crash half-way converges", func(t *testing.T) {
		// The agent dies (handles gone, dataplane kept) and someone breaks things meanwhile.
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
		host.MustRun(t, "ip", "link", "del", "gcbr131")
		host.MustRun(t, "ip", "rule", "del", "pref", "1000", "iif", "gcbr130")
		host.MustRun(t, "nft", "delete", "table", "inet", "govcloud")
		host.MustRun(t, "ip", "link", "add", "gcbr999", "type", "bridge")
		host.MustRun(t, "ip", "route", "add", "unreachable", "198.51.100.0/24", "table", "555", "proto", "199")
		host.MustRun(t, "ip", "link", "set", "vgb", "master", "gcbr130") // leftover port
		h2, err := hostnet.New(hostnet.Config{NetNS: host.Handle(), PinPath: pin, StateDir: state})
		if err != nil {
			t.Fatal(err)
		}
		h = h2
		if err := h.Trunk().DeleteSegment(120); err != nil {
			t.Fatal(err)
		}
		if err := h.Set(stateB()); err != nil {
			t.Fatal(err)
		}
		check(t, h, stateB())
		if err := h.Set(stateB()); err != nil || h.Changes() != 0 {
			t.Fatalf("Set after convergence: %d writes, %v", h.Changes(), err)
		}
	})
	t.Run("empty leaves nothing", func(t *testing.T) {
		if err := h.Set(hostnet.HostNetwork{}); err != nil {
			t.Fatal(err)
		}
		check(t, h, hostnet.HostNetwork{})
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(pin); !os.IsNotExist(err) {
			t.Fatalf("pin path %s still there: %v", pin, err)
		}
		if got := observe(t, host, nil, ports); len(got) != 0 {
			t.Fatalf("left behind: %v", got)
		}
		if v := strings.TrimSpace(host.MustRun(t, "cat", "/proc/sys/net/ipv4/ip_forward")); v != fwdBefore {
			t.Fatalf("ip_forward = %s, was %s", v, fwdBefore)
		}
		for _, p := range ports {
			if _, err := host.Netlink().LinkByName(p); err != nil {
				t.Fatalf("guest port %s was deleted: %v", p, err)
			}
		}
	})
}

func TestValidate(t *testing.T) {
	base := stateA()
	cases := map[string]func(*hostnet.HostNetwork){
		"duplicate vlan":     func(d *hostnet.HostNetwork) { d.Segments[1].VLAN = 120 },
		"vlan 0":             func(d *hostnet.HostNetwork) { d.Segments[0].VLAN = 0 },
		"vlan 4095":          func(d *hostnet.HostNetwork) { d.Segments[0].VLAN = 4095 },
		"unknown department": func(d *hostnet.HostNetwork) { d.Segments[0].Department = "nope" },
		"gateway outside":    func(d *hostnet.HostNetwork) { d.Segments[0].Gateway = ip("198.18.99.1") },
		"reserved table":     func(d *hostnet.HostNetwork) { d.Departments[0].Table = 254 },
		"duplicate table":    func(d *hostnet.HostNetwork) { d.Departments[1].Table = 100 },
		"guest outside":      func(d *hostnet.HostNetwork) { d.Guests[0].Addr = ip("198.18.30.5") },
		"guest short MAC":    func(d *hostnet.HostNetwork) { d.Guests[0].MAC = d.Guests[0].MAC[:3] },
		"duplicate port": func(d *hostnet.HostNetwork) {
			d.Guests[1].Ifname = "vga"
			d.Guests[1].Segment = "lands-web"
			d.Guests[1].Addr = ip("198.18.20.3")
		},
		"no uplink":           func(d *hostnet.HostNetwork) { d.Uplink = "" },
		"unknown guest seg":   func(d *hostnet.HostNetwork) { d.Guests[0].Segment = "nope" },
		"gateway is network":  func(d *hostnet.HostNetwork) { d.Segments[0].Gateway = ip("198.18.20.0") },
		"duplicate dept id":   func(d *hostnet.HostNetwork) { d.Departments[1].ID = 3 },
		"v6 gateway without6": func(d *hostnet.HostNetwork) { d.Segments[1].Gateway6 = ip("2001:db8::1") },
	}
	if err := base.Validate(); err != nil {
		t.Fatalf("base: %v", err)
	}
	for name, mut := range cases {
		d := stateA()
		mut(&d)
		if err := d.Validate(); err == nil {
			t.Errorf("%s: no error", name)
		}
		f := &hostnet.Fake{}
		if err := f.Set(d); err == nil {
			t.Errorf("%s: fake accepted it", name)
		}
	}
	f := &hostnet.Fake{}
	if err := f.Set(base); err != nil {
		t.Fatal(err)
	}
	if cur, ok := f.Current(); !ok || len(cur.Segments) != 3 {
		t.Fatalf("fake current = %+v", cur)
	}
}
