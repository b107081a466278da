package lab

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/client"
)

const internalYAML = `apiVersion: govcloud/v1
kind: AddressPool
metadata: {name: lands-internal}
spec: {cidrs: [198.19.254.0/28], departments: [lands], scope: internal}
---
apiVersion: govcloud/v1
kind: Service
metadata: {name: lands-api}
spec:
  department: lands
  pool: lands-internal
  ports: [{port: 80, protocol: tcp}]
  backends: [{vm: lands-web-1}, {vm: lands-web-2}]
  healthCheck: {type: tcp, interval: 1s, healthyThreshold: 2, unhealthyThreshold: 2}
---
apiVersion: govcloud/v1
kind: Segment
metadata: {name: lands-api-clients}
spec: {department: lands, vlan: 122, ipv4: 198.18.22.0/24, gateway: 198.18.22.1}
---
apiVersion: govcloud/v1
kind: VM
metadata: {name: lands-api-c1}
spec: {department: lands, vcpus: 1, memoryMiB: 64, image: tiny, networks: [{segment: lands-api-clients}], host: gc-host1}
---
apiVersion: govcloud/v1
kind: VM
metadata: {name: lands-api-c2}
spec: {department: lands, vcpus: 1, memoryMiB: 64, image: tiny, networks: [{segment: lands-api-clients}], host: gc-host2}
`

// internalVIP (issue 17 §2): a service of lands on an internal pool (backends lands-web-1 and
// -2, one per host) answers HTTP and ping from lands' guests on another segment
// (lands-api-clients, one guest per host), each reaching both backends, and from nobody else:
// health's guests, gc-client and gc-tor, also when the ToR is given a static route to either
// host (the VIP is never advertised, and no table but lands' routes it). The objects are
// deleted after.
func internalVIP(t *testing.T, bin, dir string) {
	t.Helper()
	ctx := context.Background()
	l, admin := openLab(t, bin, dir)
	c := l.client(admin)
	if _, err := c.Apply(ctx, "internal.yaml", []byte(internalYAML), client.ApplyOptions{}); err != nil {
		t.Fatalf("apply internal service: %v", err)
	}
	defer func() {
		for _, k := range [][2]string{{"Service", "lands-api"}, {"VM", "lands-api-c1"}, {"VM", "lands-api-c2"}, {"Segment", "lands-api-clients"}, {"AddressPool", "lands-internal"}} {
			if _, err := c.Delete(ctx, k[0], k[1], false); err != nil {
				t.Errorf("delete %s %s: %v", k[0], k[1], err)
			}
		}
	}()
	var vip string
	if vs, err := l.vips(ctx, admin); err == nil {
		for _, v := range vs {
			if v.Service == "lands-api" {
				vip = v.VIP
			}
		}
	}
	if !strings.HasPrefix(vip, "198.19.254.") {
		t.Fatalf("lands-api VIP %q, want one from 198.19.254.0/28", vip)
	}
	get := func(ns string) (string, error) {
		out, err := nsOut(ns, "curl", "-sS", "--max-time", "2", "http://"+vip+"/")
		return strings.TrimSpace(out), err
	}
	ping := func(ns string) error {
		_, err := nsOut(ns, "ping", "-c", "1", "-W", "1", vip)
		return err
	}
	// Lands' guests on both hosts: every backend answers (the route spreads by 5-tuple).
	for _, g := range []string{"gc-vm-lands-api-c1", "gc-vm-lands-api-c2"} {
		seen := map[string]bool{}
		deadline := time.Now().Add(30 * time.Second)
		for len(seen) < 2 {
			out, err := get(g)
			if err == nil {
				seen[out] = true
			}
			if time.Now().After(deadline) {
				t.Fatalf("internal VIP %s from %s: answers %v after 30s, want both backends; last error %v\n%s", vip, g, seen, err, internalDump(vip))
			}
		}
		if err := ping(g); err != nil {
			t.Fatalf("ping internal VIP from %s: %v", g, err)
		}
	}
	refused := func(when string, nss ...string) {
		t.Helper()
		for _, ns := range nss {
			if out, err := get(ns); err == nil {
				t.Fatalf("%s: internal VIP %s answered HTTP from %s: %q", when, vip, ns, out)
			}
			if ping(ns) == nil {
				t.Fatalf("%s: internal VIP %s answered ping from %s", when, vip, ns)
			}
		}
	}
	refused("other department and outside", "gc-vm-health-web-1", "gc-vm-health-web-2", NSClient, NSTor)
	if out, err := l.vtysh("show ip route " + vip + "/32 json"); err == nil && strings.Contains(string(out), `"protocol":"bgp"`) {
		t.Fatalf("internal VIP %s advertised to the ToR: %s", vip, out)
	}
	// The fabric forced toward each host: still nothing (no public table routes it).
	for i := range 2 {
		if _, err := nsOut(NSTor, "ip", "route", "replace", vip+"/32", "via", hostAddr(i)); err != nil {
			t.Fatal(err)
		}
		refused(fmt.Sprintf("ToR routes the VIP to %s", hostAddr(i)), NSClient, NSTor, "gc-vm-health-web-1")
	}
	if _, err := nsOut(NSTor, "ip", "route", "del", vip+"/32"); err != nil {
		t.Fatal(err)
	}
}

// internalDump is what the hosts hold for vip, for a failure message.
func internalDump(vip string) string {
	var b strings.Builder
	for _, h := range defaultHosts {
		out, _ := nsOut(h, "ip", "route", "show", "table", "all", "match", vip)
		fmt.Fprintf(&b, "%s routes to %s:\n%s\n", h, vip, out)
	}
	return b.String()
}
