package firewall

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

var sample = Config{
	Departments: []Department{
		{ID: 7, Bridges: []string{"gcbr130"}, Mark: 200},
		{ID: 3, Bridges: []string{"gcbr121", "gcbr120"}, Mark: 100},
	},
	Gateways: []Gateway{
		{Bridge: "gcbr120", Addr: netip.MustParseAddr("198.18.20.1")},
		{Bridge: "gcbr120", Addr: netip.MustParseAddr("2001:db8:20::1")},
		{Bridge: "gcbr121", Addr: netip.MustParseAddr("198.18.21.1")},
		{Bridge: "gcbr130", Addr: netip.MustParseAddr("198.18.30.1")},
	},
	Ports: []Port{{Ifname: "vm-a", MAC: mac("02:00:00:00:00:0a"),
		Addrs: []netip.Addr{netip.MustParseAddr("2001:db8:20::a"), netip.MustParseAddr("198.18.20.10")}}},
	Management: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8:ffff::/48")},
}

// TestBuild checks the rules generated from a config, without root (Tailscale's first level).
func TestBuild(t *testing.T) {
	p, err := Build(sample)
	if err != nil {
		t.Fatal(err)
	}
	want := `table bridge govcloud
  chain guests { hook prerouting priority -200 }
    iifname == "vm-a" jump port-vm-a
  chain port-vm-a
    ether saddr != 02:00:00:00:00:0a counter drop
    ether type == 0x0800 ip saddr == 198.18.20.10 accept
    ether type == 0x0806 arp saddr ether == 02:00:00:00:00:0a arp saddr ip == 198.18.20.10 accept
    ether type == 0x86dd ip6 saddr == 2001:db8:20::a accept
    ether type == 0x86dd ip6 saddr & ffc0:: == fe80:: accept
    ether type == 0x86dd ip6 saddr == :: accept
    counter drop
table inet govcloud
  set tenant { type ifname; elements = { "gcbr120", "gcbr121", "gcbr130" } }
  set dept-3 { type ifname; elements = { "gcbr120", "gcbr121" } }
  set dept-7 { type ifname; elements = { "gcbr130" } }
  set gateway4 { type ifname . ipv4_addr; elements = { "gcbr120" . 198.18.20.1, "gcbr121" . 198.18.21.1, "gcbr130" . 198.18.30.1 } }
  set gateway6 { type ifname . ipv6_addr; elements = { "gcbr120" . 2001:db8:20::1 } }
  set bridge-mark { type ifname : mark; elements = { "gcbr120" : 100, "gcbr121" : 100, "gcbr130" : 200 } }
  set marks { type mark; elements = { 100, 200 } }
  chain input { hook input priority 0 }
    iifname @bridge-mark ct mark set iifname map @bridge-mark
    meta nfproto == [2] iifname . ip daddr @gateway4 accept
    meta nfproto == [10] iifname . ip6 daddr @gateway6 accept
    iifname @tenant meta l4proto == [58] icmpv6 type == [133] accept
    iifname @tenant meta l4proto == [58] icmpv6 type == [135] accept
    iifname @tenant meta l4proto == [58] icmpv6 type == [136] accept
    iifname @tenant counter drop
  chain forward { hook forward priority 0 }
    iifname @dept-3 oifname @tenant oifname != @dept-3 counter drop
    iifname @dept-7 oifname @tenant oifname != @dept-7 counter drop
    iifname @tenant meta nfproto == [2] ip daddr & 255.255.255.0 == 192.0.2.0 counter drop
    iifname @tenant meta nfproto == [10] ip6 daddr & ffff:ffff:ffff:: == 2001:db8:ffff:: counter drop
  chain output { hook output priority -150 }
    ct mark @marks meta mark set ct mark
  chain state
    counter
`
	if got := p.String(); got != want {
		t.Fatalf("plan:\n%s\nwant:\n%s", got, want)
	}
	// Order of the input does not matter; content does.
	shuffled := sample
	shuffled.Departments = []Department{sample.Departments[1], sample.Departments[0]}
	p2, _ := Build(shuffled)
	if p2.Hash != p.Hash {
		t.Fatalf("hash depends on input order: %s vs %s", p2.Hash, p.Hash)
	}
	changed := sample
	changed.Ports = []Port{{Ifname: "vm-a", MAC: mac("02:00:00:00:00:0b"), Addrs: sample.Ports[0].Addrs}}
	p3, _ := Build(changed)
	if p3.Hash == p.Hash || !strings.Contains(p3.String(), "02:00:00:00:00:0b") {
		t.Fatalf("a changed MAC must change the plan")
	}
}

func TestBuildErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"short MAC":   {Ports: []Port{{Ifname: "vm-a", MAC: net.HardwareAddr{1, 2}}}},
		"long ifname": {Ports: []Port{{Ifname: "a-very-long-interface", MAC: mac("02:00:00:00:00:0a")}}},
	} {
		if _, err := Build(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
