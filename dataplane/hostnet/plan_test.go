package hostnet_test

import (
	"flag"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/govcloud/govcloud/dataplane/firewall"
	"github.com/govcloud/govcloud/dataplane/hostnet"
)

var update = flag.Bool("update", false, "rewrite the golden files of TestPlanGolden")

func mac(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }

// TestPlanGolden: what Set would ask of the kernel for each host network, without root
// (Tailscale's TestRouterStates). Run with -update after an intended change and read the diff.
func TestPlanGolden(t *testing.T) {
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	lands := hostnet.Segment{Name: "lands-web", Department: "lands", VLAN: 120, IPv4: p("198.18.20.0/24"), Gateway: a("198.18.20.1"),
		IPv6: p("2001:db8:20::/64")}
	health := hostnet.Segment{Name: "health-web", Department: "health", VLAN: 130, IPv4: p("198.18.30.0/24"), Gateway: a("198.18.30.1")}
	depts := []hostnet.Department{
		{Name: "lands", ID: 1, Table: 1000, Egress: a("198.18.0.1"), Egress6: a("2001:db8::1"), VIPs: []netip.Addr{a("198.19.0.10")}},
		{Name: "health", ID: 2, Table: 1001},
	}
	for _, tc := range []struct {
		name string
		hn   hostnet.HostNetwork
	}{
		{"empty", hostnet.HostNetwork{}},
		{"lands-health", hostnet.HostNetwork{
			Uplink: "eth0", Departments: depts, Segments: []hostnet.Segment{lands, health},
			Guests: []hostnet.Guest{
				{Segment: "lands-web", Ifname: "gv00000001", MAC: mac("02:00:00:00:00:01"), Addr: a("198.18.20.2"), Addr6: a("2001:db8:20::2"), Serves: []netip.Addr{a("198.19.0.10")}},
				{Segment: "lands-web", MAC: mac("02:00:00:00:00:02"), Addr: a("198.18.20.3")}, // on another host
				{Segment: "health-web", Ifname: "gv00000003", MAC: mac("02:00:00:00:00:03"), Addr: a("198.18.30.2")},
				{Segment: "health-web", MAC: mac("02:00:00:00:00:04")}, // remote, no address yet: FDB only
			},
			Management:  []netip.Prefix{p("198.51.100.1/32")},
			VIPPorts:    []hostnet.VIPPort{{Segment: "lands-web", VIP: a("198.19.0.10"), Proto: 6, Port: 80}},
			TenantAllow: []hostnet.TenantAllow{firewall.Allow{Proto: 17, Addr: a("192.0.2.53"), Port: 53}},
		}},
		{"security-policy", hostnet.HostNetwork{
			Uplink: "eth0", Departments: depts, Segments: []hostnet.Segment{lands},
			Guests: []hostnet.Guest{
				{Segment: "lands-web", Ifname: "gv00000001", MAC: mac("02:00:00:00:00:01"), Addr: a("198.18.20.2"), Addr6: a("2001:db8:20::2")},
				{Segment: "lands-web", Ifname: "gv00000002", MAC: mac("02:00:00:00:00:02"), Addr: a("198.18.20.3")},
			},
			Guards: []hostnet.Guard{{Ifname: "gv00000001", Rules: []firewall.GuardRule{
				{Sources: []netip.Prefix{p("198.18.20.3/32")}, Proto: 6, Ports: []firewall.PortRange{{First: 5432, Last: 5432}}}}}},
		}},
		{"overlapping-prefixes-across-departments", hostnet.HostNetwork{
			Uplink: "eth0", Departments: depts,
			Segments: []hostnet.Segment{
				{Name: "lands-db", Department: "lands", VLAN: 121, IPv4: p("198.18.40.0/24"), Gateway: a("198.18.40.1")},
				{Name: "health-db", Department: "health", VLAN: 131, IPv4: p("198.18.40.0/24"), Gateway: a("198.18.40.1")},
			},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pl, err := hostnet.PlanFor(tc.hn, hostnet.DefaultRulePriority)
			if err != nil {
				t.Fatal(err)
			}
			got := pl.String()
			file := filepath.Join("testdata", "plan-"+tc.name+".golden")
			if *update {
				if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run with -update to write it)", err)
			}
			if got != string(want) {
				t.Errorf("plan differs from %s (run with -update and read the diff):\n%s", file, got)
			}
			// Planning is pure: the same input gives the same plan.
			again, _ := hostnet.PlanFor(tc.hn, hostnet.DefaultRulePriority)
			if again.String() != got {
				t.Error("two plans of one input differ")
			}
		})
	}
	if _, err := hostnet.PlanFor(hostnet.HostNetwork{Segments: []hostnet.Segment{lands}}, 1000); err == nil {
		t.Error("a segment of an unknown department was planned")
	}
	local := hostnet.Guest{Segment: "lands-web", Ifname: "gv00000001", MAC: mac("02:00:00:00:00:01"), Addr: a("198.18.20.2")}
	remote := hostnet.Guest{Segment: "lands-web", MAC: mac("02:00:00:00:00:02"), Addr: a("198.18.20.3")}
	for name, gs := range map[string][]hostnet.Guard{
		"guard of an unknown port": {{Ifname: "gv0000000f"}},
		"guard of a remote guest":  {{Ifname: ""}},
		"guard listed twice":       {{Ifname: "gv00000001"}, {Ifname: "gv00000001"}},
	} {
		hn := hostnet.HostNetwork{Uplink: "eth0", Departments: depts, Segments: []hostnet.Segment{lands}, Guests: []hostnet.Guest{local, remote}, Guards: gs}
		if _, err := hostnet.PlanFor(hn, 1000); err == nil {
			t.Errorf("%s: planned", name)
		}
	}
}
