package firewall

import (
	"net/netip"
	"strings"
	"testing"
)

var guarded = Config{
	Departments: []Department{{ID: 3, Mark: 120, Bridges: []string{"gcbr120"}}},
	Guards: []Guard{{Name: "gvdb", Bridge: "gcbr120", Dept: 3,
		Addrs: []netip.Addr{netip.MustParseAddr("198.18.20.30"), netip.MustParseAddr("2001:db8:20::30")},
		Rules: []GuardRule{
			{Sources: []netip.Prefix{netip.MustParsePrefix("198.18.20.10/32"), netip.MustParsePrefix("198.18.20.11/32")}, Proto: 6, Ports: []PortRange{{5432, 5432}, {8000, 8080}}},
			{Sources: []netip.Prefix{netip.MustParsePrefix("198.18.21.0/24"), netip.MustParsePrefix("2001:db8:21::/64")}, Proto: 1},
			{Sources: nil, Proto: 17}, // selectors that matched nothing: allows nothing
		}}},
}

// TestBuildGuards checks a guard's rules: established/related and non-tenant traffic pass,
// the guest's addresses on its bridge jump to its chain, each rule is a source set per family
// with its protocol and ports, and the rest is dropped and counted.
func TestBuildGuards(t *testing.T) {
	p, err := Build(guarded)
	if err != nil {
		t.Fatal(err)
	}
	s := p.String()
	for _, want := range []string{
		"  counter drop-3-policy\n",
		"  set guard-gvdb-0-4 { type ipv4_addr; flags interval; elements = { 198.18.20.10-198.18.20.11 } }\n",
		"  set guard-gvdb-1-4 { type ipv4_addr; flags interval; elements = { 198.18.21.0-198.18.21.255 } }\n",
		"  set guard-gvdb-1-6 { type ipv6_addr; flags interval; elements = { 2001:db8:21::-2001:db8:21:0:ffff:ffff:ffff:ffff } }\n",
		`  chain policy { type filter hook forward priority 1 }
    ct state & 0x6 != 0x0 accept
    iifname != @tenant accept
    oifname == "gcbr120" meta nfproto == ipv4 ip daddr == 198.18.20.30 jump guard-gvdb
    oifname == "gcbr120" meta nfproto == ipv6 ip6 daddr == 2001:db8:20::30 jump guard-gvdb
  chain guard-gvdb
    meta l4proto == ipv6-icmp icmp type == 130 accept
`,
		`    meta l4proto == ipv6-icmp icmp type == 143 accept
    meta nfproto == ipv4 ip saddr @guard-gvdb-0-4 meta l4proto == tcp th dport == 5432 accept
    meta nfproto == ipv4 ip saddr @guard-gvdb-0-4 meta l4proto == tcp th dport 8000-8080 accept
    meta nfproto == ipv4 ip saddr @guard-gvdb-1-4 meta l4proto == icmp accept
    meta nfproto == ipv6 ip6 saddr @guard-gvdb-1-6 meta l4proto == ipv6-icmp accept
    counter name "drop-3-policy" drop
  chain state
`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("plan lacks\n%s\nplan:\n%s", want, s)
		}
	}
	for _, unwanted := range []string{"guard-gvdb-0-6", "guard-gvdb-2-"} {
		if strings.Contains(s, unwanted) {
			t.Errorf("plan has %s (no sources of that family):\n%s", unwanted, s)
		}
	}
	// Without guards the plan has no policy chain at all (nothing changes for hosts without
	// policies).
	p0, err := Build(Config{Departments: guarded.Departments})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(p0.String(), "policy") {
		t.Errorf("plan without guards has a policy chain:\n%s", p0)
	}
}

func TestBuildGuardErrors(t *testing.T) {
	g := func(r GuardRule) Config {
		return Config{Guards: []Guard{{Name: "gvdb", Bridge: "gcbr120", Rules: []GuardRule{r}}}}
	}
	for name, cfg := range map[string]Config{
		"protocol 47":          g(GuardRule{Proto: 47}),
		"protocol 58 (raw)":    g(GuardRule{Proto: 58}),
		"ports without proto":  g(GuardRule{Ports: []PortRange{{80, 80}}}),
		"ports with ICMP":      g(GuardRule{Proto: 1, Ports: []PortRange{{80, 80}}}),
		"port 0":               g(GuardRule{Proto: 6, Ports: []PortRange{{0, 80}}}),
		"range reversed":       g(GuardRule{Proto: 17, Ports: []PortRange{{90, 80}}}),
		"no bridge":            {Guards: []Guard{{Name: "gvdb"}}},
		"no name":              {Guards: []Guard{{Bridge: "gcbr120"}}},
		"name twice":           {Guards: []Guard{{Name: "gvdb", Bridge: "gcbr120"}, {Name: "gvdb", Bridge: "gcbr121"}}},
		"bridge name too long": {Guards: []Guard{{Name: "gvdb", Bridge: "a-very-long-bridge"}}},
	} {
		if _, err := Build(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
