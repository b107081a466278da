package libvirt

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/govcloud/govcloud/agent"
	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/controlplane/apitest"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/dataplane/netdev"
)

const benchConfig = `apiVersion: govcloud/v1
kind: Department
metadata: {name: cb}
spec: {displayName: Compute bench}
---
apiVersion: govcloud/v1
kind: Segment
metadata: {name: cb-web}
spec: {department: cb, vlan: 3905, ipv4: 198.18.205.0/24, gateway: 198.18.205.1}
---
apiVersion: govcloud/v1
kind: Host
metadata: {name: cbhost}
spec: {uplink: eth0, address: 198.18.0.41, asn: 65001, bgpPeers: [{address: 198.18.0.1, asn: 65000}]}
`

// BenchmarkComputeReport applies VMs one at a time to a real controller, with the compute agent
// (libvirt provider) following it, and prints the p50/p95 of apply -> qemu process running
// (control plane, boot excluded) and apply -> guest answering ping from a neighbour on the
// segment (boot included, TCG). GC_BENCH_N sets the number of VMs (default 10).
func BenchmarkComputeReport(b *testing.B) {
	lp := requireLibvirt(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 10
	if v, err := strconv.Atoi(os.Getenv("GC_BENCH_N")); err == nil && v > 0 {
		n = v
	}
	env := apitest.New(b)
	c := env.Client("admin")
	if _, err := c.Apply(ctx, "cb.yaml", []byte(benchConfig), client.ApplyOptions{}); err != nil {
		b.Fatalf("apply: %v", err)
	}
	bridge(b, 3905)
	np := netnsProvider(b)
	peer := spec("cbpeer", 3905, "198.18.205.250/24", "02:00:00:c7:05:fa")
	if _, err := np.Ensure(ctx, peer); err != nil {
		b.Fatal(err)
	}
	defer np.Delete(context.Background(), peer.Name)
	var mu sync.Mutex
	reported := map[string]time.Time{} // VM -> when a pass first reported it running
	a := &compute.Agent{Host: "cbhost", Source: c, Provider: lp, Log: testLog(), Retry: 100 * time.Millisecond,
		Sink: func(_ context.Context, r compute.Report) {
			mu.Lock()
			defer mu.Unlock()
			for _, v := range r.VMs {
				if _, ok := reported[v.Name]; !ok && v.State == compute.Running {
					reported[v.Name] = time.Now()
				}
			}
		},
		Naming: compute.Naming{Bridge: func(v int) string { return netdev.BridgeName(uint16(v)) }, Port: agent.GuestPort}}
	go a.Run(ctx)

	var toQemu, toDone, toPing []time.Duration
	for i := range n {
		name := fmt.Sprintf("cb-vm%d", i)
		doc := apitest.Doc("VM", name, "{department: cb, vcpus: 1, memoryMiB: 128, networks: [{segment: cb-web}]}")
		pidFile := filepath.Join("/run/libvirt/qemu", domName(name)+".pid")
		start := time.Now()
		if _, err := c.Apply(ctx, name+".yaml", []byte(doc), client.ApplyOptions{}); err != nil {
			b.Fatalf("apply %s: %v", name, err)
		}
		obj, err := c.Get(ctx, "VM", name)
		if err != nil {
			b.Fatal(err)
		}
		if len(obj.Addresses) == 0 {
			b.Fatalf("%s: controller gave no address: %+v", name, obj)
		}
		addr := strings.Split(obj.Addresses[0], "/")[0]
		var qemu, ping time.Duration
		for qemu == 0 || ping == 0 {
			if time.Since(start) > 120*time.Second {
				b.Fatalf("%s: not up after 120s (qemu %v, ping %v); console %q", name, qemu, ping, tail(lp.ConsoleLog(name)))
			}
			if qemu == 0 {
				if pb, err := os.ReadFile(pidFile); err == nil {
					if pid, _ := strconv.Atoi(strings.TrimSpace(string(pb))); pid > 0 {
						if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
							qemu = time.Since(start)
						}
					}
				}
				time.Sleep(2 * time.Millisecond)
				continue
			}
			if exec.Command("ip", "netns", "exec", np.NamespaceName(peer.Name), "ping", "-c1", "-W0.2", addr).Run() == nil {
				ping = time.Since(start)
			}
		}
		mu.Lock()
		done := reported[name].Sub(start)
		mu.Unlock()
		toQemu, toPing, toDone = append(toQemu, qemu), append(toPing, ping), append(toDone, done)
		b.Logf("%s at %s: qemu running after %v, libvirt reports it running after %v, answers ping after %v", name, addr, qemu.Round(time.Millisecond), done.Round(time.Millisecond), ping.Round(time.Millisecond))
		if _, err := c.Delete(ctx, "VM", name, false); err != nil {
			b.Fatal(err)
		}
		for d := time.Now(); ; time.Sleep(20 * time.Millisecond) {
			if _, err := os.Stat(pidFile); err != nil {
				break
			}
			if time.Since(d) > 30*time.Second {
				b.Fatalf("%s not deleted after 30s", name)
			}
		}
	}
	fmt.Printf("compute: %d VMs applied through the controller, libvirt provider, qemu TCG\n", n)
	fmt.Printf("  apply -> qemu process running: p50 %v  p95 %v  (goal p95 <= 300ms)\n", pct(toQemu, 50), pct(toQemu, 95))
	fmt.Printf("  apply -> domain running (agent pass done): p50 %v  p95 %v\n", pct(toDone, 50), pct(toDone, 95))
	fmt.Printf("  apply -> guest answers ping:   p50 %v  p95 %v  (goal p95 <= 6s)\n", pct(toPing, 50), pct(toPing, 95))
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)].Round(time.Millisecond)
}
