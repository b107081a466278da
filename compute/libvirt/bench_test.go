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
	"testing"
	"time"

	"github.com/govcloud/govcloud/agent"
	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/compute/imagestore"
	"github.com/govcloud/govcloud/compute/netns"
	"github.com/govcloud/govcloud/compute/seed"
	"github.com/govcloud/govcloud/controlplane/apitest"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/dataplane/netdev"
)

// benchConfig: one department and segment, a host for the libvirt agent (cbhost) and one for
// the namespace agent (cbnet); each VM is pinned to one of them.
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
---
apiVersion: govcloud/v1
kind: Host
metadata: {name: cbnet}
spec: {uplink: eth0, address: 198.18.0.42, asn: 65001, bgpPeers: [{address: 198.18.0.1, asn: 65000}]}
`

// benchKind is one kind of guest the benchmark makes both ways.
type benchKind struct {
	name  string // "netns", "tiny", "debian"
	n     int
	host  string // the agent's host the VM is pinned to
	image string // VM spec.image ("" for tiny and netns)
	mem   int
	// byHand makes the same guest without govcloud at addr (a /24 in 198.18.205.0/24) and
	// returns a function that removes it.
	byHand func(b *testing.B, i int, addr string) (running time.Time, undo func())

	gov, hand         []time.Duration // start -> guest answers ping
	govQemu, handQemu []time.Duration // start -> qemu process running (libvirt kinds)
}

// BenchmarkComputeReport measures apply -> guest answering ping, through a real controller and
// the compute agent, for the three kinds of guest: a namespace guest (netns provider, the
// lab's), the tiny libvirt guest and the Debian image (libvirt, qemu TCG, NoCloud seed); each
// beside the same guest made by hand in the same run (ip netns + veth; qemu-img + virsh create
// of the same domain XML, and for Debian the same seed ISO). The two sides alternate VM by VM,
// so both see the same machine load. It prints p50/p95 of each side and the ratio of medians,
// and refuses the ratios when a sanity check failed (an address answering before its guest was
// made, so a stale guest would be timed). GC_BENCH_N sets the VMs per side for netns and tiny
// (default 10), GC_BENCH_DEBIAN_N for Debian (default 3; about 30 s each under TCG).
func BenchmarkComputeReport(b *testing.B) {
	lp := requireLibvirt(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n, nDeb := envInt("GC_BENCH_N", 10), envInt("GC_BENCH_DEBIAN_N", 3)
	env := apitest.New(b)
	c := env.Client("admin")
	cfg := benchConfig
	store, sum := "", ""
	if nDeb > 0 {
		store, sum = debianImage(b)
		lp.images = imagestore.New(store)
		cfg += apitest.Doc("Image", "debian-12", fmt.Sprintf("{source: debian-12.qcow2, sha256: %s, os: debian}", sum))
	}
	if _, err := c.Apply(ctx, "cb.yaml", []byte(cfg), client.ApplyOptions{}); err != nil {
		b.Fatalf("apply: %v", err)
	}
	bridge(b, 3905)
	np := netnsProvider(b)
	peer := spec("cbpeer", 3905, "198.18.205.250/24", "02:00:00:c7:05:fa")
	if _, err := np.Ensure(ctx, peer); err != nil {
		b.Fatal(err)
	}
	defer np.Delete(context.Background(), peer.Name)
	peerNS := np.NamespaceName(peer.Name)
	pings := func(addr string) bool {
		return exec.Command("ip", "netns", "exec", peerNS, "ping", "-c1", "-W0.2", addr).Run() == nil
	}

	// The two compute agents, as 'govcloud compute' runs them: libvirt on cbhost, namespaces on cbnet.
	naming := compute.Naming{Bridge: func(v int) string { return netdev.BridgeName(uint16(v)) }, Port: agent.GuestPort}
	gdir := b.TempDir()
	gp, err := netns.New(netns.Config{StateDir: gdir, HTTPCommand: netns.BusyboxHTTP(gdir), Prefix: "gcb-vm-"})
	if err != nil {
		b.Fatal(err)
	}
	actx, stopAgents := context.WithCancel(ctx)
	for _, a := range []*compute.Agent{
		{Host: "cbhost", Source: c, Provider: lp, Log: testLog(), Retry: 100 * time.Millisecond, Naming: naming},
		{Host: "cbnet", Source: c, Provider: gp, Log: testLog(), Retry: 100 * time.Millisecond, Naming: naming},
	} {
		go a.Run(actx)
	}
	defer stopAgents()

	hdir := b.TempDir()
	kinds := []*benchKind{
		{name: "netns", n: n, host: "cbnet", mem: 128, byHand: func(b *testing.B, i int, addr string) (time.Time, func()) {
			return time.Time{}, handNetns(b, fmt.Sprintf("gcbh%d", i), addr)
		}},
		{name: "tiny", n: n, host: "cbhost", mem: 128, byHand: func(b *testing.B, i int, addr string) (time.Time, func()) {
			sp := spec(fmt.Sprintf("gcbt%d", i), 3905, addr+"/24", fmt.Sprintf("52:54:00:c7:05:%02x", 100+i))
			return handVirsh(b, lp, hdir, sp, lp.base)
		}},
		{name: "debian", n: nDeb, host: "cbhost", image: "debian-12", mem: 512, byHand: func(b *testing.B, i int, addr string) (time.Time, func()) {
			sp := spec(fmt.Sprintf("gcbd%d", i), 3905, addr+"/24", fmt.Sprintf("52:54:00:c7:05:%02x", 200+i))
			sp.MemoryMiB, sp.Image = 512, "debian-12"
			sp.ImageFile = compute.Image{Name: "debian-12", Source: "debian-12.qcow2", SHA256: sum, OS: "debian"}
			if err := seed.WriteISO(lp.seedPath(sp.Name), seedConfig(sp)); err != nil {
				b.Fatal(err)
			}
			running, undo := handVirsh(b, lp, hdir, sp, filepath.Join(store, "debian-12.qcow2"))
			return running, func() { undo(); _ = os.Remove(lp.seedPath(sp.Name)) }
		}},
	}
	sane := true
	const limit = 180 * time.Second
	// waitPing polls addr from the peer until it answers; the guest must not answer at start.
	waitPing := func(what, addr string, start time.Time) time.Duration {
		for !pings(addr) {
			if time.Since(start) > limit {
				b.Fatalf("%s at %s: no ping after %v", what, addr, limit)
			}
		}
		return time.Since(start)
	}
	for i := range max(n, nDeb) {
		for _, k := range kinds {
			if i >= k.n {
				continue
			}
			// govcloud: apply the VM, wait for its address to answer, delete it.
			name := fmt.Sprintf("cb-%s%d", k.name, i)
			doc := fmt.Sprintf("{department: cb, vcpus: 1, memoryMiB: %d, host: %s, networks: [{segment: cb-web}]", k.mem, k.host)
			if k.image != "" {
				doc += ", image: " + k.image
			}
			start := time.Now()
			if _, err := c.Apply(ctx, name+".yaml", []byte(apitest.Doc("VM", name, doc+"}")), client.ApplyOptions{}); err != nil {
				b.Fatalf("apply %s: %v", name, err)
			}
			obj, err := c.Get(ctx, "VM", name)
			if err != nil || len(obj.Addresses) == 0 {
				b.Fatalf("%s: no address from the controller: %+v %v", name, obj, err)
			}
			addr := strings.Split(obj.Addresses[0], "/")[0]
			// An answer while the guest does not exist is someone else's (a leftover): the
			// guest cannot vanish between the two checks, so this order cannot misjudge a fast
			// guest (a netns guest answers within about 100 ms of the apply).
			if pings(addr) && !exists(k, lp, gp, name) {
				b.Logf("sanity: %s answered before %s was made", addr, name)
				sane = false
			}
			if k.name != "netns" {
				k.govQemu = append(k.govQemu, waitQemu(b, domName(name), start))
			}
			d := waitPing(name, addr, start)
			k.gov = append(k.gov, d)
			b.Logf("%s (govcloud, %s) at %s answers ping after %v", name, k.name, addr, d.Round(time.Millisecond))
			if _, err := c.Delete(ctx, "VM", name, false); err != nil {
				b.Fatal(err)
			}
			for wait := time.Now(); pings(addr) || exists(k, lp, gp, name); time.Sleep(50 * time.Millisecond) {
				if time.Since(wait) > 60*time.Second {
					b.Fatalf("%s not gone 60s after delete", name)
				}
			}

			// By hand: the same guest, made as an operator without govcloud would.
			haddr := fmt.Sprintf("198.18.205.%d", 100+i)
			if pings(haddr) {
				b.Logf("sanity: %s answered before its by-hand guest was made", haddr)
				sane = false
			}
			start = time.Now()
			running, undo := k.byHand(b, i, haddr)
			if !running.IsZero() {
				k.handQemu = append(k.handQemu, running.Sub(start))
			}
			d = waitPing("by hand "+k.name, haddr, start)
			k.hand = append(k.hand, d)
			b.Logf("by hand (%s) at %s answers ping after %v", k.name, haddr, d.Round(time.Millisecond))
			undo()
		}
	}
	stopAgents()

	fmt.Printf("compute: apply -> guest answers ping from a neighbour on its segment; govcloud (controller + compute agent) beside the same guest by hand, alternated VM by VM\n")
	for _, k := range kinds {
		if k.n == 0 {
			continue
		}
		how := map[string]string{"netns": "ip netns + veth + busybox", "tiny": "qemu-img + virsh create", "debian": "qemu-img + seed ISO + virsh create"}[k.name]
		fmt.Printf("  %-6s govcloud apply -> ping, p50  : %d ms  (p95 %d ms, %d VMs)\n", k.name, pct(k.gov, 50).Milliseconds(), pct(k.gov, 95).Milliseconds(), len(k.gov))
		fmt.Printf("  %-6s by hand -> ping, p50         : %d ms  (p95 %d ms; %s)\n", k.name, pct(k.hand, 50).Milliseconds(), pct(k.hand, 95).Milliseconds(), how)
		if len(k.govQemu) > 0 && len(k.handQemu) > 0 {
			fmt.Printf("  %-6s govcloud apply -> qemu, p50  : %d ms  (p95 %d ms)\n", k.name, pct(k.govQemu, 50).Milliseconds(), pct(k.govQemu, 95).Milliseconds())
			fmt.Printf("  %-6s by hand -> domain running, p50 : %d ms  (p95 %d ms)\n", k.name, pct(k.handQemu, 50).Milliseconds(), pct(k.handQemu, 95).Milliseconds())
		}
	}
	if !sane {
		fmt.Printf("no ratios: an address answered before its guest was made (see the log)\n")
		b.Fail()
		return
	}
	for _, k := range kinds {
		if k.n > 0 {
			fmt.Printf("  %-6s ratio govcloud / by hand, ping p50 : %.2f x\n", k.name, float64(pct(k.gov, 50))/float64(pct(k.hand, 50)))
		}
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

// waitQemu returns how long after start the qemu process of domain dom runs (its pid file
// names a live process).
func waitQemu(b *testing.B, dom string, start time.Time) time.Duration {
	pidFile := filepath.Join("/run/libvirt/qemu", dom+".pid")
	for time.Since(start) < 120*time.Second {
		if pb, err := os.ReadFile(pidFile); err == nil {
			if pid, _ := strconv.Atoi(strings.TrimSpace(string(pb))); pid > 0 {
				if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
					return time.Since(start)
				}
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	b.Fatalf("qemu of %s not running after 120s", dom)
	return 0
}

// exists says whether the provider of kind k still has VM name.
func exists(k *benchKind, lp *Provider, gp *netns.Provider, name string) bool {
	var list []compute.VMStatus
	if k.name == "netns" {
		list, _ = gp.List(context.Background())
	} else {
		list, _ = lp.List(context.Background())
	}
	return slices.ContainsFunc(list, func(s compute.VMStatus) bool { return s.Name == name })
}

// handNetns makes a namespace guest as an operator would with iproute2: a namespace, a veth
// pair with one end on the segment bridge and the other as the guest's eth0 with addr/24.
func handNetns(b *testing.B, ns, addr string) func() {
	port := "gcbh-" + strings.TrimPrefix(ns, "gcbh")
	br := netdev.BridgeName(3905)
	for _, args := range [][]string{
		{"netns", "add", ns},
		{"link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"link", "set", port, "master", br, "up"},
		{"-n", ns, "addr", "add", addr + "/24", "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			b.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return func() {
		_ = exec.Command("ip", "link", "del", port).Run()
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
}

// handVirsh makes the VM of sp as an operator would with libvirt's tools: qemu-img makes the
// root overlay on backing, 'virsh create' starts the provider's domain XML for it (no metadata,
// a name no agent owns). It returns when virsh returned (libvirt has the domain running).
func handVirsh(b *testing.B, lp *Provider, dir string, sp compute.VMSpec, backing string) (time.Time, func()) {
	disk := filepath.Join(lp.cfg.PoolPath, sp.Name+".qcow2")
	x, err := lp.domainXML(sp, meta{}, []string{disk}, "")
	if err != nil {
		b.Fatal(err)
	}
	x = x[:strings.Index(x, "<metadata>")] + x[strings.Index(x, "</metadata>")+len("</metadata>"):]
	x = strings.Replace(x, "<name>"+domName(sp.Name)+"</name>", "<name>"+sp.Name+"</name>", 1)
	xf := filepath.Join(dir, sp.Name+".xml")
	if err := os.WriteFile(xf, []byte(x), 0o644); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", "qcow2", disk).CombinedOutput(); err != nil {
		b.Fatalf("qemu-img: %v: %s", err, out)
	}
	if out, err := exec.Command("virsh", "-c", "qemu:///system", "create", xf).CombinedOutput(); err != nil {
		b.Fatalf("virsh create %s: %v: %s", sp.Name, err, out)
	}
	running := time.Now()
	return running, func() {
		_ = exec.Command("virsh", "-c", "qemu:///system", "destroy", sp.Name).Run()
		_ = os.Remove(disk)
		_ = os.Remove(lp.ShellSocket(sp.Name))
		_ = os.Remove(lp.GuestAgentSocket(sp.Name))
	}
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)].Round(time.Millisecond)
}
