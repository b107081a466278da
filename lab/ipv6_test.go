package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/client"
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
	addr6 := map[string]string{} // VM -> IPv6 address
	dept := map[string]string{}
	eventually("every guest has an IPv6 address", 30*time.Second, func() error {
		for _, h := range l.hosts {
			st, err := c.Desired(ctx, h, 0, time.Second)
			if err != nil {
				return err
			}
			for _, vm := range st.VMs {
				for _, ifc := range vm.Interfaces {
					if !ifc.Prefix6.IsValid() {
						return fmt.Errorf("%s on %s has no IPv6 address", vm.Name, ifc.Segment)
					}
					addr6[vm.Name], dept[vm.Name] = ifc.Prefix6.Addr().String(), vm.Department
				}
			}
		}
		if _, ok := addr6["lands-app-1"]; !ok {
			return fmt.Errorf("lands-app-1 not placed yet (%v)", addr6)
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

	ping := func(from, to string) error {
		_, err := nsOut("gc-vm-"+from, "ping", "-6", "-c", "1", "-W", "1", to)
		return err
	}
	get := func(ns, to string) (string, error) {
		out, err := nsOut(ns, "curl", "-g", "-sS", "--max-time", "1", "http://["+to+"]/")
		return strings.TrimSpace(out), err
	}
	// Same department: two hosts on one segment, two segments on two hosts and on one host.
	for _, p := range [][2]string{
		{"lands-web-1", "lands-web-2"}, {"lands-web-2", "lands-web-1"},
		{"lands-web-1", "lands-app-1"}, {"lands-app-1", "lands-web-1"},
		{"lands-web-2", "lands-app-1"}, {"health-web-1", "health-web-2"},
	} {
		a, b := p[0], p[1]
		eventually(fmt.Sprintf("%s -> %s (%s) over IPv6", a, b, addr6[b]), 30*time.Second, func() error {
			if err := ping(a, addr6[b]); err != nil {
				return err
			}
			body, err := get("gc-vm-"+a, addr6[b])
			if err != nil || body != b {
				return fmt.Errorf("HTTP: %q, %v (want %q)", body, err, b)
			}
			return nil
		})
	}
	// Across departments: no IPv6 path, on one host and across hosts, either way.
	for _, p := range [][2]string{
		{"lands-web-1", "health-web-1"}, {"lands-web-1", "health-web-2"}, {"health-web-2", "lands-app-1"},
		{"health-web-1", "lands-web-2"}, {"lands-app-1", "health-web-2"},
	} {
		a, b := p[0], p[1]
		if dept[a] == dept[b] {
			t.Fatalf("ipv6: %s and %s are both in %s", a, b, dept[a])
		}
		if err := ping(a, addr6[b]); err == nil {
			t.Errorf("ipv6: %s (%s) pings %s (%s, %s) across departments", a, dept[a], b, dept[b], addr6[b])
		}
		if body, err := get("gc-vm-"+a, addr6[b]); err == nil {
			t.Errorf("ipv6: %s (%s) gets %q over HTTP from %s (%s) across departments", a, dept[a], body, b, dept[b])
		}
	}

	// The IPv6 VIP: held by FRR from both hosts, answering gc-client from both backends.
	eventually("FRR holds "+vip+" from each host", 30*time.Second, func() error {
		out, err := l.vtysh("show ipv6 route " + vip + "/128 json")
		if err != nil {
			return err
		}
		var routes map[string][]frrRoute
		if err := json.Unmarshal(out, &routes); err != nil {
			return fmt.Errorf("FRR route to %s: %v", vip, err)
		}
		var hops []string
		for _, r := range routes[vip+"/128"] {
			for _, nh := range r.Nexthops {
				if r.Protocol == "bgp" && r.Selected && nh.Active {
					hops = append(hops, nh.IP)
				}
			}
		}
		if len(hops) < len(l.hosts) {
			return fmt.Errorf("%d path(s) %v, want one per host", len(hops), hops)
		}
		return nil
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
	if _, err := nsOut(NSClient, "ping", "-6", "-c", "1", "-W", "2", vip); err != nil {
		t.Logf("ipv6: ping of the VIP from gc-client: %v (ICMP to a VIP is not required)", err)
	}

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
