package firewall_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/govcloud/govcloud/dataplane/firewall"
	"github.com/govcloud/govcloud/dataplane/netnstest"
	tt "github.com/govcloud/govcloud/dataplane/trunk/trunktest"
)

// TestApplyAndSend applies a plan in a fresh namespace and sends packets through it
// (Tailscale's second level): spoofed sources never cross the bridge, the host answers a
// tenant only on its own gateway, and applying the same plan again changes nothing.
func TestApplyAndSend(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "nft", "ping")
	host := netnstest.New(t, "gct-fh")
	ga := netnstest.New(t, "gct-fa")
	gb := netnstest.New(t, "gct-fb")
	host.MustRun(t, "ip", "link", "add", "gcbr120", "type", "bridge")
	host.MustRun(t, "ip", "link", "set", "gcbr120", "up")
	host.MustRun(t, "ip", "addr", "add", "198.18.20.1/24", "dev", "gcbr120")
	host.MustRun(t, "ip", "addr", "add", "192.0.2.1/32", "dev", "lo")
	for _, g := range []struct {
		ns   *netnstest.NS
		port string
		addr string
		mac  string
	}{{ga, "vma", "198.18.20.10/24", "02:00:00:00:00:0a"}, {gb, "vmb", "198.18.20.11/24", "02:00:00:00:00:0b"}} {
		if err := netnstest.Veth(host, g.port, g.ns, "eth0"); err != nil {
			t.Fatal(err)
		}
		host.MustRun(t, "ip", "link", "set", g.port, "master", "gcbr120")
		g.ns.MustRun(t, "ip", "link", "set", "eth0", "address", g.mac)
		if err := g.ns.AddrAdd("eth0", g.addr); err != nil {
			t.Fatal(err)
		}
		g.ns.MustRun(t, "ip", "route", "add", "default", "via", "198.18.20.1")
	}
	macA, macB := tt.MAC("02:00:00:00:00:0a"), tt.MAC("02:00:00:00:00:0b")
	ipA, ipB := netip.MustParseAddr("198.18.20.10"), netip.MustParseAddr("198.18.20.11")
	cfg := firewall.Config{
		Departments: []firewall.Department{{ID: 3, Bridges: []string{"gcbr120"}}},
		Gateways:    []firewall.Gateway{{Bridge: "gcbr120", Addr: netip.MustParseAddr("198.18.20.1")}},
		Ports: []firewall.Port{
			{Ifname: "vma", MAC: macA, Addrs: []netip.Addr{ipA}},
			{Ifname: "vmb", MAC: macB, Addrs: []netip.Addr{ipB}},
		},
		Management: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
	}
	plan, err := firewall.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := nftables.New(nftables.WithNetNSFd(int(host.Handle())))
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := firewall.Apply(conn, plan); err != nil || !changed {
		t.Fatalf("first apply: changed=%v err=%v", changed, err)
	}
	before := host.MustRun(t, "nft", "-a", "list", "ruleset")
	if !strings.Contains(before, `comment "govcloud plan `+plan.Hash+`"`) {
		t.Fatalf("marker comment missing:\n%s", before)
	}
	if changed, err := firewall.Apply(conn, plan); err != nil || changed {
		t.Fatalf("second apply: changed=%v err=%v", changed, err)
	}
	if after := host.MustRun(t, "nft", "-a", "list", "ruleset"); after != before {
		t.Fatalf("second apply changed the rule set:\n%s\nbefore:\n%s", after, before)
	}

	// Legitimate traffic still flows (ping between guests and to the gateway).
	ga.MustRun(t, "ping", "-c1", "-W2", "198.18.20.11")
	ga.MustRun(t, "ping", "-c1", "-W2", "198.18.20.1")
	// The host's management address answers nobody on a tenant bridge.
	if out, err := ga.Run("ping", "-c1", "-W1", "192.0.2.1"); err == nil {
		t.Fatalf("management address reachable from a tenant:\n%s", out)
	}

	var sa, sb *tt.Sock
	if err := ga.Do(func() (err error) { sa, err = tt.Open("eth0"); return }); err != nil {
		t.Fatal(err)
	}
	defer sa.Close()
	if err := gb.Do(func() (err error) { sb, err = tt.Open("eth0"); return }); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	other := netip.MustParseAddr("198.18.20.99")
	cases := []struct {
		name   string
		frame  []byte
		arrive bool
	}{
		{"own MAC and IP", tt.UDPFrame(macB, macA, ipA, ipB, 1, 7, []byte("fw-ok")), true},
		{"spoofed source IP", tt.UDPFrame(macB, macA, other, ipB, 1, 7, []byte("fw-spoof-ip")), false},
		{"spoofed source MAC", tt.UDPFrame(macB, tt.MAC("02:00:00:00:00:99"), ipA, ipB, 1, 7, []byte("fw-spoof-mac")), false},
		{"tagged frame", tt.Tag(tt.UDPFrame(macB, macA, ipA, ipB, 1, 7, []byte("fw-tag")), tt.Ether8021Q, 130), false},
		{"ARP claiming another IP", append(tt.ARP(tt.ARPReply, macA, other, macB, ipB), []byte("fw-arp-ip")...), false},
		{"ARP with another sender MAC", append(tt.ARP(tt.ARPReply, tt.MAC("02:00:00:00:00:99"), ipA, macB, ipB), []byte("fw-arp-mac")...), false},
		{"ARP that is honest", append(tt.ARP(tt.ARPReply, macA, ipA, macB, ipB), []byte("fw-arp-ok")...), true},
		{"other ethertype", tt.Eth(macB, macA, 0x88b5, []byte("fw-ethertype")), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := sa.Send(tt.Pad(c.frame, 60)); err != nil {
				t.Fatal(err)
			}
			got, err := sb.Capture(250 * time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			marker := c.frame[len(c.frame)-5:]
			if arrived := tt.Contains(got, marker); arrived != c.arrive {
				t.Fatalf("arrived=%v, want %v", arrived, c.arrive)
			}
		})
	}

	if err := firewall.Delete(conn); err != nil {
		t.Fatal(err)
	}
	if out := host.MustRun(t, "nft", "list", "ruleset"); strings.Contains(out, "govcloud") {
		t.Fatalf("tables left after Delete:\n%s", out)
	}
}

// TestApplyLarge applies a plan with thousands of segments and guest ports: sets bigger than
// one netlink attribute and a batch bigger than the default socket buffer.
func TestApplyLarge(t *testing.T) {
	netnstest.RequirePrivileged(t)
	ns := netnstest.New(t, "gct-fl")
	var cfg firewall.Config
	for d := 0; d < 30; d++ {
		cfg.Departments = append(cfg.Departments, firewall.Department{ID: uint32(d + 1)})
	}
	for v := 1; v <= 4094; v++ {
		br := fmt.Sprintf("gcbr%d", v)
		cfg.Departments[v%30].Bridges = append(cfg.Departments[v%30].Bridges, br)
		cfg.Gateways = append(cfg.Gateways, firewall.Gateway{Bridge: br, Addr: netip.AddrFrom4([4]byte{198, 18, byte(v >> 3), byte(v&7)<<5 | 1})})
	}
	for i := 0; i < 500; i++ {
		cfg.Ports = append(cfg.Ports, firewall.Port{Ifname: fmt.Sprintf("vm%d", i), MAC: tt.MAC(fmt.Sprintf("02:00:00:00:%02x:%02x", i>>8, i&0xff)),
			Addrs: []netip.Addr{netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})}})
	}
	plan, err := firewall.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns.Handle())), firewall.BigBuffers())
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := firewall.Apply(conn, plan); err != nil || !changed {
		t.Fatalf("apply: changed=%v err=%v", changed, err)
	}
	if h, err := firewall.Applied(conn); err != nil || h != plan.Hash {
		t.Fatalf("applied hash %q (%v), want %q", h, err, plan.Hash)
	}
	out := ns.MustRun(t, "nft", "list", "set", "inet", "govcloud", "gateway4")
	if n := strings.Count(out, `"gcbr`); n != 4094 {
		t.Fatalf("gateway4 holds %d elements, want 4094", n)
	}
}

// TestUpdateMatchesApply changes a rule set step by step with Update (in place) and checks after
// each step that the kernel holds exactly what a fresh Apply of the same plan makes in another
// namespace, and that small changes left the tables in place (same table handles).
func TestUpdateMatchesApply(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "nft")
	inPlace, fresh := netnstest.New(t, "gct-fu"), netnstest.New(t, "gct-fv")
	conn := func(ns *netnstest.NS) *nftables.Conn {
		c, err := nftables.New(nftables.WithNetNSFd(int(ns.Handle())), firewall.BigBuffers())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ci, cf := conn(inPlace), conn(fresh)
	base := func() firewall.Config {
		var cfg firewall.Config
		for d := 1; d <= 3; d++ {
			cfg.Departments = append(cfg.Departments, firewall.Department{ID: uint32(d), Mark: uint32(100 * d),
				Prefixes: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(d), 0}), 24)}})
		}
		for v := 1; v <= 12; v++ {
			br := fmt.Sprintf("gcbr%d", v)
			cfg.Departments[v%3].Bridges = append(cfg.Departments[v%3].Bridges, br)
			cfg.Gateways = append(cfg.Gateways, firewall.Gateway{Bridge: br, Addr: netip.AddrFrom4([4]byte{198, 18, byte(v%3 + 1), byte(v)})})
		}
		for i := 0; i < 6; i++ {
			cfg.Ports = append(cfg.Ports, firewall.Port{Ifname: fmt.Sprintf("vm%d", i), Dept: uint32(i%3 + 1),
				MAC: tt.MAC(fmt.Sprintf("02:00:00:00:00:%02x", i+1)), Addrs: []netip.Addr{netip.AddrFrom4([4]byte{198, 18, byte(i%3 + 1), byte(100 + i)})}})
		}
		cfg.Management = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
		return cfg
	}
	steps := []struct {
		name    string
		change  func(*firewall.Config)
		inPlace bool // the tables must keep their handles
	}{
		{"first", func(*firewall.Config) {}, false},
		{"one gateway changed", func(c *firewall.Config) { c.Gateways[4].Addr = netip.MustParseAddr("198.18.2.200") }, true},
		{"port added", func(c *firewall.Config) {
			c.Ports = append(c.Ports, firewall.Port{Ifname: "vm9", Dept: 2, MAC: tt.MAC("02:00:00:00:00:99"), Addrs: []netip.Addr{netip.MustParseAddr("198.18.2.99")}})
		}, true},
		{"port removed", func(c *firewall.Config) { c.Ports = c.Ports[1:] }, true},
		{"port's address changed", func(c *firewall.Config) { c.Ports[2].Addrs = []netip.Addr{netip.MustParseAddr("198.18.3.150")} }, true},
		{"management prefix added", func(c *firewall.Config) {
			c.Management = append(c.Management, netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:ffff::/48"))
		}, true},
		{"department added", func(c *firewall.Config) {
			c.Departments = append(c.Departments, firewall.Department{ID: 4, Mark: 400, Bridges: []string{"gcbr40"}})
			c.Gateways = append(c.Gateways, firewall.Gateway{Bridge: "gcbr40", Addr: netip.MustParseAddr("198.18.4.1")})
		}, false},
		{"department removed", func(c *firewall.Config) {
			c.Departments = c.Departments[:3]
			c.Gateways = c.Gateways[:len(c.Gateways)-1]
		}, false},
		{"VIP port and tenant exception added", func(c *firewall.Config) {
			c.VIPPorts = append(c.VIPPorts, firewall.VIPPort{Bridge: "gcbr3", VIP: netip.MustParseAddr("203.0.113.10"), Proto: 6, Port: 80})
			c.TenantAllow = append(c.TenantAllow, firewall.Allow{Proto: 17, Addr: netip.MustParseAddr("192.0.2.53"), Port: 53})
		}, false},
		{"security policy added", func(c *firewall.Config) {
			c.Guards = append(c.Guards, firewall.Guard{Name: "vm1", Bridge: "gcbr1", Dept: 2, Addrs: []netip.Addr{netip.MustParseAddr("198.18.2.101")},
				Rules: []firewall.GuardRule{{Sources: []netip.Prefix{netip.MustParsePrefix("198.18.2.100/32")}, Proto: 6, Ports: []firewall.PortRange{{5432, 5432}}}}})
		}, true},
		{"policy's source set and ports changed", func(c *firewall.Config) {
			c.Guards[0].Rules[0].Sources = append(c.Guards[0].Rules[0].Sources, netip.MustParsePrefix("198.18.2.0/28"), netip.MustParsePrefix("2001:db8:2::/64"))
			c.Guards[0].Rules[0].Ports = append(c.Guards[0].Rules[0].Ports, firewall.PortRange{First: 8000, Last: 8080})
		}, true},
		{"second selected guest, rule added", func(c *firewall.Config) {
			c.Guards = append(c.Guards, firewall.Guard{Name: "vm4", Bridge: "gcbr4", Dept: 2, Addrs: []netip.Addr{netip.MustParseAddr("198.18.2.104")},
				Rules: []firewall.GuardRule{{Sources: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Proto: 1}}})
			c.Guards[0].Rules = append(c.Guards[0].Rules, firewall.GuardRule{Sources: []netip.Prefix{netip.MustParsePrefix("198.18.3.0/24")}, Proto: 17})
		}, true},
		{"policies removed", func(c *firewall.Config) { c.Guards = nil }, true},
	}
	handles := func(ns *netnstest.NS) string {
		return ns.MustRun(t, "sh", "-c", "nft -a list tables; nft -a list table inet govcloud | head -1; nft -a list table bridge govcloud | head -1")
	}
	ruleset := func(ns *netnstest.NS) string {
		return canonicalRuleset(t, ns.MustRun(t, "nft", "-j", "list", "ruleset"))
	}
	cfg := base()
	var prev *firewall.Plan
	for _, s := range steps {
		s.change(&cfg)
		plan, err := firewall.Build(cfg)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		before := handles(inPlace)
		if changed, err := firewall.Update(ci, prev, plan); err != nil || !changed {
			t.Fatalf("%s: update: changed=%v err=%v", s.name, changed, err)
		}
		if s.inPlace && handles(inPlace) != before {
			t.Errorf("%s: tables replaced, want changed in place:\n%s\n%s", s.name, before, handles(inPlace))
		}
		if err := firewall.Delete(cf); err != nil {
			t.Fatal(err)
		}
		if _, err := firewall.Apply(cf, plan); err != nil {
			t.Fatalf("%s: apply: %v", s.name, err)
		}
		if a, b := ruleset(inPlace), ruleset(fresh); a != b {
			t.Fatalf("%s: updated rule set differs from a fresh one:\n--- updated\n%s\n--- fresh\n%s", s.name, a, b)
		}
		if h, err := firewall.Applied(ci); err != nil || h != plan.Hash {
			t.Fatalf("%s: applied hash %q (%v), want %q", s.name, h, err, plan.Hash)
		}
		if changed, err := firewall.Update(ci, plan, plan); err != nil || changed {
			t.Fatalf("%s: the same plan again: changed=%v err=%v", s.name, changed, err)
		}
		prev = plan
	}
}

// canonicalRuleset is `nft -j list ruleset` without handles and counter values, with tables,
// sets, chains and counters sorted (the kernel lists them in creation order) and every chain's
// rules in their order.
func canonicalRuleset(t *testing.T, js string) string {
	t.Helper()
	var doc struct {
		Nftables []map[string]map[string]any `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(js), &doc); err != nil {
		t.Fatalf("nft -j: %v", err)
	}
	var objs []string
	rules := map[string][]string{}
	for _, item := range doc.Nftables {
		for kind, o := range item {
			if kind == "metainfo" {
				continue
			}
			delete(o, "handle")
			if kind == "counter" {
				delete(o, "packets")
				delete(o, "bytes")
			}
			b, _ := json.Marshal(o)
			if kind == "rule" {
				chain := fmt.Sprint(o["family"], " ", o["table"], " ", o["chain"])
				rules[chain] = append(rules[chain], string(b))
				continue
			}
			objs = append(objs, kind+" "+string(b))
		}
	}
	slices.Sort(objs)
	for chain, rs := range rules {
		objs = append(objs, "rules of "+chain+":\n  "+strings.Join(rs, "\n  "))
	}
	slices.Sort(objs)
	return strings.Join(objs, "\n")
}
