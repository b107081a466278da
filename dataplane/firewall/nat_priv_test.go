package firewall_test

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/govcloud/govcloud/dataplane/firewall"
	"github.com/govcloud/govcloud/dataplane/netnstest"
)

// TestEgressAndFloatingIPSend sends real connections through the NAT rules: two departments
// with the same prefix (198.18.20.0/24) on one host, a guest in each with the same address
// and the same source port connecting to a server outside at the same time. Each connection
// must leave from its own department's egress address (the server says which it saw) and its
// replies must come back to its own guest; a guest with a floating IP leaves as it, and the
// floating IP answers connections from outside, delivered to the guest.
func TestEgressAndFloatingIPSend(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "nft")
	host := netnstest.New(t, "gct-nh")
	out := netnstest.New(t, "gct-no")
	ga, gb, gf := netnstest.New(t, "gct-na"), netnstest.New(t, "gct-nb"), netnstest.New(t, "gct-nf")
	if err := netnstest.Veth(host, "up0", out, "up0"); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"},
		{"sysctl", "-qw", "net.ipv4.conf.default.rp_filter=0"},
		{"ip", "addr", "add", "192.0.2.1/24", "dev", "up0"},
		{"ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.2"},
	} {
		host.MustRun(t, c[0], c[1:]...)
	}
	out.MustRun(t, "ip", "addr", "add", "192.0.2.2/24", "dev", "up0")
	out.MustRun(t, "ip", "addr", "add", "203.0.113.80/32", "dev", "lo")
	out.MustRun(t, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1")
	// Two departments, one bridge each, the same prefix and gateway: tables 101 and 102.
	for _, d := range []struct{ br, table string }{{"gcbrA", "101"}, {"gcbrB", "102"}} {
		for _, c := range [][]string{
			{"ip", "link", "add", d.br, "type", "bridge"},
			{"ip", "link", "set", d.br, "up"},
			{"ip", "addr", "add", "198.18.20.1/24", "dev", d.br, "noprefixroute"},
			{"ip", "route", "add", "198.18.20.0/24", "dev", d.br, "table", d.table},
			{"ip", "route", "add", "default", "via", "192.0.2.2", "dev", "up0", "table", d.table},
			{"ip", "rule", "add", "iif", d.br, "lookup", d.table, "pref", "100"},
			{"ip", "rule", "add", "fwmark", d.table, "lookup", d.table, "pref", "100"},
		} {
			host.MustRun(t, c[0], c[1:]...)
		}
	}
	for _, g := range []struct {
		ns       *netnstest.NS
		port, br string
		addr     string
	}{{ga, "pa", "gcbrA", "198.18.20.10/24"}, {gb, "pb", "gcbrB", "198.18.20.10/24"}, {gf, "pf", "gcbrA", "198.18.20.11/24"}} {
		if err := netnstest.Veth(host, g.port, g.ns, "eth0"); err != nil {
			t.Fatal(err)
		}
		host.MustRun(t, "ip", "link", "set", g.port, "master", g.br)
		if err := g.ns.AddrAdd("eth0", g.addr); err != nil {
			t.Fatal(err)
		}
		g.ns.MustRun(t, "ip", "route", "add", "default", "via", "198.18.20.1")
	}
	seg := netip.MustParsePrefix("198.18.20.0/24")
	egressA, egressB, fip := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.9")
	cfg := firewall.Config{
		Departments: []firewall.Department{
			{ID: 1, Mark: 101, Bridges: []string{"gcbrA"}, Prefixes: []netip.Prefix{seg}, SNAT: egressA},
			{ID: 2, Mark: 102, Bridges: []string{"gcbrB"}, Prefixes: []netip.Prefix{seg}, SNAT: egressB},
		},
		Gateways:    []firewall.Gateway{{Bridge: "gcbrA", Addr: netip.MustParseAddr("198.18.20.1")}, {Bridge: "gcbrB", Addr: netip.MustParseAddr("198.18.20.1")}},
		Management:  []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
		Uplink:      "up0",
		FloatingIPs: []firewall.FloatingIP{{Dept: 1, Public: fip, Private: netip.MustParseAddr("198.18.20.11")}},
	}
	plan, err := firewall.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := nftables.New(nftables.WithNetNSFd(int(host.Handle())))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := firewall.Apply(conn, plan); err != nil {
		t.Fatal(err)
	}

	// The server outside answers each connection with the source address it saw.
	listen(t, out, "203.0.113.80:8080")
	dial := func(ns *netnstest.NS, src, dst string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			d := net.Dialer{Timeout: 3 * time.Second}
			if src != "" {
				d.LocalAddr = net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src))
			}
			var err error
			c, err = d.Dial("tcp", dst)
			return err
		})
		return c, err
	}
	rows := []struct {
		name string
		ns   *netnstest.NS
		src  string // fixed source: the same 5-tuple from both departments
		want netip.Addr
	}{
		{"department A leaves from its egress address", ga, "198.18.20.10:40000", egressA},
		{"department B, same address and port at the same time, from its own", gb, "198.18.20.10:40000", egressB},
		{"a guest with a floating IP leaves as it", gf, "", fip},
	}
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for _, r := range rows {
		c, err := dial(r.ns, r.src, "203.0.113.80:8080")
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		open = append(open, c) // kept open: the next row's connection exists alongside
		if got := readLine(t, c); got != r.want.String() {
			t.Errorf("%s: the server saw %q, want %s", r.name, got, r.want)
		}
	}
	// The floating IP answers from outside, delivered to its guest, which sees the client.
	listen(t, gf, "198.18.20.11:8081")
	c, err := dial(out, "203.0.113.80:0", fip.String()+":8081")
	if err != nil {
		t.Fatalf("floating IP from outside: %v", err)
	}
	defer c.Close()
	if got := readLine(t, c); got != "203.0.113.80" {
		t.Errorf("floating IP from outside: the guest saw %q, want 203.0.113.80", got)
	}
	// The egress address answers nothing that is not a reply, and does not reach a guest.
	if c, err := dial(out, "", egressA.String()+":8080"); err == nil {
		c.Close()
		t.Errorf("a connection to egress address %s was accepted", egressA)
	}
	ct := host.MustRun(t, "sh", "-c", "cat /proc/net/nf_conntrack 2>/dev/null || conntrack -L 2>/dev/null || true")
	t.Logf("conntrack:\n%s", ct)
}

// listen serves TCP on addr inside ns: each connection gets one line, the peer's address.
func listen(t *testing.T, ns *netnstest.NS, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ap := netip.MustParseAddrPort(c.RemoteAddr().String())
			fmt.Fprintf(c, "%s\n", ap.Addr().Unmap())
			// left open until the peer closes: connections overlap
			go func() { _, _ = bufio.NewReader(c).ReadString('\n'); c.Close() }()
		}
	}()
	return ln
}

func readLine(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	s, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Errorf("reading from %s: %v", c.RemoteAddr(), err)
	}
	return strings.TrimSpace(s)
}
