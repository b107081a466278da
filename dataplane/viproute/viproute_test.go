package viproute

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/govcloud/govcloud/dataplane/netnstest"
)

// TestSetTables drives Routes through the kernel of a namespace of its own: public VIPs in
// the main table, internal ones in their department's table, a VIP moved between tables
// (its scope changed), a next-hop set replaced, everything removed; routes of other owners
// stay. Each step's expected routes are read back with ip(8).
func TestSetTables(t *testing.T) {
	netnstest.RequirePrivileged(t)
	ns := netnstest.New(t, "vipr")
	for _, c := range [][]string{
		{"ip", "link", "add", "br1", "type", "bridge"}, {"ip", "link", "set", "br1", "up"},
		{"ip", "addr", "add", "198.18.20.1/24", "dev", "br1"},
		{"ip", "route", "add", "198.19.0.99/32", "dev", "br1", "table", "1000"}, // not ours
	} {
		ns.MustRun(t, c[0], c[1:]...)
	}
	var r *Routes
	if err := ns.Do(func() (err error) { r, err = Open(nil); return err }); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a := netip.MustParseAddr
	pub, internal := a("198.19.255.2"), a("198.19.0.10")
	show := func() string {
		out := ns.MustRun(t, "ip", "-4", "route", "show", "table", "all", "proto", "71")
		return strings.Join(strings.Fields(out), " ")
	}
	for _, step := range []struct {
		name string
		want map[netip.Addr][]NextHop
		has  []string // substrings of the owned routes, in order
		not  []string
	}{
		{"public in main, internal in its table", map[netip.Addr][]NextHop{
			pub:      {{Addr: a("198.18.20.2"), Dev: "br1"}},
			internal: {{Addr: a("198.18.20.3"), Dev: "br1", Table: 1000}, {Addr: a("198.18.20.4"), Dev: "br1", Table: 1000}},
		}, []string{"198.19.0.10 table 1000 nexthop", "nexthop via 198.18.20.3 dev br1 weight 1 onlink nexthop via 198.18.20.4", "198.19.255.2 via 198.18.20.2 dev br1"}, nil},
		{"internal becomes public (moves to main)", map[netip.Addr][]NextHop{
			pub:      {{Addr: a("198.18.20.2"), Dev: "br1"}},
			internal: {{Addr: a("198.18.20.3"), Dev: "br1"}},
		}, []string{"198.19.0.10 via 198.18.20.3 dev br1 onlink", "198.19.255.2 via"}, []string{"table 1000"}},
		{"public becomes internal, next hop replaced", map[netip.Addr][]NextHop{
			pub: {{Addr: a("198.18.20.5"), Dev: "br1", Table: 1001}},
		}, []string{"198.19.255.2 via 198.18.20.5 dev br1 table 1001"}, []string{"198.19.0.10", "198.18.20.2"}},
		{"nothing", nil, nil, []string{"198.19"}},
	} {
		if err := r.Set(step.want); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		got := show()
		for _, s := range step.has {
			if !strings.Contains(got, s) {
				t.Fatalf("%s: routes %q lack %q", step.name, got, s)
			}
		}
		for _, s := range step.not {
			if strings.Contains(got, s) {
				t.Fatalf("%s: routes %q hold %q", step.name, got, s)
			}
		}
		// Set again: nothing to write.
		before := r.Writes()
		if err := r.Set(step.want); err != nil || r.Writes() != before {
			t.Fatalf("%s: second Set: %v, %d writes", step.name, err, r.Writes()-before)
		}
	}
	if out := ns.MustRun(t, "ip", "route", "show", "table", "1000"); !strings.Contains(out, "198.19.0.99") {
		t.Fatalf("another owner's route was removed: %q", out)
	}
	// Next hops of one VIP in two tables: refused, nothing written.
	if err := r.Set(map[netip.Addr][]NextHop{pub: {{Addr: a("198.18.20.2"), Dev: "br1"}, {Addr: a("198.18.20.3"), Dev: "br1", Table: 1000}}}); err == nil || !strings.Contains(err.Error(), "tables") {
		t.Fatalf("next hops in two tables: %v", err)
	}
	var f Fake
	if err := f.Set(map[netip.Addr][]NextHop{pub: {{Addr: a("198.18.20.2"), Dev: "br1"}, {Addr: a("198.18.20.3"), Dev: "br1", Table: 1000}}}); err == nil {
		t.Fatal("the fake accepted next hops in two tables")
	}
}
