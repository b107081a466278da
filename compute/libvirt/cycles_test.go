package libvirt

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/compute/netns"
	"github.com/govcloud/govcloud/controlplane/apitest"
)

const (
	cycleNSPrefix = "gct-cy-"
	cycleVLAN     = 3902
)

// TestMain doubles as the compute agent killed by TestCreateDeleteCycles: with GC_COMPUTE_HELPER
// set, the binary runs one reconcile pass to the specs in GC_COMPUTE_SPEC and exits.
func TestMain(m *testing.M) {
	if kind := os.Getenv("GC_COMPUTE_HELPER"); kind != "" {
		os.Exit(helper(kind))
	}
	code := m.Run()
	apitest.Shutdown()
	os.Exit(code)
}

func helper(kind string) int {
	ctx := context.Background()
	var want []compute.VMSpec
	b, err := os.ReadFile(os.Getenv("GC_COMPUTE_SPEC"))
	if err == nil {
		err = json.Unmarshal(b, &want)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper spec:", err)
		return 2
	}
	var p compute.Provider
	switch kind {
	case "libvirt":
		lp, err := New(ctx, Config{Pool: "gc-test-pool", StateDir: testStateDir, PoolPath: testStateDir + "/pool"})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		p = lp
	default:
		dir := os.Getenv("GC_COMPUTE_STATE")
		np, err := netns.New(netns.Config{StateDir: dir, HTTPCommand: netns.BusyboxHTTP(dir), Prefix: cycleNSPrefix})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		p = np
	}
	if _, err := compute.Reconcile(ctx, p, want, testLog()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// 50 create/delete cycles, most with namespace guests and a few with real libvirt domains (with a
// data volume); in a third of the creates and a third of the deletes the agent doing the work is
// SIGKILLed at a random moment and a fresh one takes over. Each cycle must end with the VM in the
// wanted state, and at the end nothing may be left: no domains, volumes, taps, namespaces,
// guest processes or state files.
func TestCreateDeleteCycles(t *testing.T) {
	lp := requireLibvirt(t)
	ctx := context.Background()
	bridge(t, cycleVLAN)
	dir := t.TempDir()
	np, err := netns.New(netns.Config{StateDir: dir, HTTPCommand: netns.BusyboxHTTP(dir), Prefix: cycleNSPrefix})
	if err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	var names []string
	kills := 0
	for i := range 50 {
		real := i%12 == 0 // cycles 0, 12, 24, 36, 48: libvirt
		name := fmt.Sprintf("tc%d", i)
		names = append(names, name)
		s := spec(name, cycleVLAN, fmt.Sprintf("198.18.202.%d/24", 10+i), fmt.Sprintf("52:54:00:c7:01:%02x", i))
		var p compute.Provider = np
		kind, maxKill := "netns", 60*time.Millisecond
		if real {
			s.Volumes = []compute.VolumeSpec{{Name: "tcv" + name, SizeGiB: 1}}
			p, kind, maxKill = lp, "libvirt", 600*time.Millisecond
		}
		// Create.
		if i%3 == 1 {
			if killedAgent(t, kind, dir, []compute.VMSpec{s}, time.Duration(rng.Int64N(int64(maxKill)))) {
				kills++
			}
		}
		st, err := compute.Reconcile(ctx, p, []compute.VMSpec{s}, testLog())
		if err != nil || len(st) != 1 || st[0].State != compute.Running {
			t.Fatalf("cycle %d (%s): create: %+v, %v", i, kind, st, err)
		}
		if !real {
			// The guest is on the bridge with its address.
			out, err := exec.Command("ip", "-n", np.NamespaceName(name), "-br", "addr", "show", "eth0").CombinedOutput()
			if err != nil || !strings.Contains(string(out), s.NICs[0].Addr.String()) {
				t.Fatalf("cycle %d: guest address: %s %v", i, out, err)
			}
		}
		// Delete.
		if i%3 == 2 || (real && i%2 == 0) {
			if killedAgent(t, kind, dir, nil, time.Duration(rng.Int64N(int64(maxKill)))) {
				kills++
			}
		}
		if _, err := compute.Reconcile(ctx, p, nil, testLog()); err != nil {
			t.Fatalf("cycle %d (%s): delete: %v", i, kind, err)
		}
		if l, err := p.List(ctx); err != nil || len(l) != 0 {
			t.Fatalf("cycle %d (%s): after delete the provider still lists %+v (%v)", i, kind, l, err)
		}
	}
	t.Logf("50 cycles; the agent was killed mid-work %d times", kills)

	// A tap whose qemu died without libvirtd's cleanup is swept by the next pass; a veth
	// guest port of the same shape is not the libvirt provider's to touch.
	tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "gvc7dead01"}, Mode: netlink.TUNTAP_MODE_TAP}
	if err := netlink.LinkAdd(tap); err != nil {
		t.Fatalf("leftover tap: %v", err)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "gvc7dead02"}, PeerName: "gvc7dead03"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("veth: %v", err)
	}
	t.Cleanup(func() { netlink.LinkDel(veth) })
	if _, err := compute.Reconcile(ctx, lp, nil, testLog()); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName("gvc7dead01"); err == nil {
		netlink.LinkDel(tap)
		t.Error("leftover tap gvc7dead01 not swept")
	}
	if _, err := netlink.LinkByName("gvc7dead02"); err != nil {
		t.Errorf("veth gvc7dead02 swept: %v", err)
	}
	if kills < 10 {
		t.Errorf("only %d kills landed before the agent finished; want at least 10", kills)
	}

	// Nothing leaked.
	doms, _, err := lp.l.ConnectListAllDomains(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range doms {
		if strings.HasPrefix(d.Name, prefix+"tc") {
			t.Errorf("leaked domain %s", d.Name)
		}
	}
	vols, err := lp.Volumes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		if strings.HasPrefix(v, prefix+"tc") || strings.HasPrefix(v, volPrefix+"tc") {
			t.Errorf("leaked volume %s", v)
		}
	}
	for _, n := range names {
		port := spec(n, cycleVLAN, "198.18.202.1/24", "52:54:00:00:00:01").NICs[0].Port
		if _, err := netlink.LinkByName(port); err == nil {
			t.Errorf("leaked tap/veth %s of %s", port, n)
		}
	}
	nss, _ := os.ReadDir("/run/netns")
	for _, f := range nss {
		if strings.HasPrefix(f.Name(), cycleNSPrefix) {
			t.Errorf("leaked namespace %s", f.Name())
		}
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*.json")); len(files) > 0 {
		t.Errorf("leaked state files %v", files)
	}
	if out, _ := exec.Command("pgrep", "-f", "httpd -f -p 80 -h "+dir).Output(); len(out) > 0 {
		t.Errorf("leaked guest servers: pids %s", out)
	}
}

// killedAgent runs a compute agent reconciling to want in a subprocess and SIGKILLs it after d.
// It reports whether the kill landed before the agent finished.
func killedAgent(t *testing.T, kind, dir string, want []compute.VMSpec, d time.Duration) bool {
	t.Helper()
	b, _ := json.Marshal(want)
	f := filepath.Join(dir, "want.spec")
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GC_COMPUTE_HELPER="+kind, "GC_COMPUTE_SPEC="+f, "GC_COMPUTE_STATE="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-time.After(d):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
		return true
	case err := <-done:
		if err != nil {
			t.Logf("agent finished before the kill: %v", err)
		}
		return false
	}
}
