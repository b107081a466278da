package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/client"
)

// policyVMs are the lab's app and db tiers of lands for the security-policy scenario: the app
// guest on gc-host1, the db guest on gc-host2, both on lands-web with lands-web-1 (gc-host1)
// and lands-web-2 (gc-host2).
const policyVMs = `apiVersion: govcloud/v1
kind: VM
metadata: {name: lands-app, labels: {tier: app}}
spec: {department: lands, vcpus: 1, memoryMiB: 64, image: tiny, networks: [{segment: lands-web}], host: gc-host1}
---
apiVersion: govcloud/v1
kind: VM
metadata: {name: lands-db, labels: {tier: db}}
spec: {department: lands, vcpus: 1, memoryMiB: 64, image: tiny, networks: [{segment: lands-web}], host: gc-host2}
`

// dbPort is the database port the policy opens to the app tier; dbOtherPort stays closed.
const dbPort, dbOtherPort = 5432, 5433

const policyDoc = `apiVersion: govcloud/v1
kind: SecurityPolicy
metadata: {name: %s}
spec:
  department: lands
  selector: {tier: %s}
  allow:
    - from: [{vmLabels: {tier: app}}]
      protocol: tcp
      ports: [{port: %d}]
`

// securityPolicy (issue 17 §5) labels an app and a db VM in lands, applies a policy that lets
// only the app tier reach the db port, and opens real TCP connections between the lab's
// namespace guests: app -> db:5432 across the trunk is allowed; lands-web-1 -> db:5432 (across
// the trunk), lands-web-2 -> db:5432 (bridged on db's own host) and app -> db:5433 are
// refused; guests no policy selects stay reachable. Deleting the policy opens db again; the
// VMs are removed at the end.
func securityPolicy(t *testing.T, bin, dir string) {
	t.Run("security-policy", func(t *testing.T) {
		l, admin := openLab(t, bin, dir) // TestLab's namespace lab: guests are namespaces it can listen in
		c := l.client(admin)
		ctx := context.Background()
		if _, err := c.Apply(ctx, "policy-vms.yaml", []byte(policyVMs), client.ApplyOptions{}); err != nil {
			t.Fatalf("apply the app and db VMs: %v", err)
		}
		defer func() {
			for _, vm := range []string{"lands-app", "lands-db"} {
				if _, err := c.Delete(ctx, "vms", vm, false); err != nil {
					t.Errorf("delete vm %s: %v", vm, err)
				}
			}
			waitFor(t, 30*time.Second, "the scenario's guests removed", func() error {
				for _, ns := range []string{"gc-vm-lands-app", "gc-vm-lands-db"} {
					if nsExists(ns) {
						return fmt.Errorf("%s still exists", ns)
					}
				}
				return nil
			})
		}()
		addr := map[string]string{}
		waitFor(t, 30*time.Second, "the app and db guests", func() error {
			for _, vm := range []string{"lands-app", "lands-db", "lands-web-1", "lands-web-2"} {
				a, err := vmAddr(ctx, c, vm)
				if err != nil {
					return err
				}
				if !nsExists("gc-vm-" + vm) {
					return fmt.Errorf("no guest namespace for %s yet", vm)
				}
				addr[vm] = a
			}
			return nil
		})
		for _, p := range []struct {
			vm   string
			port int
		}{{"lands-db", dbPort}, {"lands-db", dbOtherPort}, {"lands-app", dbPort}} {
			stop, err := listenIn("gc-vm-"+p.vm, p.port)
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
		}
		type probe struct {
			name, from, to string
			port           int
			allowed        bool
		}
		check := func(step string, ps []probe) {
			t.Helper()
			for _, p := range ps {
				err := dialFrom("gc-vm-"+p.from, addr[p.to], p.port, 700*time.Millisecond)
				t.Logf("%s: %s -> %s:%d (%s): connected=%v", step, p.from, p.to, p.port, p.name, err == nil)
				if (err == nil) != p.allowed {
					t.Errorf("%s: %s (%s -> %s %s:%d): connected=%v (%v), want %v", step, p.name, p.from, p.to, addr[p.to], p.port, err == nil, err, p.allowed)
				}
			}
		}
		// Before: the department reaches db on both ports, across the trunk too (waits for the
		// new guests' ports and both hosts' neighbour entries).
		waitFor(t, 30*time.Second, "lands reaching lands-db before any policy", func() error {
			for _, p := range []probe{
				{"web-2 to db, bridged", "lands-web-2", "lands-db", dbPort, true},
				{"web-1 to db across the trunk", "lands-web-1", "lands-db", dbPort, true},
				{"app to db's other port across the trunk", "lands-app", "lands-db", dbOtherPort, true},
			} {
				if err := dialFrom("gc-vm-"+p.from, addr[p.to], p.port, 500*time.Millisecond); err != nil {
					return fmt.Errorf("%s: %w", p.name, err)
				}
			}
			return nil
		})

		if _, err := c.Apply(ctx, "policy.yaml", []byte(fmt.Sprintf(policyDoc, "db-from-app", "db", dbPort)), client.ApplyOptions{}); err != nil {
			t.Fatalf("apply the policy: %v", err)
		}
		waitFor(t, 10*time.Second, "the policy enforced (lands-web-2 refused at lands-db)", func() error {
			if dialFrom("gc-vm-lands-web-2", addr["lands-db"], dbPort, 300*time.Millisecond) == nil {
				return errors.New("lands-web-2 still connects to lands-db")
			}
			return nil
		})
		check("db only from app", []probe{
			{"app to db's port, across the trunk", "lands-app", "lands-db", dbPort, true},
			{"web-1 to db's port, across the trunk", "lands-web-1", "lands-db", dbPort, false},
			{"web-2 to db's port, bridged on db's host", "lands-web-2", "lands-db", dbPort, false},
			{"app to db's other port", "lands-app", "lands-db", dbOtherPort, false},
			{"web-2 to app (no policy selects it)", "lands-web-2", "lands-app", dbPort, true},
			{"web-1 to app, same host", "lands-web-1", "lands-app", dbPort, true},
			{"db's own connection to app (replies pass)", "lands-db", "lands-app", dbPort, true},
		})
		if body, err := l.guestHTTP("lands-web-2", addr["lands-web-1"]); err != nil || strings.TrimSpace(body) != "lands-web-1" {
			t.Errorf("lands-web-2 -> lands-web-1 HTTP (no policy): %q, %v", body, err)
		}
		waitFor(t, 15*time.Second, "policy drops in the agents' metrics", func() error {
			by, err := l.scrapeBy("govcloud_department_drops_total", "reason")
			if err != nil {
				return err
			}
			if by["policy"] < 2 {
				return fmt.Errorf("drops by reason %v: want policy >= 2", by)
			}
			return nil
		})

		if _, err := c.Delete(ctx, "securitypolicies", "db-from-app", false); err != nil {
			t.Fatalf("delete the policy: %v", err)
		}
		waitFor(t, 10*time.Second, "db open again after the policy's deletion", func() error {
			return dialFrom("gc-vm-lands-web-2", addr["lands-db"], dbPort, 300*time.Millisecond)
		})
		check("policy deleted", []probe{
			{"web-1 to db across the trunk", "lands-web-1", "lands-db", dbPort, true},
			{"app to db's other port", "lands-app", "lands-db", dbOtherPort, true},
		})
	})
}

// waitFor retries fn every 50 ms until it returns nil, failing the test after d.
func waitFor(t testing.TB, d time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %v", what, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// vmAddr is vm's IPv4 address from the controller (its placed host's desired state).
func vmAddr(ctx context.Context, c *client.Client, vm string) (string, error) {
	for _, h := range defaultHosts {
		st, err := c.Desired(ctx, h, 0, time.Second)
		if err != nil {
			return "", err
		}
		for _, v := range st.VMs {
			if v.Name == vm && len(v.Interfaces) > 0 && v.Interfaces[0].Prefix4.IsValid() {
				return v.Interfaces[0].Prefix4.Addr().String(), nil
			}
		}
	}
	return "", fmt.Errorf("vm %s has no address on any host yet", vm)
}

// listenIn accepts TCP connections on port in namespace ns (closing each at once) until stop.
func listenIn(ns string, port int) (stop func(), err error) {
	var ln net.Listener
	if err := inNS(ns, func() (err error) { ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port)); return }); err != nil {
		return nil, fmt.Errorf("listen on %d in %s: %w", port, ns, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return func() { ln.Close(); wg.Wait() }, nil
}

// dialFrom opens (and closes) a TCP connection from namespace ns to addr:port.
func dialFrom(ns, addr string, port int, timeout time.Duration) error {
	return inNS(ns, func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, fmt.Sprint(port)), timeout)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// benchPolicyVMs are two db VMs, one per host, for policyEnforcement.
const benchPolicyVMs = `apiVersion: govcloud/v1
kind: VM
metadata: {name: pol-db-1, labels: {tier: bench-db}}
spec: {department: lands, vcpus: 1, memoryMiB: 64, image: tiny, networks: [{segment: lands-web}], host: gc-host1}
---
apiVersion: govcloud/v1
kind: VM
metadata: {name: pol-db-2, labels: {tier: bench-db}}
spec: {department: lands, vcpus: 1, memoryMiB: 64, image: tiny, networks: [{segment: lands-web}], host: gc-host2}
`

// policyEnforcement is part of 'make bench-agent' (called by BenchmarkApplyToForwarding on its
// lab): the time from 'apply' of a security policy selecting a db VM on each host to both
// refusing a connection the policy does not allow. lands-web-2 probes both VMs' port in a loop
// (a new TCP connection each time, 100 ms timeout); a host enforces from the start of its
// first refused probe. Between rounds the policy is deleted and both VMs answer again.
func policyEnforcement(b *testing.B, l *Lab, c *client.Client) {
	ctx := context.Background()
	if _, err := c.Apply(ctx, "bench-policy-vms.yaml", []byte(benchPolicyVMs), client.ApplyOptions{}); err != nil {
		b.Fatalf("apply the db VMs: %v", err)
	}
	vms := []string{"pol-db-1", "pol-db-2"}
	addr := map[string]string{}
	waitFor(b, 30*time.Second, "the db guests", func() error {
		for _, vm := range vms {
			a, err := vmAddr(ctx, c, vm)
			if err != nil {
				return err
			}
			if !nsExists("gc-vm-" + vm) {
				return fmt.Errorf("no guest namespace for %s yet", vm)
			}
			addr[vm] = a
		}
		return nil
	})
	for _, vm := range vms {
		stop, err := listenIn("gc-vm-"+vm, dbPort)
		if err != nil {
			b.Fatal(err)
		}
		defer stop()
	}
	open := func() error {
		for _, vm := range vms {
			if err := dialFrom("gc-vm-lands-web-2", addr[vm], dbPort, 300*time.Millisecond); err != nil {
				return fmt.Errorf("%s: %w", vm, err)
			}
		}
		return nil
	}
	const rounds = 20
	var took []time.Duration
	for i := 0; i < rounds; i++ {
		waitFor(b, 30*time.Second, fmt.Sprintf("round %d: both db VMs open", i), open)
		start := time.Now()
		if _, err := c.Apply(ctx, "bench-policy.yaml", []byte(fmt.Sprintf(policyDoc, "bench-db", "bench-db", dbPort)), client.ApplyOptions{}); err != nil {
			b.Fatalf("round %d: apply: %v", i, err)
		}
		enforced := make([]time.Duration, len(vms))
		errs := make([]error, len(vms))
		var wg sync.WaitGroup
		for j, vm := range vms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Since(start) < 10*time.Second {
					t0 := time.Since(start)
					if dialFrom("gc-vm-lands-web-2", addr[vm], dbPort, 100*time.Millisecond) != nil {
						enforced[j] = t0
						return
					}
				}
				errs[j] = fmt.Errorf("%s still answers lands-web-2 10 s after the policy's apply", vm)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			b.Fatalf("round %d: %v", i, err)
		}
		took = append(took, slices.Max(enforced))
		if _, err := c.Delete(ctx, "securitypolicies", "bench-db", false); err != nil {
			b.Fatalf("round %d: delete: %v", i, err)
		}
	}
	for _, vm := range vms {
		if _, err := c.Delete(ctx, "vms", vm, false); err != nil {
			b.Fatalf("delete vm %s: %v", vm, err)
		}
	}
	slices.Sort(took)
	pct := func(p float64) time.Duration { return took[min(len(took)-1, int(float64(len(took))*p))] }
	fmt.Printf("-- apply -> security policy enforced on both hosts (lab, %d rounds; lands-web-2 refused at a db VM on each host)\n", rounds)
	fmt.Printf("  policy enforced on both hosts, p50 : %6.0f ms\n", ms(pct(.5)))
	fmt.Printf("  policy enforced on both hosts, p99 : %6.0f ms  (goal < 500 ms)\n", ms(pct(.99)))
}
