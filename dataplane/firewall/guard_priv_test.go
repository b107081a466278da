package firewall_test

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/govcloud/govcloud/dataplane/firewall"
	"github.com/govcloud/govcloud/dataplane/netnstest"
	tt "github.com/govcloud/govcloud/dataplane/trunk/trunktest"
)

// TestGuardTCP applies a guard in front of a "db" guest and opens real TCP connections to it:
// bridged on its segment and routed from another segment of the department, allowed and
// refused, before and after an in-place Update that changes the rules, and replies of the
// guest's own connections.
func TestGuardTCP(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "nft", "sysctl")
	host := netnstest.New(t, "gct-gh")
	// Bridged IP must pass the inet hooks (hostnet sets these whenever a guard exists).
	host.MustRun(t, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1", "net.bridge.bridge-nf-call-ip6tables=1", "net.ipv4.ip_forward=1")
	type guest struct {
		ns             *netnstest.NS
		port, br, addr string
		mac, gw        string
	}
	mk := func(name, port, br, addr, mac, gw string) guest {
		return guest{ns: netnstest.New(t, "gct-g"+name), port: port, br: br, addr: addr, mac: mac, gw: gw}
	}
	app := mk("app", "vmapp", "gcbr120", "198.18.20.10", "02:00:00:00:00:0a", "198.18.20.1")
	other := mk("oth", "vmother", "gcbr120", "198.18.20.11", "02:00:00:00:00:0b", "198.18.20.1")
	db := mk("db", "vmdb", "gcbr120", "198.18.20.30", "02:00:00:00:00:30", "198.18.20.1")
	web := mk("web", "vmweb", "gcbr121", "198.18.21.10", "02:00:00:00:00:1a", "198.18.21.1")
	for _, br := range [][2]string{{"gcbr120", "198.18.20.1/24"}, {"gcbr121", "198.18.21.1/24"}} {
		host.MustRun(t, "ip", "link", "add", br[0], "type", "bridge")
		host.MustRun(t, "ip", "link", "set", br[0], "up")
		host.MustRun(t, "ip", "addr", "add", br[1], "dev", br[0])
	}
	var ports []firewall.Port
	for _, g := range []guest{app, other, db, web} {
		if err := netnstest.Veth(host, g.port, g.ns, "eth0"); err != nil {
			t.Fatal(err)
		}
		host.MustRun(t, "ip", "link", "set", g.port, "master", g.br)
		g.ns.MustRun(t, "ip", "link", "set", "eth0", "address", g.mac)
		if err := g.ns.AddrAdd("eth0", g.addr+"/24"); err != nil {
			t.Fatal(err)
		}
		g.ns.MustRun(t, "ip", "route", "add", "default", "via", g.gw)
		ports = append(ports, firewall.Port{Ifname: g.port, MAC: tt.MAC(g.mac), Dept: 3, Addrs: []netip.Addr{netip.MustParseAddr(g.addr)}})
	}
	// Listeners: db on 5432 and 5433, app on 5432 (not selected), other on 7000 (db dials it).
	listen := func(g guest, port int) {
		var ln net.Listener
		if err := g.ns.Do(func() (err error) { ln, err = net.Listen("tcp", fmt.Sprintf("%s:%d", g.addr, port)); return }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	listen(db, 5432)
	listen(db, 5433)
	listen(app, 5432)
	listen(other, 7000)
	dial := func(from, to guest, port int) error {
		return from.ns.Do(func() error {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", to.addr, port), 400*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		})
	}

	guard := firewall.Guard{Name: "vmdb", Bridge: "gcbr120", Dept: 3, Addrs: []netip.Addr{netip.MustParseAddr(db.addr)},
		Rules: []firewall.GuardRule{{Sources: []netip.Prefix{netip.MustParsePrefix(app.addr + "/32")}, Proto: 6, Ports: []firewall.PortRange{{5432, 5432}}}}}
	cfg := firewall.Config{
		Departments: []firewall.Department{{ID: 3, Bridges: []string{"gcbr120", "gcbr121"}}},
		Gateways:    []firewall.Gateway{{Bridge: "gcbr120", Addr: netip.MustParseAddr("198.18.20.1")}, {Bridge: "gcbr121", Addr: netip.MustParseAddr("198.18.21.1")}},
		Ports:       ports,
	}
	conn, err := nftables.New(nftables.WithNetNSFd(int(host.Handle())))
	if err != nil {
		t.Fatal(err)
	}
	var prev *firewall.Plan
	apply := func(c firewall.Config) {
		t.Helper()
		plan, err := firewall.Build(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := firewall.Update(conn, prev, plan); err != nil {
			t.Fatal(err)
		}
		prev = plan
	}
	type tcase struct {
		name     string
		from, to guest
		port     int
		allowed  bool
	}
	check := func(step string, cases []tcase) {
		t.Helper()
		for _, c := range cases {
			err := dial(c.from, c.to, c.port)
			if (err == nil) != c.allowed {
				t.Errorf("%s: %s (%s -> %s:%d): connected=%v (%v), want %v", step, c.name, c.from.addr, c.to.addr, c.port, err == nil, err, c.allowed)
			}
		}
	}

	apply(cfg)
	check("no guard", []tcase{
		{"other to db, bridged", other, db, 5432, true},
		{"web to db, routed", web, db, 5432, true},
	})

	cfg.Guards = []firewall.Guard{guard}
	apply(cfg)
	check("app only", []tcase{
		{"app to db's port, bridged", app, db, 5432, true},
		{"other to db's port, bridged", other, db, 5432, false},
		{"app to db's other port", app, db, 5433, false},
		{"web to db's port, routed", web, db, 5432, false},
		{"other to app (not selected)", other, app, 5432, true},
		{"web to app (not selected), routed", web, app, 5432, true},
		{"db's own connection out (replies are established)", db, other, 7000, true},
	})
	cs, err := firewall.Counters(conn)
	if err != nil {
		t.Fatal(err)
	}
	if n := cs[firewall.CounterName(3, firewall.ReasonPolicy)].Packets; n < 3 {
		t.Errorf("counter %s = %d packets, want at least the 3 refused SYNs", firewall.CounterName(3, firewall.ReasonPolicy), n)
	}

	// In place: the web segment and a port range join.
	guard.Rules = append(guard.Rules, firewall.GuardRule{Sources: []netip.Prefix{netip.MustParsePrefix("198.18.21.0/24")}, Proto: 6, Ports: []firewall.PortRange{{5430, 5439}}})
	cfg.Guards = []firewall.Guard{guard}
	apply(cfg)
	check("app and the web segment", []tcase{
		{"web to db's port, routed", web, db, 5432, true},
		{"web to db's other port in range", web, db, 5433, true},
		{"app to db's other port", app, db, 5433, false},
		{"other to db's port", other, db, 5432, false},
	})

	// A rule whose sources are gone allows nothing; removing the guard allows everything.
	cfg.Guards = []firewall.Guard{{Name: "vmdb", Bridge: "gcbr120", Dept: 3, Addrs: guard.Addrs, Rules: []firewall.GuardRule{{Proto: 6}}}}
	apply(cfg)
	check("no sources", []tcase{{"app to db's port", app, db, 5432, false}})
	cfg.Guards = nil
	apply(cfg)
	check("guard removed", []tcase{{"other to db's port", other, db, 5432, true}, {"web to db's other port", web, db, 5433, true}})
	if out := host.MustRun(t, "nft", "list", "ruleset"); strings.Contains(out, "guard-") {
		t.Errorf("guard chains left after the guard was removed:\n%s", out)
	}
}
