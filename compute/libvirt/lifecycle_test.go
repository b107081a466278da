package libvirt

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/compute/guestimage"
)

// guestRun runs script in the tiny guest's shell, failing the test on an error or a non-zero
// exit.
func guestRun(t testing.TB, p *Provider, vm, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, rc, err := guestimage.Run(ctx, p.ShellSocket(vm), script)
	if err != nil || rc != 0 {
		t.Fatalf("vm %s: %q: rc %d, %v: %s (console: %q)", vm, script, rc, err, out, tail(p.ConsoleLog(vm)))
	}
	return strings.TrimSpace(out)
}

// waitShell waits until the guest's shell answers (it has booted).
func waitShell(t testing.TB, p *Provider, vm string) {
	t.Helper()
	waitFor(t, 90*time.Second, "guest shell of "+vm+" answers", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		out, rc, err := guestimage.Run(ctx, p.ShellSocket(vm), "echo up")
		if err != nil || rc != 0 || strings.TrimSpace(out) != "up" {
			return fmt.Errorf("rc %d, %v: %q (console: %q)", rc, err, out, tail(p.ConsoleLog(vm)))
		}
		return nil
	})
}

// writeBlocks writes 64 KiB of random data at 1 MiB into dev (synced to the disk) and returns
// its sha256; readBlocks returns the sha256 of the same range as the disk has it now.
func writeBlocks(t testing.TB, p *Provider, vm, dev string) string {
	t.Helper()
	return firstField(guestRun(t, p, vm, "dd if=/dev/urandom of=/tmp/blk bs=4096 count=16 2>/dev/null && "+
		"dd if=/tmp/blk of="+dev+" bs=4096 seek=256 count=16 conv=fsync 2>/dev/null && sync && sha256sum /tmp/blk"))
}

func readBlocks(t testing.TB, p *Provider, vm, dev string) string {
	t.Helper()
	return firstField(guestRun(t, p, vm, "echo 3 > /proc/sys/vm/drop_caches; dd if="+dev+" bs=4096 skip=256 count=16 2>/dev/null | sha256sum"))
}

func firstField(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return s
}

// domainInfo is a domain's state, vCPUs and maximum memory in MiB as libvirt has it.
func domainInfo(t testing.TB, p *Provider, vm string) (golibvirt.DomainState, int, int) {
	t.Helper()
	state, maxKiB, _, nrCPU, _, err := p.l.DomainGetInfo(mustDomain(t, p, vm))
	if err != nil {
		t.Fatalf("domain info of %s: %v", vm, err)
	}
	return golibvirt.DomainState(state), int(nrCPU), int(maxKiB >> 10)
}

// Stop, start, reboot (restartGeneration + 1), resize (vCPUs and memory) and a qemu killed
// behind the agent's back: after each, the data written on the root disk before is there
// (sha256), the domain has the spec's size, and the root disk is the same file.
func TestLifecycleKeepsDisks(t *testing.T) {
	p := requireLibvirt(t)
	ctx := context.Background()
	bridge(t, 3906)
	vm := spec("tlife", 3906, "198.18.206.10/24", "52:54:00:c7:06:10")
	t.Cleanup(func() { p.Delete(ctx, vm.Name) })
	ensure := func(step string, want compute.State) compute.VMStatus {
		t.Helper()
		start := time.Now()
		st, err := p.Ensure(ctx, vm)
		if err != nil || st.State != want {
			t.Fatalf("%s: ensure: %+v, %v: want state %s", step, st, err, want)
		}
		t.Logf("%s: ensure %v", step, time.Since(start).Round(time.Millisecond))
		return st
	}
	rootPath := func() string {
		v, err := p.l.StorageVolLookupByName(p.pool, p.rootName(vm.Name))
		if err != nil {
			t.Fatalf("root disk %s: %v", p.rootName(vm.Name), err)
		}
		path, _ := p.l.StorageVolGetPath(v)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%s:%d", path, inode(fi))
	}
	st := ensure("create", compute.Running)
	waitShell(t, p, vm.Name)
	sum := writeBlocks(t, p, vm.Name, "/dev/vda")
	if got := readBlocks(t, p, vm.Name, "/dev/vda"); got != sum || len(sum) != 64 {
		t.Fatalf("read back %q, wrote %q", got, sum)
	}
	root := rootPath()
	check := func(step string, vcpus, memMiB int) {
		t.Helper()
		waitShell(t, p, vm.Name)
		if got := readBlocks(t, p, vm.Name, "/dev/vda"); got != sum {
			t.Fatalf("%s: root disk data sha256 %s, want %s (written before)", step, got, sum)
		}
		if r := rootPath(); r != root {
			t.Fatalf("%s: root disk %s, want the same file %s", step, r, root)
		}
		state, n, mem := domainInfo(t, p, vm.Name)
		if state != golibvirt.DomainRunning || n != vcpus || mem != memMiB {
			t.Fatalf("%s: domain state %d, %d vCPUs, %d MiB; want running, %d, %d", step, state, n, mem, vcpus, memMiB)
		}
		if got := guestRun(t, p, vm.Name, "grep -c ^processor /proc/cpuinfo"); got != fmt.Sprint(vcpus) {
			t.Fatalf("%s: the guest sees %s CPUs, want %d", step, got, vcpus)
		}
	}

	// Stop: the domain stays defined, its disk stays, the agent lists it stopped.
	vm.PowerState = compute.PowerStopped
	ensure("stop", compute.Stopped)
	if state, _, _ := domainInfo(t, p, vm.Name); state != golibvirt.DomainShutoff {
		t.Fatalf("stopped domain state %d, want shutoff", state)
	}
	if l, err := p.List(ctx); err != nil || len(l) == 0 || l[0].Name != vm.Name || l[0].State != compute.Stopped {
		t.Fatalf("list after stop: %+v, %v: want %s stopped", l, err, vm.Name)
	}
	if _, err := compute.Reconcile(ctx, p, []compute.VMSpec{vm}, testLog()); err != nil {
		t.Fatalf("reconcile while stopped: %v", err)
	}
	ensure("stop again (no-op)", compute.Stopped)

	// Start.
	vm.PowerState = ""
	st2 := ensure("start", compute.Running)
	if st2.PID == 0 || st2.PID == st.PID {
		t.Fatalf("start: qemu pid %d -> %d, want a new qemu", st.PID, st2.PID)
	}
	check("start", 1, 128)

	// Reboot: restartGeneration raised restarts once.
	vm.RestartGeneration = 1
	st3 := ensure("reboot", compute.Running)
	if st3.PID == st2.PID {
		t.Fatalf("reboot: same qemu pid %d, want a restart", st3.PID)
	}
	check("reboot", 1, 128)
	if st4 := ensure("reboot again (no-op)", compute.Running); st4.PID != st3.PID {
		t.Fatalf("the same restartGeneration restarted the VM again: pid %d -> %d", st3.PID, st4.PID)
	}

	// Resize: a restart with the disks kept, never a new root disk.
	vm.VCPUs, vm.MemoryMiB = 2, 192
	st5 := ensure("resize", compute.Running)
	if st5.PID == st3.PID {
		t.Fatalf("resize: same qemu pid %d, want a restart", st5.PID)
	}
	check("resize", 2, 192)

	// Killed behind the agent's back: started again, not recreated.
	if err := p.l.DomainDestroy(mustDomain(t, p, vm.Name)); err != nil {
		t.Fatal(err)
	}
	ensure("found stopped", compute.Running)
	check("found stopped", 2, 192)

	// A stopped VM no longer wanted is deleted with its root disk.
	vm.PowerState = compute.PowerStopped
	ensure("stop before delete", compute.Stopped)
	if _, err := compute.Reconcile(ctx, p, nil, testLog()); err != nil {
		t.Fatalf("delete of the stopped vm: %v", err)
	}
	assertGone(t, p, vm.Name, vm.NICs[0].Port)
}

// Two hosts' agents on one storage pool (one libvirtd): neither lists, prunes or removes the
// other's volumes or VMs, and each names its files after itself.
func TestOwnVolumesOnly(t *testing.T) {
	requireLibvirt(t) // tools, libvirtd and the test pool
	ctx := context.Background()
	bridge(t, 3907)
	mk := func(host string) *Provider {
		p, err := New(ctx, Config{Pool: "gc-test-pool", StateDir: testStateDir, PoolPath: testStateDir + "/pool", Host: host})
		if err != nil {
			t.Fatalf("provider of %s: %v", host, err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	pa, pb := mk("town-a"), mk("town-b")
	// Both hosts have a volume of the same name, and host b a VM using it.
	if _, _, err := pa.volume(pa.dataName("tshared"), 64<<20, ""); err != nil {
		t.Fatal(err)
	}
	vm := spec("town", 3907, "198.18.207.10/24", "52:54:00:c7:07:10")
	vm.Volumes = []compute.VolumeSpec{{Name: "tshared", SizeGiB: 1}, {Name: "tonlyb", SizeGiB: 1}}
	t.Cleanup(func() {
		compute.Reconcile(ctx, pb, nil, testLog())
		compute.Reconcile(ctx, pa, nil, testLog())
	})
	if st, err := compute.Reconcile(ctx, pb, []compute.VMSpec{vm}, testLog()); err != nil || st[0].State != compute.Running {
		t.Fatalf("host b: vm %s: %+v, %v", vm.Name, st, err)
	}
	listed := func(p *Provider) string {
		v, err := p.Volumes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(v, " ")
	}
	if got, want := listed(pa), "gc-vol-tshared@town-a.qcow2"; !strings.Contains(got, want) || strings.Contains(got, "@town-b") {
		t.Fatalf("host a lists %q: want its own %s and nothing of town-b", got, want)
	}
	for _, want := range []string{"gc-town-root@town-b.qcow2", "gc-vol-tshared@town-b.qcow2", "gc-vol-tonlyb@town-b.qcow2"} {
		if got := listed(pb); !strings.Contains(got, want) || strings.Contains(got, "@town-a") {
			t.Fatalf("host b lists %q: want %s and nothing of town-a", got, want)
		}
	}
	// Host a wants nothing: it removes its own volume, and nothing of host b.
	if _, err := compute.Reconcile(ctx, pa, nil, testLog()); err != nil {
		t.Fatal(err)
	}
	if l, _ := pa.List(ctx); len(l) != 0 {
		t.Fatalf("host a lists VMs %+v: want none (town is host b's)", l)
	}
	if got := listed(pa); strings.Contains(got, "tshared") {
		t.Fatalf("host a kept its unwanted volume: %q", got)
	}
	for _, want := range []string{"gc-town-root@town-b.qcow2", "gc-vol-tshared@town-b.qcow2", "gc-vol-tonlyb@town-b.qcow2"} {
		if got := listed(pb); !strings.Contains(got, want) {
			t.Fatalf("host a's pass deleted host b's %s: b lists %q", want, got)
		}
	}
	if st, err := pb.Ensure(ctx, vm); err != nil || st.State != compute.Running {
		t.Fatalf("host b's vm after host a's pass: %+v, %v", st, err)
	}
	// Host a's RemoveAll (the lab's down) leaves host b's VM, volumes and the pool.
	if err := pa.RemoveAll(ctx); err != nil {
		t.Fatalf("host a remove all: %v", err)
	}
	if got := listed(pb); !strings.Contains(got, "gc-vol-tonlyb@town-b.qcow2") {
		t.Fatalf("host a's RemoveAll deleted host b's volumes: b lists %q", got)
	}
	if st, err := pb.Ensure(ctx, vm); err != nil || st.State != compute.Running {
		t.Fatalf("host b's vm after host a's RemoveAll: %+v, %v", st, err)
	}
	// Host b's own prune of a detached volume removes only that one.
	if err := pb.PruneVolumes(ctx, map[string]bool{"tonlyb": true}); err != nil {
		t.Fatal(err)
	}
	if got := listed(pb); strings.Contains(got, "tshared") || !strings.Contains(got, "tonlyb") {
		t.Fatalf("host b after pruning tshared: %q", got)
	}
}

// A file written on a volume survives its detach, its VM's delete and an attach to a new VM;
// the Volume's delete removes it. The agent keeps what the host's desired volumes list
// (ReconcileKeeping, as Agent.Pass does). Another host's agent on the same pool never sees
// the volume (its file is this host's): that is why the controller refuses a VM on another
// host using it (controlplane/plan TestVolumeStaysOnItsHost).
func TestVolumeSurvivesDetachAndVMDelete(t *testing.T) {
	requireLibvirt(t)
	ctx := context.Background()
	bridge(t, 3908)
	p, err := New(ctx, Config{Pool: "gc-test-pool", StateDir: testStateDir, PoolPath: testStateDir + "/pool", Host: "tvol-a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	other, err := New(ctx, Config{Pool: "gc-test-pool", StateDir: testStateDir, PoolPath: testStateDir + "/pool", Host: "tvol-b"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	t.Cleanup(func() { compute.Reconcile(ctx, p, nil, testLog()) })
	keep := []string{"tdata"}
	pass := func(step string, want ...compute.VMSpec) {
		t.Helper()
		st, err := compute.ReconcileKeeping(ctx, p, want, keep, testLog())
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		for _, s := range st {
			if s.State != compute.Running {
				t.Fatalf("%s: %+v", step, s)
			}
		}
	}
	hasVolume := func() bool {
		_, err := p.l.StorageVolLookupByName(p.pool, p.dataName("tdata"))
		return err == nil
	}
	v1 := spec("tvol1", 3908, "198.18.208.10/24", "52:54:00:c7:08:10")
	v1.Volumes = []compute.VolumeSpec{{Name: "tdata", SizeGiB: 1}}
	pass("create", v1)
	waitShell(t, p, v1.Name)
	sum := writeBlocks(t, p, v1.Name, "/dev/vdb")

	// Detach: VM restarted without it, the volume stays.
	v1.Volumes = nil
	pass("detach", v1)
	if !hasVolume() {
		t.Fatal("detached volume deleted")
	}
	waitShell(t, p, v1.Name)
	if out := guestRun(t, p, v1.Name, "ls /dev/vdb 2>&1 || true"); !strings.Contains(out, "No such file") {
		t.Fatalf("detached volume still in the guest: %q", out)
	}
	// The VM deleted: the volume stays.
	pass("delete vm")
	if !hasVolume() {
		t.Fatal("volume deleted with its VM")
	}
	if l, _ := p.List(ctx); len(l) != 0 {
		t.Fatalf("VMs left: %+v", l)
	}
	// Another host on the same pool does not have it.
	if vols, _ := other.Volumes(ctx); strings.Contains(strings.Join(vols, " "), "tdata") {
		t.Fatalf("host tvol-b sees host tvol-a's volume: %v", vols)
	}
	// Attached to a new VM: the data is there.
	v2 := spec("tvol2", 3908, "198.18.208.11/24", "52:54:00:c7:08:11")
	v2.Volumes = []compute.VolumeSpec{{Name: "tdata", SizeGiB: 1}}
	pass("attach to a new vm", v2)
	waitShell(t, p, v2.Name)
	if got := readBlocks(t, p, v2.Name, "/dev/vdb"); got != sum {
		t.Fatalf("volume data sha256 on the new VM %s, want %s (written on %s)", got, sum, v1.Name)
	}
	// The Volume deleted (gone from the host's desired volumes) with its VM: the file goes.
	keep = nil
	pass("delete vm and volume")
	if hasVolume() {
		t.Fatal("volume survives its delete")
	}
}

func inode(fi os.FileInfo) uint64 {
	if fi == nil {
		return 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// Volume files made before files carried their host (gc-vol-NAME.qcow2, gc-VM-root.qcow2) are
// adopted (renamed, the same file) by the host whose VM uses them, not replaced by empty ones.
func TestLegacyVolumesAdopted(t *testing.T) {
	requireLibvirt(t)
	ctx := context.Background()
	bridge(t, 3909)
	p, err := New(ctx, Config{Pool: "gc-test-pool", StateDir: testStateDir, PoolPath: testStateDir + "/pool", Host: "tleg-h"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	vm := spec("tleg", 3909, "198.18.209.10/24", "52:54:00:c7:09:10")
	vm.Volumes = []compute.VolumeSpec{{Name: "tlegd", SizeGiB: 1}}
	t.Cleanup(func() { compute.Reconcile(ctx, p, nil, testLog()) })
	inodes := map[string]uint64{}
	for _, n := range [][2]string{{"gc-tleg-root.qcow2", p.base}, {"gc-vol-tlegd.qcow2", ""}} {
		v, _, err := p.volume(n[0], 64<<20, n[1])
		if err != nil {
			t.Fatal(err)
		}
		path, _ := p.l.StorageVolGetPath(v)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		inodes[n[0]] = inode(fi)
	}
	if st, err := p.Ensure(ctx, vm); err != nil || st.State != compute.Running {
		t.Fatalf("ensure: %+v, %v", st, err)
	}
	for legacy, now := range map[string]string{"gc-tleg-root.qcow2": p.rootName(vm.Name), "gc-vol-tlegd.qcow2": p.dataName("tlegd")} {
		if _, err := os.Stat(filepath.Join(testStateDir, "pool", legacy)); err == nil {
			t.Errorf("%s still there", legacy)
		}
		fi, err := os.Stat(filepath.Join(testStateDir, "pool", now))
		if err != nil || inode(fi) != inodes[legacy] {
			t.Errorf("%s: %v, inode %d; want the file of %s (inode %d)", now, err, inode(fi), legacy, inodes[legacy])
		}
	}
}
