package firewall

import (
	"net"
	"net/netip"
	"slices"
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
		{ID: 7, Bridges: []string{"gcbr130"}, Mark: 200, Prefixes: []netip.Prefix{netip.MustParsePrefix("198.18.30.0/24")}},
		{ID: 3, Bridges: []string{"gcbr121", "gcbr120"}, Mark: 100, Prefixes: []netip.Prefix{
			netip.MustParsePrefix("198.18.21.0/24"), netip.MustParsePrefix("198.18.20.0/24"), netip.MustParsePrefix("2001:db8:20::/64")}},
		{ID: 9, Bridges: []string{"gcbr140"}}, // no mark: replies by direction alone, host output unfiltered
	},
	Gateways: []Gateway{
		{Bridge: "gcbr120", Addr: netip.MustParseAddr("198.18.20.1")},
		{Bridge: "gcbr120", Addr: netip.MustParseAddr("2001:db8:20::1")},
		{Bridge: "gcbr121", Addr: netip.MustParseAddr("198.18.21.1")},
		{Bridge: "gcbr130", Addr: netip.MustParseAddr("198.18.30.1")},
	},
	Ports: []Port{{Ifname: "vm-a", MAC: mac("02:00:00:00:00:0a"), Dept: 3,
		Addrs: []netip.Addr{netip.MustParseAddr("2001:db8:20::a"), netip.MustParseAddr("198.18.20.10")}}},
	// Overlapping and adjacent prefixes merge into one range; 255.255.255.255/32 has no end.
	Management: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("192.0.2.128/25"),
		netip.MustParsePrefix("198.51.100.0/25"), netip.MustParsePrefix("198.51.100.128/25"),
		netip.MustParsePrefix("255.255.255.255/32"), netip.MustParsePrefix("2001:db8:ffff::/48")},
	VIPPorts: []VIPPort{
		{Bridge: "gcbr130", VIP: netip.MustParseAddr("203.0.113.10"), Proto: 6, Port: 80},
		{Bridge: "gcbr120", VIP: netip.MustParseAddr("2001:db8:ee::10"), Proto: 17, Port: 53},
	},
	TenantAllow: []Allow{
		{Proto: 17, Addr: netip.MustParseAddr("192.0.2.53"), Port: 53},
		{Proto: 6, Addr: netip.MustParseAddr("2001:db8:ffff::53"), Port: 53},
	},
}

// TestBuild checks the rules generated from a config, without root (Tailscale's first level).
func TestBuild(t *testing.T) {
	p, err := Build(sample)
	if err != nil {
		t.Fatal(err)
	}
	want := `table bridge govcloud
  counter drop-3-ip_options
  counter drop-3-spoofed
  chain guests { type filter hook prerouting priority -200 }
    iifname == "vm-a" jump port-vm-a
  chain port-vm-a
    ether saddr != 02:00:00:00:00:0a counter name "drop-3-spoofed" drop
    ether type == 0x0800 payload(1,0,1) & [15] != [5] counter name "drop-3-ip_options" drop
    ether type == 0x0800 ip saddr == 198.18.20.10 accept
    ether type == 0x0806 arp saddr ether == 02:00:00:00:00:0a arp saddr ip == 198.18.20.10 accept
    ether type == 0x86dd ip6 saddr == 2001:db8:20::a accept
    ether type == 0x86dd ip6 saddr & ffc0:: == fe80:: accept
    ether type == 0x86dd ip6 saddr == :: accept
    counter name "drop-3-spoofed" drop
table inet govcloud
  counter drop-0-tunnel
  counter drop-3-cross_department
  counter drop-3-from_fabric
  counter drop-3-from_host
  counter drop-3-to_host
  counter drop-3-to_management
  counter drop-7-cross_department
  counter drop-7-from_fabric
  counter drop-7-from_host
  counter drop-7-to_host
  counter drop-7-to_management
  counter drop-9-cross_department
  counter drop-9-from_fabric
  counter drop-9-to_host
  counter drop-9-to_management
  set tenant { type ifname; elements = { "gcbr120", "gcbr121", "gcbr130", "gcbr140" } }
  set dept-3 { type ifname; elements = { "gcbr120", "gcbr121" } }
  set dept-7 { type ifname; elements = { "gcbr130" } }
  set dept-9 { type ifname; elements = { "gcbr140" } }
  set gateway4 { type ifname . ipv4_addr; elements = { "gcbr120" . 198.18.20.1, "gcbr121" . 198.18.21.1, "gcbr130" . 198.18.30.1 } }
  set gateway6 { type ifname . ipv6_addr; elements = { "gcbr120" . 2001:db8:20::1 } }
  set bridge-mark { type ifname : mark; elements = { "gcbr120" : 100, "gcbr121" : 100, "gcbr130" : 200 } }
  set marks { type mark; elements = { 100, 200 } }
  set management4 { type ipv4_addr; flags interval; elements = { 192.0.2.0-192.0.2.255, 198.51.100.0-198.51.100.255, 255.255.255.255-end } }
  set management6 { type ipv6_addr; flags interval; elements = { 2001:db8:ffff::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff } }
  set segments4-3 { type ipv4_addr; flags interval; elements = { 198.18.20.0-198.18.21.255 } }
  set segments6-3 { type ipv6_addr; flags interval; elements = { 2001:db8:20::-2001:db8:20:0:ffff:ffff:ffff:ffff } }
  set segments4-7 { type ipv4_addr; flags interval; elements = { 198.18.30.0-198.18.30.255 } }
  set segments6-7 { type ipv6_addr; flags interval; elements = {  } }
  set segments4-9 { type ipv4_addr; flags interval; elements = {  } }
  set segments6-9 { type ipv6_addr; flags interval; elements = {  } }
  set others4-3 { type ipv4_addr; flags interval; elements = { 198.18.30.0-198.18.30.255 } }
  set others6-3 { type ipv6_addr; flags interval; elements = {  } }
  set others4-7 { type ipv4_addr; flags interval; elements = { 198.18.20.0-198.18.21.255 } }
  set others6-7 { type ipv6_addr; flags interval; elements = { 2001:db8:20::-2001:db8:20:0:ffff:ffff:ffff:ffff } }
  set others4-9 { type ipv4_addr; flags interval; elements = { 198.18.20.0-198.18.21.255, 198.18.30.0-198.18.30.255 } }
  set others6-9 { type ipv6_addr; flags interval; elements = { 2001:db8:20::-2001:db8:20:0:ffff:ffff:ffff:ffff } }
  set vip4 { type ifname . ipv4_addr . inet_proto . inet_service; elements = { "gcbr130" . 203.0.113.10 . tcp . 80 } }
  set vip6 { type ifname . ipv6_addr . inet_proto . inet_service; elements = { "gcbr120" . 2001:db8:ee::10 . udp . 53 } }
  set allow4 { type ipv4_addr . inet_proto . inet_service; elements = { 192.0.2.53 . udp . 53 } }
  set allow6 { type ipv6_addr . inet_proto . inet_service; elements = { 2001:db8:ffff::53 . tcp . 53 } }
  chain prerouting { type filter hook prerouting priority -150 }
    ct mark set iifname map @bridge-mark meta mark set iifname map @bridge-mark
    iifname != @tenant ct direction == reply ct mark @marks meta mark set ct mark
  chain input { type filter hook input priority 0 }
    iifname @tenant ct direction == reply accept
    meta nfproto == ipv4 iifname . ip daddr @gateway4 meta l4proto == icmp icmp type == 8 accept
    meta nfproto == ipv6 iifname . ip6 daddr @gateway6 meta l4proto == ipv6-icmp icmp type == 128 accept
    iifname @tenant meta l4proto == ipv6-icmp icmp type == 130 accept
    iifname @tenant meta l4proto == ipv6-icmp icmp type == 131 accept
    iifname @tenant meta l4proto == ipv6-icmp icmp type == 132 accept
    iifname @tenant meta l4proto == ipv6-icmp icmp type == 133 accept
    iifname @tenant meta l4proto == ipv6-icmp icmp type == 135 accept
    iifname @tenant meta l4proto == ipv6-icmp icmp type == 136 accept
    iifname @tenant meta l4proto == ipv6-icmp icmp type == 143 accept
    iifname @tenant meta nfproto == ipv4 ip daddr . meta l4proto . th dport @allow4 accept
    iifname @tenant meta nfproto == ipv6 ip6 daddr . meta l4proto . th dport @allow6 accept
    iifname @dept-3 counter name "drop-3-to_host" drop
    iifname @dept-7 counter name "drop-7-to_host" drop
    iifname @dept-9 counter name "drop-9-to_host" drop
    iifname != @tenant iifname != "lo" meta l4proto == ipip counter name "drop-0-tunnel" drop
    iifname != @tenant iifname != "lo" meta l4proto == ipv6 counter name "drop-0-tunnel" drop
    iifname != @tenant iifname != "lo" meta l4proto == gre counter name "drop-0-tunnel" drop
    iifname != @tenant iifname != "lo" meta nfproto == ipv4 ip daddr @segments4-3 counter name "drop-3-from_fabric" drop
    iifname != @tenant iifname != "lo" meta nfproto == ipv6 ip6 daddr @segments6-3 counter name "drop-3-from_fabric" drop
    iifname != @tenant iifname != "lo" meta nfproto == ipv4 ip daddr @segments4-7 counter name "drop-7-from_fabric" drop
  chain forward { type filter hook forward priority 0 }
    iifname @dept-3 oifname @tenant oifname != @dept-3 counter name "drop-3-cross_department" drop
    iifname @dept-7 oifname @tenant oifname != @dept-7 counter name "drop-7-cross_department" drop
    iifname @dept-9 oifname @tenant oifname != @dept-9 counter name "drop-9-cross_department" drop
    iifname @tenant meta nfproto == ipv4 ip daddr . meta l4proto . th dport @allow4 accept
    iifname @tenant meta nfproto == ipv6 ip6 daddr . meta l4proto . th dport @allow6 accept
    iifname @dept-3 meta nfproto == ipv4 ip daddr @management4 counter name "drop-3-to_management" drop
    iifname @dept-3 meta nfproto == ipv6 ip6 daddr @management6 counter name "drop-3-to_management" drop
    iifname @dept-3 oifname != @tenant meta nfproto == ipv4 ip daddr @others4-3 counter name "drop-3-cross_department" drop
    iifname @dept-7 meta nfproto == ipv4 ip daddr @management4 counter name "drop-7-to_management" drop
    iifname @dept-7 meta nfproto == ipv6 ip6 daddr @management6 counter name "drop-7-to_management" drop
    iifname @dept-7 oifname != @tenant meta nfproto == ipv4 ip daddr @others4-7 counter name "drop-7-cross_department" drop
    iifname @dept-7 oifname != @tenant meta nfproto == ipv6 ip6 daddr @others6-7 counter name "drop-7-cross_department" drop
    iifname @dept-9 meta nfproto == ipv4 ip daddr @management4 counter name "drop-9-to_management" drop
    iifname @dept-9 meta nfproto == ipv6 ip6 daddr @management6 counter name "drop-9-to_management" drop
    iifname @dept-9 oifname != @tenant meta nfproto == ipv4 ip daddr @others4-9 counter name "drop-9-cross_department" drop
    iifname @dept-9 oifname != @tenant meta nfproto == ipv6 ip6 daddr @others6-9 counter name "drop-9-cross_department" drop
    iifname != @tenant oifname @dept-3 ct direction == reply ct mark == 100 accept
    iifname != @tenant oifname @dept-7 ct direction == reply ct mark == 200 accept
    iifname != @tenant oifname @dept-9 ct direction == reply accept
    iifname != @tenant meta nfproto == ipv4 oifname . ip daddr . meta l4proto . th dport @vip4 accept
    iifname != @tenant meta nfproto == ipv6 oifname . ip6 daddr . meta l4proto . th dport @vip6 accept
    iifname != @tenant oifname @dept-3 counter name "drop-3-from_fabric" drop
    iifname != @tenant oifname @dept-7 counter name "drop-7-from_fabric" drop
    iifname != @tenant oifname @dept-9 counter name "drop-9-from_fabric" drop
  chain output { type route hook output priority -150 }
    ct mark @marks meta mark set ct mark
  chain host-output { type filter hook output priority 0 }
    oifname @tenant meta l4proto == ipv6-icmp icmp type == 130 accept
    oifname @tenant meta l4proto == ipv6-icmp icmp type == 131 accept
    oifname @tenant meta l4proto == ipv6-icmp icmp type == 132 accept
    oifname @tenant meta l4proto == ipv6-icmp icmp type == 133 accept
    oifname @tenant meta l4proto == ipv6-icmp icmp type == 135 accept
    oifname @tenant meta l4proto == ipv6-icmp icmp type == 136 accept
    oifname @tenant meta l4proto == ipv6-icmp icmp type == 143 accept
    oifname @dept-3 meta mark != 100 counter name "drop-3-from_host" drop
    oifname @dept-7 meta mark != 200 counter name "drop-7-from_host" drop
  chain state
    counter
`
	if got := p.String(); got != want {
		t.Fatalf("plan:\n%s\nwant:\n%s", got, want)
	}
	// Order of the input does not matter; content does.
	shuffled := sample
	shuffled.Departments = []Department{sample.Departments[2], sample.Departments[1], sample.Departments[0]}
	shuffled.VIPPorts = []VIPPort{sample.VIPPorts[1], sample.VIPPorts[0], sample.VIPPorts[1]}
	shuffled.TenantAllow = []Allow{sample.TenantAllow[1], sample.TenantAllow[0]}
	shuffled.Management = append([]netip.Prefix{netip.MustParsePrefix("192.0.2.0/26")}, sample.Management...) // inside 192.0.2.0/24
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
		"short MAC":                 {Ports: []Port{{Ifname: "vm-a", MAC: net.HardwareAddr{1, 2}}}},
		"long ifname":               {Ports: []Port{{Ifname: "a-very-long-interface", MAC: mac("02:00:00:00:00:0a")}}},
		"VIP port without protocol": {VIPPorts: []VIPPort{{Bridge: "gcbr120", VIP: netip.MustParseAddr("203.0.113.10"), Port: 80}}},
		"VIP port without bridge":   {VIPPorts: []VIPPort{{VIP: netip.MustParseAddr("203.0.113.10"), Proto: 6, Port: 80}}},
		"exception with ICMP":       {TenantAllow: []Allow{{Proto: 1, Addr: netip.MustParseAddr("192.0.2.53")}}},
		"exception without address": {TenantAllow: []Allow{{Proto: 17, Port: 53}}},
	} {
		if _, err := Build(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestBuildFabricPorts: what may enter a segment bridge from the trunk is the remote guests'
// own (MAC, address) pairs, ARP included, and IP routed by a peer host's gateway.
func TestBuildFabricPorts(t *testing.T) {
	cfg := Config{
		Departments: []Department{{ID: 3, Bridges: []string{"gcbr120"}}},
		GatewayMAC:  net.HardwareAddr{0x02, 0x67, 0x63, 0, 0, 1},
		FabricPorts: []FabricPort{{Ifname: "gcvb120", Dept: 3, Prefixes: []netip.Prefix{netip.MustParsePrefix("198.18.20.0/24"), netip.MustParsePrefix("2001:db8:20::/64")}, Guests: []Remote{
			{MAC: net.HardwareAddr{2, 0, 0, 0, 0, 0x0b}, Addrs: []netip.Addr{netip.MustParseAddr("198.18.20.11"), netip.MustParseAddr("2001:db8:20::b")}},
		}}},
	}
	p, err := Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, _, _ := strings.Cut(p.String(), "table inet")
	want := `table bridge govcloud
  counter drop-3-from_fabric
  set fab4-gcvb120 { type ether_addr . ipv4_addr; elements = { 02000000000b . 198.18.20.11 } }
  set fab6-gcvb120 { type ether_addr . ipv6_addr; elements = { 02000000000b . 2001:db8:20::b } }
  set fabmac-gcvb120 { type ether_addr; elements = { 02000000000b } }
  set fabnet4-d3 { type ipv4_addr; flags interval; elements = { 198.18.20.0-198.18.20.255 } }
  set fabnet6-d3 { type ipv6_addr; flags interval; elements = { 2001:db8:20::-2001:db8:20:0:ffff:ffff:ffff:ffff } }
  chain guests { type filter hook prerouting priority -200 }
    iifname == "gcvb120" jump fabric-gcvb120
  chain fabric-gcvb120
    ether type == 0x0800 ether saddr . ip saddr @fab4-gcvb120 accept
    ether type == 0x0806 ether saddr @fabmac-gcvb120 arp saddr ether . arp saddr ip @fab4-gcvb120 accept
    ether type == 0x86dd ether saddr . ip6 saddr @fab6-gcvb120 accept
    ether type == 0x86dd ether saddr @fabmac-gcvb120 ip6 saddr & ffc0:: == fe80:: accept
    ether type == 0x86dd ether saddr @fabmac-gcvb120 ip6 saddr == :: accept
    ether type == 0x0800 ether saddr == 02:67:63:00:00:01 ip saddr @fabnet4-d3 accept
    ether type == 0x86dd ether saddr == 02:67:63:00:00:01 ip6 saddr @fabnet6-d3 accept
    counter name "drop-3-from_fabric" drop
`
	if got != want {
		t.Errorf("bridge table:\n%s\nwant:\n%s", got, want)
	}
	// The gateway's source sets are per distinct prefix list: a second port of department 3
	// shares its set, a port of department 4 and one of department 3 with other prefixes get
	// their own.
	more := cfg
	pf := netip.MustParsePrefix
	more.FabricPorts = append(slices.Clone(cfg.FabricPorts),
		FabricPort{Ifname: "gcvb121", Dept: 3, Prefixes: cfg.FabricPorts[0].Prefixes},
		FabricPort{Ifname: "gcvb130", Dept: 4, Prefixes: []netip.Prefix{pf("198.18.30.0/24")}},
		FabricPort{Ifname: "gcvb122", Dept: 3, Prefixes: []netip.Prefix{pf("198.18.22.0/24")}})
	p, err = Build(more)
	if err != nil {
		t.Fatal(err)
	}
	text := p.String()
	for _, want := range []string{
		"set fabnet4-d3 { type ipv4_addr; flags interval; elements = { 198.18.20.0-198.18.20.255 } }",
		"set fabnet4-d4 { type ipv4_addr; flags interval; elements = { 198.18.30.0-198.18.30.255 } }",
		"set fabnet4-d3-2 { type ipv4_addr; flags interval; elements = { 198.18.22.0-198.18.22.255 } }",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %q in:\n%s", want, text)
		}
	}
	for port, set := range map[string]string{"gcvb120": "fabnet4-d3", "gcvb121": "fabnet4-d3", "gcvb130": "fabnet4-d4", "gcvb122": "fabnet4-d3-2"} {
		_, chain, _ := strings.Cut(text, "chain fabric-"+port+"\n")
		chain, _, _ = strings.Cut(chain, "chain ")
		if !strings.Contains(chain, "ip saddr @"+set+" accept") {
			t.Errorf("fabric port %s does not check the gateway's sources against %s:\n%s", port, set, chain)
		}
	}
	if n := strings.Count(text, "set fabnet4-"); n != 3 {
		t.Errorf("%d gateway source sets for 4 ports of 3 distinct lists", n)
	}
	cfg.FabricPorts[0].Guests[0].MAC = net.HardwareAddr{1, 2, 3}
	if _, err := Build(cfg); err == nil || !strings.Contains(err.Error(), "gcvb120") {
		t.Errorf("a 3-byte remote MAC: %v", err)
	}
}
