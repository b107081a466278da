package firewall_test

import (
	"fmt"
	"net/netip"
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
