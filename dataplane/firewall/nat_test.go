package firewall_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/govcloud/govcloud/dataplane/firewall"
)

func natConfig() firewall.Config {
	return firewall.Config{Uplink: "eth0",
		Departments: []firewall.Department{
			{ID: 1, Mark: 1001, Bridges: []string{"gcbr120"}, Prefixes: []netip.Prefix{netip.MustParsePrefix("198.18.20.0/24")}, SNAT: netip.MustParseAddr("198.51.100.1")},
			{ID: 2, Mark: 1002, Bridges: []string{"gcbr130"}, Prefixes: []netip.Prefix{netip.MustParsePrefix("198.18.20.0/24")}},
		},
		FloatingIPs: []firewall.FloatingIP{{Dept: 2, Public: netip.MustParseAddr("198.51.100.9"), Private: netip.MustParseAddr("198.18.20.5")}}}
}

// TestBuildNAT: the rules of egress and floating IPs as Apply sends them (rendered): zones per
// department, the floating IP's mark, DNAT, SNAT (floating IP before the egress address) and
// the forward exception; a department with neither gets no NAT rule.
func TestBuildNAT(t *testing.T) {
	p, err := firewall.Build(natConfig())
	if err != nil {
		t.Fatal(err)
	}
	got := p.String()
	for _, want := range []string{
		"  chain zone { type filter hook prerouting priority -300 }\n" +
			"    iifname @dept-1 meta nfproto == ipv4 ip saddr @segments4-1 ip daddr != @segments4-1 ip daddr != @management4 ct zone set 1\n" +
			"    iifname == \"eth0\" meta nfproto == ipv4 ip daddr == 198.51.100.1 ct zone set 1\n" +
			"    iifname @dept-2 meta nfproto == ipv4 ip saddr @segments4-2 ip daddr != @segments4-2 ip daddr != @management4 ct zone set 2\n" +
			"    iifname == \"eth0\" meta nfproto == ipv4 ip daddr == 198.51.100.9 ct zone set 2\n",
		"    iifname == \"eth0\" meta nfproto == ipv4 ip daddr == 198.51.100.9 ct mark set 1002 meta mark set 1002\n",
		"  chain dnat { type nat hook prerouting priority -100 }\n" +
			"    iifname == \"eth0\" meta nfproto == ipv4 ip daddr == 198.51.100.9 dnat ip to 198.18.20.5\n",
		"  chain snat { type nat hook postrouting priority 100 }\n" +
			"    oifname == \"eth0\" meta nfproto == ipv4 meta mark == 1001 ip saddr @segments4-1 snat ip to 198.51.100.1\n" +
			"    oifname == \"eth0\" meta nfproto == ipv4 meta mark == 1002 ip saddr == 198.18.20.5 snat ip to 198.51.100.9\n",
		"    iifname != @tenant oifname @dept-2 ct mark == 1002 ct status & 0x20 != 0x0 accept\n" +
			"    iifname != @tenant oifname @dept-1 counter name \"drop-1-from_fabric\" drop\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("plan lacks\n%s\ngot:\n%s", want, got)
		}
	}
	// Without egress or floating IPs: no NAT chain at all, and the plan is told apart.
	cfg := natConfig()
	cfg.Departments[0].SNAT, cfg.FloatingIPs = netip.Addr{}, nil
	q, err := firewall.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s := q.String(); strings.Contains(s, "chain zone") || strings.Contains(s, "nat hook") || q.Hash == p.Hash {
		t.Errorf("no NAT wanted, got:\n%s", s)
	}
	// Another floating IP address is another plan.
	cfg = natConfig()
	cfg.FloatingIPs[0].Public = netip.MustParseAddr("198.51.100.10")
	if r, _ := firewall.Build(cfg); r == nil || r.Hash == p.Hash {
		t.Error("moving a floating IP left the plan's hash unchanged")
	}
}

func TestBuildNATErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*firewall.Config)
		want   string
	}{
		{"IPv6 egress", func(c *firewall.Config) { c.Departments[0].SNAT = netip.MustParseAddr("2001:db8::1") }, "want an IPv4 address"},
		{"no uplink", func(c *firewall.Config) { c.Uplink = "" }, "uplink interface"},
		{"department without a mark", func(c *firewall.Config) { c.Departments[1].Mark = 0 }, "has no mark"},
		{"id beyond a zone", func(c *firewall.Config) { c.Departments[0].ID = 70000 }, "conntrack zone"},
		{"unknown department", func(c *firewall.Config) { c.FloatingIPs[0].Dept = 9 }, "unknown department 9"},
		{"floating IP equals an egress address", func(c *firewall.Config) { c.FloatingIPs[0].Public = c.Departments[0].SNAT }, "already used"},
		{"IPv6 floating IP", func(c *firewall.Config) { c.FloatingIPs[0].Private = netip.MustParseAddr("2001:db8::5") }, "want IPv4 addresses"},
	} {
		cfg := natConfig()
		tc.change(&cfg)
		if _, err := firewall.Build(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}
