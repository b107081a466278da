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
// segment (boot included, TCG); then the same VMs by hand (qemu-img + virsh create of the same
// domain XML) as the baseline, and the ratios. GC_BENCH_N sets the number of VMs (default 10).
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
	actx, stopAgent := context.WithCancel(ctx)
	go a.Run(actx)

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
	stopAgent()

	// The same VMs by hand, as an operator without govcloud would: qemu-img makes the overlay,
	// 'virsh create' starts the same domain XML (no metadata, a name no agent owns).
	var vRunning, vPing []time.Duration
	dir := b.TempDir()
	for i := range n {
		name := fmt.Sprintf("gcb-vm%d", i)
		addr := fmt.Sprintf("198.18.205.%d", 100+i)
		sp := spec(name, 3905, addr+"/24", fmt.Sprintf("52:54:00:c7:05:%02x", 100+i))
		disk := filepath.Join(lp.cfg.PoolPath, name+".qcow2")
		x, err := lp.domainXML(sp, meta{}, []string{disk}, "")
		if err != nil {
			b.Fatal(err)
		}
		x = x[:strings.Index(x, "<metadata>")] + x[strings.Index(x, "</metadata>")+len("</metadata>"):]
		x = strings.Replace(x, "<name>"+domName(name)+"</name>", "<name>"+name+"</name>", 1)
		xf := filepath.Join(dir, name+".xml")
		if err := os.WriteFile(xf, []byte(x), 0o644); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", lp.base, "-F", "qcow2", disk).CombinedOutput(); err != nil {
			b.Fatalf("qemu-img: %v: %s", err, out)
		}
		if out, err := exec.Command("virsh", "-c", "qemu:///system", "create", xf).CombinedOutput(); err != nil {
			b.Fatalf("virsh create %s: %v: %s", name, err, out)
		}
		running := time.Since(start) // virsh returns once libvirt has the domain running
		var ping time.Duration
		for ping == 0 {
			if time.Since(start) > 120*time.Second {
				b.Fatalf("%s (virsh): no ping after 120s", name)
			}
			if exec.Command("ip", "netns", "exec", np.NamespaceName(peer.Name), "ping", "-c1", "-W0.2", addr).Run() == nil {
				ping = time.Since(start)
			}
		}
		vRunning, vPing = append(vRunning, running), append(vPing, ping)
		_ = exec.Command("virsh", "-c", "qemu:///system", "destroy", name).Run()
		_ = os.Remove(disk)
		_ = os.Remove(lp.ShellSocket(name))
	}

	fmt.Printf("compute: %d VMs applied through the controller, libvirt provider, qemu TCG\n", n)
	fmt.Printf("  apply -> qemu process running: p50 %v  p95 %v  (goal p95 <= 300ms)\n", pct(toQemu, 50), pct(toQemu, 95))
	fmt.Printf("  apply -> domain running (agent pass done): p50 %v  p95 %v\n", pct(toDone, 50), pct(toDone, 95))
	fmt.Printf("  apply -> guest answers ping:   p50 %v  p95 %v  (goal p95 <= 6s)\n", pct(toPing, 50), pct(toPing, 95))
	fmt.Printf("by hand, same domain XML: qemu-img create + virsh create, %d VMs\n", n)
	fmt.Printf("  start -> domain running (virsh returned): p50 %v  p95 %v\n", pct(vRunning, 50), pct(vRunning, 95))
	fmt.Printf("  start -> guest answers ping:   p50 %v  p95 %v\n", pct(vPing, 50), pct(vPing, 95))
	fmt.Printf("ratio govcloud (controller + agent) / by hand, p95: domain running %.2fx, guest answers ping %.2fx\n",
		float64(pct(toDone, 95))/float64(pct(vRunning, 95)), float64(pct(toPing, 95))/float64(pct(vPing, 95)))
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)].Round(time.Millisecond)
}
