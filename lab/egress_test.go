package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/bgp/frr"
	"github.com/govcloud/govcloud/controlplane/client"
)

// parksYAML is a third department whose segment has lands' CIDR (198.18.20.0/24): a guest on
// each host, the one on gc-host2 with a floating IP. (parks-web-1 is not given lands-web-1's
// address: the VM address allocator keeps addresses unique across all segments and would
// re-address lands-web-1, whose namespace keeps the old one; the same 5-tuple from two
// departments is TestEgressAndFloatingIPSend's, in dataplane/firewall.)
const parksYAML = `apiVersion: govcloud/v1
kind: Department
metadata: {name: parks}
spec: {displayName: Parks, costCentre: CC-4004, egress: public-vips}
---
apiVersion: govcloud/v1
kind: Segment
metadata: {name: parks-web}
spec: {department: parks, vlan: 170, ipv4: 198.18.20.0/24, gateway: 198.18.20.1}
---
apiVersion: govcloud/v1
kind: VM
metadata: {name: parks-web-1}
spec: {department: parks, vcpus: 1, memoryMiB: 64, image: tiny, networks: [{segment: parks-web}], host: gc-host1}
---
apiVersion: govcloud/v1
kind: VM
metadata: {name: parks-web-2}
spec: {department: parks, vcpus: 1, memoryMiB: 64, image: tiny, networks: [{segment: parks-web}], host: gc-host2, floatingIP: public-vips}
`

// egressAndFloatingIPs (issue 17 §4): a guest of each department on each host connects to a
// server in gc-client, which must see the department's egress address for that host; lands
// and parks, with the same CIDR, do so at the same time from the same source port on
// gc-host1, each seen as its own department; parks-web-2 leaves as its floating IP,
// and the floating IP answers HTTP from gc-client with parks-web-2's name. parks-web-2 is
// deleted at the end and its floating IP is no longer routed by the ToR; then parks is removed.
func egressAndFloatingIPs(t *testing.T, bin, dir string) {
	t.Helper()
	ctx := context.Background()
	l, admin := openLab(t, bin, dir)
	c := l.client(admin)
	addrOf := func(name string) string {
		o, err := c.Get(ctx, "vms", name)
		if err != nil || len(o.Addresses) == 0 {
			t.Fatalf("vm %s: %v %v", name, o, err)
		}
		return o.Addresses[0]
	}
	landsAddr := addrOf("lands-web-1")
	if _, err := c.Apply(ctx, "parks.yaml", []byte(parksYAML), client.ApplyOptions{}); err != nil {
		t.Fatalf("apply parks.yaml: %v", err)
	}
	removed := false
	removeParks := func() {
		removed = true
		for _, o := range [][2]string{{"vms", "parks-web-1"}, {"vms", "parks-web-2"}, {"segments", "parks-web"}, {"departments", "parks"}} {
			if _, err := c.Delete(ctx, o[0], o[1], false); err != nil && !strings.Contains(err.Error(), "not found") {
				t.Errorf("delete %s %s: %v", o[0], o[1], err)
			}
		}
	}
	defer func() {
		if !removed {
			removeParks()
		}
	}()
	egress := map[[2]string]netip.Addr{} // (department, host) -> egress address
	for _, d := range []string{"lands", "health", "parks"} {
		o, err := c.Get(ctx, "departments", d)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range defaultHosts {
			a, err := netip.ParseAddr(o.Status.Egress[h])
			if err != nil {
				t.Fatalf("department %s: no egress address on %s (status %v)", d, h, o.Status.Egress)
			}
			egress[[2]string{d, h}] = a
		}
	}
	vm, err := c.Get(ctx, "vms", "parks-web-2")
	if err != nil {
		t.Fatal(err)
	}
	fip, err := netip.ParseAddr(vm.Status.FloatingIP)
	if err != nil {
		t.Fatalf("parks-web-2: no floating IP (status %+v)", vm.Status)
	}
	if a := addrOf("lands-web-1"); a != landsAddr {
		t.Fatalf("applying parks moved lands-web-1 from %s to %s", landsAddr, a)
	}

	// The server in gc-client answers each connection with the source address it sees and
	// keeps it open until the client closes it.
	var ln net.Listener
	if err := inNS(NSClient, func() (err error) { ln, err = net.Listen("tcp", clientAddr+":8090"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			ap, _ := netip.ParseAddrPort(conn.RemoteAddr().String())
			fmt.Fprintf(conn, "%s\n", ap.Addr().Unmap())
			go func() { _, _ = bufio.NewReader(conn).ReadString('\n'); conn.Close() }()
		}
	}()
	// seen connects from guest vm (source port sport, 0: any) and returns what the server saw;
	// the connection stays open until closeAll.
	var mu sync.Mutex
	var open []net.Conn
	closeAll := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range open {
			c.Close()
		}
		open = nil
	}
	defer closeAll()
	seen := func(vm string, sport int) (string, error) {
		var conn net.Conn
		err := inNS("gc-vm-"+vm, func() (err error) {
			d := net.Dialer{Timeout: 2 * time.Second}
			if sport != 0 {
				d.LocalAddr = &net.TCPAddr{Port: sport}
			}
			conn, err = d.Dial("tcp", clientAddr+":8090")
			return
		})
		if err != nil {
			return "", err
		}
		mu.Lock()
		open = append(open, conn)
		mu.Unlock()
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		s, err := bufio.NewReader(conn).ReadString('\n')
		return strings.TrimSpace(s), err
	}
	eventually := func(what string, check func() error) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			err := check()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				egressDiagnostics(t)
				t.Fatalf("%s: %v", what, err)
			}
			closeAll()
			time.Sleep(500 * time.Millisecond)
		}
	}
	rows := []struct {
		vm, dept, host string
		sport          int
		want           netip.Addr
	}{
		{"lands-web-1", "lands", "gc-host1", 40000, egress[[2]string{"lands", "gc-host1"}]},
		{"parks-web-1", "parks", "gc-host1", 40000, egress[[2]string{"parks", "gc-host1"}]}, // same CIDR, same port, at once
		{"lands-web-2", "lands", "gc-host2", 0, egress[[2]string{"lands", "gc-host2"}]},
		{"health-web-1", "health", "gc-host1", 0, egress[[2]string{"health", "gc-host1"}]},
		{"health-web-2", "health", "gc-host2", 0, egress[[2]string{"health", "gc-host2"}]},
		{"parks-web-2", "parks", "gc-host2", 0, fip}, // its floating IP, not the egress address
	}
	attempt := 0
	eventually("every guest reaches gc-client from its department's address", func() error {
		var bad []string
		attempt++ // a fresh source port each attempt: the last one's are in TIME_WAIT
		for _, r := range rows {
			sport := r.sport
			if sport != 0 {
				sport += attempt
			}
			got, err := seen(r.vm, sport)
			if err != nil || got != r.want.String() {
				bad = append(bad, fmt.Sprintf("%s (%s on %s, port %d): server saw %q (%v), want %s", r.vm, r.dept, r.host, sport, got, err, r.want))
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("%s", strings.Join(bad, "; "))
		}
		return nil
	})
	for _, r := range rows {
		t.Logf("egress: %-12s (%s on %s) seen by gc-client as %s", r.vm, r.dept, r.host, r.want)
	}
	closeAll()
	eventually("the floating IP answers", func() error {
		body, err := curl(fip.String())
		if err != nil || body != "parks-web-2" {
			return fmt.Errorf("curl http://%s/ from gc-client: %q (%v), want parks-web-2", fip, body, err)
		}
		return nil
	})
	t.Logf("floating IP %s answers from gc-client with parks-web-2", fip)
	// The ToR routes each egress address to its own host.
	for k, a := range egress {
		hops, err := l.frrRouteVia(a.String())
		if err != nil {
			t.Fatal(err)
		}
		if want := hostAddrOf(k[1]); len(hops) != 1 || hops[0] != want {
			t.Errorf("ToR routes %s's egress %s on %s via %v, want %s only", k[0], a, k[1], hops, want)
		}
	}
	// parks-web-2 deleted: its floating IP is withdrawn; then parks goes (its CIDR is lands',
	// which the later checks' isolation fuzz cannot tell apart; the usage reporters leave out
	// segments the desired state no longer names, so the bill goes on).
	if _, err := c.Delete(ctx, "vms", "parks-web-2", false); err != nil {
		t.Fatalf("delete vm parks-web-2: %v", err)
	}
	gone := []netip.Addr{fip}
	eventually("parks-web-2's floating IP withdrawn at the ToR", func() error {
		for _, a := range gone {
			if hops, err := l.frrRouteVia(a.String()); err != nil || len(hops) > 0 {
				return fmt.Errorf("ToR still routes %s via %v (%v)", a, hops, err)
			}
		}
		return nil
	})
	removeParks()
}

// hostAddrOf is the fabric address of the lab host named h (gc-host1 -> 198.18.0.11).
func hostAddrOf(h string) string {
	var i int
	_, _ = fmt.Sscanf(h, "gc-host%d", &i)
	return hostAddr(i - 1)
}

// frrRouteVia returns the active next hops of the ToR's selected BGP route to addr/32 (none
// when it has no such route).
func (l *Lab) frrRouteVia(addr string) ([]string, error) {
	hops, err := l.tor().BGPNexthops(addr + "/32")
	if errors.Is(err, frr.ErrNoRoute) {
		return nil, nil
	}
	return hops, err
}

// egressDiagnostics logs what explains a failed egress check: each host's rules, routes,
// NAT chains, conntrack entries and drop counters, the guests' view, and the ToR's routes.
func egressDiagnostics(t *testing.T) {
	t.Helper()
	run := func(ns string, args ...string) {
		out, err := nsOut(ns, args...)
		t.Logf("%s$ %s (%v)\n%s", ns, strings.Join(args, " "), err, out)
	}
	for _, h := range defaultHosts {
		run(h, "ip", "rule")
		run(h, "sh", "-c", "ip route show table all | grep -v '^local\\|^broadcast\\|^multicast\\|fe80\\|ff00'")
		run(h, "sh", "-c", "nft list ruleset | sed -n '/chain prerouting/,/chain input/p;/chain zone/,/chain output/p'")
		run(h, "sh", "-c", "cat /proc/net/nf_conntrack | grep -v 'dport=9480\\|dport=179\\|sport=179\\|dport=8480' | head -60")
		run(h, "sh", "-c", "nft list counters | grep -B1 -A1 'packets [1-9]' | head -60")
	}
	for _, g := range []string{"lands-web-1", "parks-web-1", "health-web-1"} {
		run("gc-vm-"+g, "sh", "-c", "ip addr; ip route; ip neigh; ping -c1 -W1 "+clientAddr)
	}
	run(NSTor, "vtysh", "--vty_socket", (&Lab{}).frrDir(), "-c", "show ip route 198.19.255.0/24 longer-prefixes")
}
