package lab

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/desired"
)

// ipv6YAML is what ipv6EndToEnd adds to the lab: a second dual-stack segment of lands with a
// guest on gc-host2, an IPv6-only public pool and a dsr service that names it without saying
// ipFamily.
const ipv6YAML = `apiVersion: govcloud/v1
kind: Segment
metadata: {name: lands-app}
spec: {department: lands, vlan: 121, ipv4: 198.18.21.0/24, ipv6: "2001:db8:121::/64"}
---
apiVersion: govcloud/v1
kind: VM
metadata: {name: lands-app-1}
spec: {department: lands, vcpus: 1, memoryMiB: 256, image: tiny, networks: [{segment: lands-app}], host: gc-host2}
---
apiVersion: govcloud/v1
kind: AddressPool
metadata: {name: public-vips6}
spec: {cidrs: ["2001:db8:255::/120"], departments: ["*"], scope: public}
---
apiVersion: govcloud/v1
kind: Service
metadata: {name: lands-www6}
spec:
  department: lands
  pool: public-vips6
  ports: [{port: 80, protocol: tcp}]
  backends: [{vm: lands-web-1}, {vm: lands-web-2}]
  healthCheck: {type: http, path: /, interval: 1s, healthyThreshold: 2, unhealthyThreshold: 2}
  mode: dsr
`

// ipv6EndToEnd (issue 17 §3): dual-stack guests on two hosts and two segments reach each other
// by ping and HTTP over IPv6; an IPv6 VIP, allocated from an IPv6-only pool the service names
// (its first usable address, not the pool's Subnet-Router anycast address), is advertised to
// FRR by both hosts and answers HTTP from gc-client with both backends; no guest reaches
// another department's over IPv6. What it adds is deleted again at the end.
func ipv6EndToEnd(t *testing.T, bin, dir string) {
	t.Helper()
	ctx := context.Background()
	l, admin := openLab(t, bin, dir)
	c := l.client(admin)
	if _, err := c.Apply(ctx, "ipv6.yaml", []byte(ipv6YAML), client.ApplyOptions{}); err != nil {
		t.Fatalf("ipv6: apply: %v", err)
	}
	eventually := func(what string, d time.Duration, check func() error) {
		t.Helper()
		deadline := time.Now().Add(d)
		for {
			err := check()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("ipv6: %s: %v", what, err)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}

	// Every guest's IPv6 address, from the controller's desired state.
	var addr6, dept map[string]string
	eventually("every guest has an IPv6 address", 30*time.Second, func() error {
		states := map[string]*desired.State{}
		for _, h := range l.hosts {
			st, err := c.Desired(ctx, h, 0, time.Second)
			if err != nil {
				return err
			}
			states[h] = st
		}
		addr6, dept = guestAddrs6(states)
		if _, ok := dept["lands-app-1"]; !ok {
			return fmt.Errorf("lands-app-1 not placed yet (%v)", dept)
		}
		if len(addr6) != len(dept) {
			return fmt.Errorf("guests %v, with IPv6 %v", dept, addr6)
		}
		return nil
	})
	t.Logf("ipv6: guests %v", addr6)

	var vip string
	eventually("lands-www6 has a VIP", 10*time.Second, func() error {
		vips, err := l.vips(ctx, admin)
		if err != nil {
			return err
		}
		for _, v := range vips {
			if v.Service == "lands-www6" {
				vip = v.VIP
				return nil
			}
		}
		return fmt.Errorf("no VIP in %v", vips)
	})
	if vip != "2001:db8:255::1" {
		t.Fatalf("ipv6: lands-www6 VIP %s, want 2001:db8:255::1 (the pool's first usable IPv6 address; never 2001:db8:255::)", vip)
	}

	ipv6Probes(t, l, addr6, dept, 30*time.Second,
		// Same department: two hosts on one segment, two segments on two hosts and on one host.
		[][2]string{
			{"lands-web-1", "lands-web-2"}, {"lands-web-2", "lands-web-1"},
			{"lands-web-1", "lands-app-1"}, {"lands-app-1", "lands-web-1"},
			{"lands-web-2", "lands-app-1"}, {"health-web-1", "health-web-2"},
		},
		// Across departments, on one host and across hosts, either way.
		[][2]string{
			{"lands-web-1", "health-web-1"}, {"lands-web-1", "health-web-2"}, {"health-web-2", "lands-app-1"},
			{"health-web-1", "lands-web-2"}, {"lands-app-1", "health-web-2"},
		})
	get := func(ns, to string) (string, error) {
		out, err := nsOut(ns, "curl", "-g", "-sS", "--max-time", "1", "http://["+to+"]/")
		return strings.TrimSpace(out), err
	}

	// The IPv6 VIP: held by FRR from both hosts, answering gc-client from both backends.
	eventually("FRR holds "+vip+" from each host", 30*time.Second, func() error {
		_, err := l.frrPaths(vip)
		return err
	})
	eventually("HTTP to "+vip+" from gc-client reaches both backends", 30*time.Second, func() error {
		seen := map[string]int{}
		for i := 0; i < 30 && len(seen) < 2; i++ {
			body, err := get(NSClient, vip)
			if err != nil {
				return err
			}
			seen[body]++
		}
		if seen["lands-web-1"] == 0 || seen["lands-web-2"] == 0 {
			return fmt.Errorf("answers %v, want lands-web-1 and lands-web-2", seen)
		}
		return nil
	})

	// Leave the lab as it was for the tests after this one.
	for _, o := range [][2]string{{"services", "lands-www6"}, {"vms", "lands-app-1"}, {"addresspools", "public-vips6"}, {"segments", "lands-app"}} {
		if _, err := c.Delete(ctx, o[0], o[1], false); err != nil {
			t.Fatalf("ipv6: delete %s %s: %v", o[0], o[1], err)
		}
	}
	eventually("lands-app-1 and the IPv6 VIP gone", 30*time.Second, func() error {
		if nsExists("gc-vm-lands-app-1") {
			return fmt.Errorf("guest namespace gc-vm-lands-app-1 remains")
		}
		out, err := nsOut("gc-vm-lands-web-1", "ip", "-o", "addr", "show", "dev", "lo")
		if err != nil {
			return err
		}
		if strings.Contains(out, vip) {
			return fmt.Errorf("lands-web-1 still has %s on lo", vip)
		}
		return nil
	})
}

// ipv6Probes checks IPv6 between the lab's guests (namespaces or VMs) by address: each pair
// of same reaches the other's address by ping and HTTP (answered by that guest) within d, and
// no pair of cross does either. addr6 and dept are each guest's IPv6 address and department.
func ipv6Probes(t *testing.T, l *Lab, addr6, dept map[string]string, d time.Duration, same, cross [][2]string) {
	t.Helper()
	for _, p := range same {
		a, b := p[0], p[1]
		deadline := time.Now().Add(d)
		for {
			err := l.guestPing(a, addr6[b], 1)
			if err == nil {
				var body string
				body, err = l.guestHTTP(a, addr6[b])
				if body = strings.TrimSpace(body); err == nil && body != b {
					err = fmt.Errorf("HTTP answered %q, want %q", body, b)
				}
			}
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("ipv6: %s -> %s (%s, same department %s): %v", a, b, addr6[b], dept[a], err)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	for _, p := range cross {
		a, b := p[0], p[1]
		if dept[a] == dept[b] || addr6[b] == "" {
			t.Fatalf("ipv6: %s (%s) and %s (%s, %q): not a cross-department pair with an address", a, dept[a], b, dept[b], addr6[b])
		}
		if err := l.guestPing(a, addr6[b], 1); err == nil {
			t.Errorf("ipv6: %s (%s) pings %s (%s, %s) across departments", a, dept[a], b, dept[b], addr6[b])
		}
		if body, err := l.guestHTTP(a, addr6[b]); err == nil {
			t.Errorf("ipv6: %s (%s) gets %q over HTTP from %s (%s) across departments", a, dept[a], body, b, dept[b])
		}
	}
}

// guestAddrs6 returns every guest's IPv6 address and department from the hosts' desired states.
func guestAddrs6(states map[string]*desired.State) (addr6, dept map[string]string) {
	addr6, dept = map[string]string{}, map[string]string{}
	for _, st := range states {
		for _, vm := range st.VMs {
			for _, ifc := range vm.Interfaces {
				if ifc.Prefix6.IsValid() {
					addr6[vm.Name] = ifc.Prefix6.Addr().String()
				}
				dept[vm.Name] = vm.Department
			}
		}
	}
	return addr6, dept
}

// vmIPv6 (issue 17 §3, libvirt guests): each VM has its IPv6 address and its segment's gateway6
// as IPv6 default route (from the kernel command line's gc.ip6=), VMs of a department reach
// each other across hosts by ping and HTTP over IPv6, and not another department's.
func vmIPv6(t *testing.T, l *Lab, admin string) {
	t.Helper()
	ctx := context.Background()
	states := map[string]*desired.State{}
	for _, h := range l.hosts {
		st, err := l.client(admin).Desired(ctx, h, 0, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		states[h] = st
	}
	addr6, dept := guestAddrs6(states)
	for _, st := range states {
		for _, vm := range st.VMs {
			ifc := vm.Interfaces[0]
			out, err := l.inGuest(vm.Name, "ip -6 addr show dev eth0; ip -6 route")
			if err != nil || !strings.Contains(out, ifc.Prefix6.String()) || !strings.Contains(out, "default via "+ifc.Gateway6.String()) {
				t.Fatalf("ipv6: vm %s: want %s and a default route via %s: %v\n%s", vm.Name, ifc.Prefix6, ifc.Gateway6, err, out)
			}
		}
	}
	ipv6Probes(t, l, addr6, dept, 60*time.Second,
		[][2]string{{"lands-web-1", "lands-web-2"}, {"health-web-2", "health-web-1"}},
		[][2]string{{"lands-web-1", "health-web-2"}, {"health-web-1", "lands-web-2"}})
	t.Logf("ipv6: VMs %v have their IPv6 address and gateway6 route, reach their department over IPv6 and not the other", addr6)
}
