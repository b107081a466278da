package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/govcloud/govcloud/compute/libvirt"
	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/metering"
)

const extraVMYAML = `apiVersion: govcloud/v1
kind: Volume
metadata: {name: lands-data}
spec: {department: lands, sizeGiB: 1}
---
apiVersion: govcloud/v1
kind: VM
metadata: {name: lands-web-3}
spec: {department: lands, vcpus: 1, memoryMiB: 128, image: tiny, volumes: [lands-data], networks: [{segment: lands-web}], host: gc-host2}
---
apiVersion: govcloud/v1
kind: Service
metadata: {name: lands-api}
spec:
  department: lands
  ports: [{port: 80, protocol: tcp}]
  backends: [{vm: lands-web-1}, {vm: lands-web-3}]
  healthCheck: {type: http, path: /, interval: 1s, healthyThreshold: 2, unhealthyThreshold: 2}
  mode: dsr
`

// TestLabVMs runs the lab with real VMs (libvirt, qemu under TCG): 'lab up --vms' and 'lab
// verify' (every probe runs inside the VMs, through their serial shells), then through
// 'govcloud apply' a new VM on gc-host2 and a new service whose backends are that VM and a
// running one: the new VM boots, reaches its segment's VM on the other host, reaches no other
// department, and both serve the new VIP; the running VM takes the VIP without a restart.
// Data written in the new VM to its volume is backed up while the VM runs ('govcloud volume
// backup': libvirt's backup API, crash-consistent); the VM and the volume are deleted, and a
// Volume restored from the backup (spec.restoreFrom) is attached to a new VM on the other
// host: the data reads back with the same sha256. Deleting the VMs removes their domains and
// links; 'lab down' leaves no domain, pool, link, namespace or process of the lab. Every VM
// boot of the suite happens here, once.
func TestLabVMs(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra", "curl", "ethtool", "ping",
		"libvirtd", "virtlogd", "qemu-system-x86_64", "busybox")
	if len(labNamespaces()) > 0 {
		t.Fatalf("a lab is already running here (%v): 'sudo make demo-down' first", labNamespaces())
	}
	// qemu (user libvirt-qemu) must reach the lab's disks: not under the test's 0700 TempDir.
	parent, err := os.MkdirTemp("/var/lib", "govcloud-labtest-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	dir := filepath.Join(parent, "lab")
	bin, run := labCLI(t, dir)
	if _, err := run("up", "--vms"); err != nil {
		t.Fatalf("lab up --vms: %v", err)
	}
	if _, err := run("verify"); err != nil {
		t.Fatalf("lab verify: %v", err)
	}

	ctx := context.Background()
	l, admin := openLab(t, bin, dir)
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "GOVCLOUD_API="+API, "GOVCLOUD_TOKEN="+admin, "GOVCLOUD_CA="+filepath.Join(dir, "controller", "ca.crt"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("govcloud %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// Each compute agent's report reaches the controller beside the network agent's.
	if out := cli("status"); strings.Count(out, "compute: 2 VM(s), 2 running") != 2 || strings.Count(out, ": ready (") != 2 {
		t.Fatalf("govcloud status: want both hosts ready, each with 2 running VMs:\n%s", out)
	}
	computeBilled(t, l, admin, "lands-web-1")
	vmIPv6(t, l, admin)
	qemuPID := func(vm string) string {
		b, _ := os.ReadFile("/run/libvirt/qemu/gc-" + vm + ".pid")
		return strings.TrimSpace(string(b))
	}
	pid1 := qemuPID("lands-web-1")
	if pid1 == "" {
		t.Fatal("lands-web-1 has no qemu process")
	}

	f := filepath.Join(t.TempDir(), "extra.yaml")
	if err := os.WriteFile(f, []byte(extraVMYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	cli("apply", "-f", f)
	states := map[string]*desired.State{}
	for _, h := range defaultHosts {
		if states[h], err = l.client(admin).Desired(ctx, h, 0, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	addr := map[string]string{}
	for _, g := range guests(states) {
		addr[g.vm] = g.addr
	}
	if addr["lands-web-3"] == "" {
		t.Fatalf("lands-web-3 has no address in gc-host2's desired state: %v", addr)
	}
	vips, err := l.vips(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	var api string
	for _, v := range vips {
		if v.Service == "lands-api" {
			api = v.VIP
		}
	}
	if api == "" {
		t.Fatalf("lands-api has no VIP: %v", vips)
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
				t.Fatalf("%s within %v: %v", what, d, err)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	eventually("lands-web-3 answers lands-web-1 over its segment (across hosts)", 90*time.Second, func() error {
		body, err := l.guestHTTP("lands-web-3", addr["lands-web-1"])
		if err != nil {
			return err
		}
		if strings.TrimSpace(body) != "lands-web-1" {
			return fmt.Errorf("body %q", body)
		}
		return l.guestPing("lands-web-1", addr["lands-web-3"], 1)
	})
	for _, other := range []string{"health-web-1", "health-web-2"} {
		if err := l.guestPing("lands-web-3", addr[other], 1); err == nil {
			t.Fatalf("lands-web-3 pings %s of department health", other)
		}
		if _, err := l.guestHTTP("lands-web-3", addr[other]); err == nil {
			t.Fatalf("lands-web-3 reaches %s of department health over TCP", other)
		}
	}
	eventually("lands-api's VIP answers from both of its VMs", 60*time.Second, func() error {
		seen := map[string]bool{}
		for i := 0; i < 30 && len(seen) < 2; i++ {
			body, err := curl(api)
			if err != nil {
				return err
			}
			seen[body] = true
		}
		if !seen["lands-web-1"] || !seen["lands-web-3"] || len(seen) != 2 {
			return fmt.Errorf("answers from %v, want lands-web-1 and lands-web-3", seen)
		}
		return nil
	})
	if got := qemuPID("lands-web-1"); got != pid1 {
		t.Fatalf("lands-web-1 was restarted to take the new VIP (qemu pid %s -> %s)", pid1, got)
	}

	backupID, sum := backupVolumeInVM(t, l, bin, dir, "lands-web-3", "lands-data")

	// Delete the VM and its service: the domain and the links made for its NIC go.
	cli("delete", "services", "lands-api")
	cli("delete", "vms", "lands-web-3")
	eventually("lands-web-3 removed", 30*time.Second, func() error {
		if qemuPID("lands-web-3") != "" {
			return fmt.Errorf("qemu of lands-web-3 still runs")
		}
		if n := labLinks(); len(n) != 4*3 { // four VMs: tap, bridge and veth each
			return fmt.Errorf("links of VM NICs in the machine's namespace: %v, want those of 4 VMs", n)
		}
		return nil
	})
	restoreVolumeInVM(t, l, cli, eventually, backupID, sum)

	if _, err := run("down"); err != nil {
		t.Fatalf("lab down: %v", err)
	}
	if ns := labNamespaces(); len(ns) > 0 {
		t.Fatalf("after down: namespaces left: %v", ns)
	}
	for _, pat := range []string{bin, dir} { // govcloud, FRR and qemu (its disks and logs are in dir)
		if out, _ := exec.Command("pgrep", "-af", pat).Output(); len(strings.TrimSpace(string(out))) > 0 {
			t.Fatalf("after down: lab processes left (%s): %s", pat, out)
		}
	}
	if n := labLinks(); len(n) > 0 {
		t.Fatalf("after down: links of lab VMs left: %v", n)
	}
	out, _ := exec.Command("virsh", "-c", "qemu:///system", "list", "--all", "--name").Output()
	for _, vm := range []string{"lands-web-1", "lands-web-2", "health-web-1", "health-web-2"} {
		if strings.Contains(string(out), "gc-"+vm+"\n") {
			t.Fatalf("after down: domain gc-%s left", vm)
		}
	}
	if out, _ := exec.Command("virsh", "-c", "qemu:///system", "pool-list", "--all", "--name").Output(); strings.Contains(string(out), "gc-lab-") {
		t.Fatalf("after down: storage pools left: %s", out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("after down: %s still exists", dir)
	}
}

// labLinks lists the machine-namespace links made for the lab's VM NICs: the bridges tagged
// with a lab host (libvirt.Config.LibvirtNetns) and what is enslaved to them (taps and veths).
func labLinks() []string {
	links, _ := netlink.LinkList()
	bridges := map[int]bool{}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Alias, "govcloud:gc-host") {
			bridges[l.Attrs().Index] = true
		}
	}
	var out []string
	for _, l := range links {
		if bridges[l.Attrs().Index] || bridges[l.Attrs().MasterIndex] {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// guestBlock is the part of a guest's data volume (/dev/vdb) the volume checks write and read:
// the tiny guest has no filesystem modules, so the data is the block device's first MiB.
const guestBlock = "dd if=/dev/vdb bs=65536 count=16 2>/dev/null | sha256sum"

// backupVolumeInVM writes random data to the data volume of vm from inside the guest and backs
// the volume up while the VM runs, through the CLI on the volume's host. It returns the
// backup's id and the data's sha256.
func backupVolumeInVM(t *testing.T, l *Lab, bin, dir, vm, volume string) (string, string) {
	t.Helper()
	out, err := l.inGuest(vm, "dd if=/dev/urandom of=/dev/vdb bs=65536 count=16 conv=fsync 2>/dev/null && sync && "+guestBlock)
	if err != nil {
		t.Fatalf("writing to %s's volume in the guest: %v", vm, err)
	}
	sum, _, _ := strings.Cut(strings.TrimSpace(out), " ")
	if len(sum) != 64 {
		t.Fatalf("sha256 of %s's volume data: %q", vm, out)
	}
	host := "gc-host2"
	cmd := exec.Command(bin, "volume", "backup", volume, "--to", l.volumeBackupDir(), "--host", host, "--pool", labPool(host))
	b, err := cmd.CombinedOutput()
	t.Logf("govcloud volume backup %s:\n%s", volume, b)
	if err != nil {
		t.Fatalf("volume backup %s: %v", volume, err)
	}
	if !strings.Contains(string(b), "crash-consistent") || !strings.Contains(string(b), "libvirt backup") {
		t.Fatalf("volume backup of a running VM's volume: want a crash-consistent copy through libvirt's backup API:\n%s", b)
	}
	bs, err := libvirt.ListVolumeBackups(l.volumeBackupDir())
	if err != nil || len(bs) != 1 || bs[0].Volume != volume {
		t.Fatalf("volume backups: %v %+v, want one of %s", err, bs, volume)
	}
	list, err := exec.Command(bin, "volume", "backups", "--dir", l.volumeBackupDir()).CombinedOutput()
	if err != nil || !strings.Contains(string(list), bs[0].ID) {
		t.Fatalf("govcloud volume backups: %v\n%s", err, list)
	}
	return bs[0].ID, sum
}

const restoredVMYAML = `apiVersion: govcloud/v1
kind: Volume
metadata: {name: lands-data-2}
spec: {department: lands, sizeGiB: 1, restoreFrom: %s}
---
apiVersion: govcloud/v1
kind: VM
metadata: {name: lands-web-4}
spec: {department: lands, vcpus: 1, memoryMiB: 128, image: tiny, volumes: [lands-data-2], networks: [{segment: lands-web}], host: gc-host1}
`

// restoreVolumeInVM deletes the backed-up volume, makes a new one from the backup attached to
// a new VM on the other host, and expects the guest to read the same data; then removes both.
func restoreVolumeInVM(t *testing.T, l *Lab, cli func(args ...string) string, eventually func(string, time.Duration, func() error), id, sum string) {
	t.Helper()
	cli("delete", "volumes", "lands-data")
	eventually("lands-data removed from gc-host2's pool", 30*time.Second, func() error {
		out, _ := exec.Command("virsh", "-c", "qemu:///system", "vol-list", labPool("gc-host2")).Output()
		if strings.Contains(string(out), "gc-vol-lands-data") {
			return fmt.Errorf("pool still holds it:\n%s", out)
		}
		return nil
	})
	f := filepath.Join(t.TempDir(), "restored.yaml")
	if err := os.WriteFile(f, []byte(fmt.Sprintf(restoredVMYAML, id)), 0o644); err != nil {
		t.Fatal(err)
	}
	cli("apply", "-f", f)
	eventually("lands-web-4 reads the restored volume's data", 120*time.Second, func() error {
		out, err := l.inGuest("lands-web-4", guestBlock)
		if err != nil {
			return err
		}
		if got, _, _ := strings.Cut(strings.TrimSpace(out), " "); got != sum {
			return fmt.Errorf("sha256 %s, written %s", got, sum)
		}
		return nil
	})
	t.Logf("lands-web-4 reads sha256 %s from lands-data-2, restored on gc-host1 from backup %s of lands-data (gc-host2)", sum, id)
	cli("delete", "vms", "lands-web-4")
	cli("delete", "volumes", "lands-data-2")
	eventually("lands-web-4 and its volume removed", 30*time.Second, func() error {
		if n := labLinks(); len(n) != 4*3 {
			return fmt.Errorf("links of VM NICs in the machine's namespace: %v, want those of 4 VMs", n)
		}
		out, _ := exec.Command("virsh", "-c", "qemu:///system", "vol-list", labPool("gc-host1")).Output()
		if strings.Contains(string(out), "gc-vol-lands-data-2") {
			return fmt.Errorf("gc-host1's pool still holds gc-vol-lands-data-2")
		}
		return nil
	})
}

// libvirtCPU is a domain's CPU time in seconds (virsh domstats cpu.time, nanoseconds).
func libvirtCPU(t *testing.T, vm string) float64 {
	t.Helper()
	out, err := exec.Command("virsh", "-c", "qemu:///system", "domstats", "--cpu-total", "gc-"+vm).Output()
	if err != nil {
		t.Fatalf("virsh domstats gc-%s: %v", vm, err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "cpu.time="); ok {
			var ns float64
			if _, err := fmt.Sscan(v, &ns); err == nil {
				return ns / 1e9
			}
		}
	}
	t.Fatalf("virsh domstats gc-%s: no cpu.time in %q", vm, out)
	return 0
}

// computeBilled: the compute agent's reports reach the ledger, and the vcpu_seconds billed
// for vm equal libvirt's CPU time for it when the report was read (within 1%, and the
// ledger's whole second): libvirt is read before each poll of the bill and after it, so a
// report that arrives between two polls was read between those readings.
func computeBilled(t *testing.T, l *Lab, admin, vm string) {
	t.Helper()
	c := l.client(admin)
	mc := &metering.Client{Base: c.Base, Token: admin, HTTP: c.HTTP}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var host string
	last := time.Time{}
	billedNow := func() (metering.Bill, time.Time) {
		b, err := mc.BillWith(ctx, metering.Month(time.Now()), metering.BillOptions{Department: "lands", By: "vm"})
		if err != nil {
			t.Fatal(err)
		}
		var at time.Time
		for _, r := range b.MeteredUpTo {
			if r.Source == metering.SourceCompute && (host == "" || r.Host == host) && r.Time.After(at) {
				at = r.Time
			}
		}
		return b, at
	}
	_, last = billedNow()
	before := libvirtCPU(t, vm) // read before the poll that came before this one: the report arrived after it
	for fresh := 0; fresh < 2; {
		next := libvirtCPU(t, vm)
		b, at := billedNow()
		after := libvirtCPU(t, vm)
		if ctx.Err() != nil {
			t.Fatalf("no compute report reached the ledger within 3 minutes (last %s)", last)
		}
		if !at.After(last) {
			before = next
			time.Sleep(500 * time.Millisecond)
			continue
		}
		last = at
		fresh++ // the first fresh report may have been read before the first reading
		if fresh < 2 {
			before = next
			continue
		}
		var got uint64
		for _, ln := range b.Lines {
			if ln.Resource == metering.ResVCPUSeconds && ln.Item == vm {
				got += ln.BaseQuantity
			}
		}
		if got == 0 {
			t.Fatalf("no vcpu_seconds billed for %s: %+v", vm, b.Lines)
		}
		lo, hi := before*0.99-1, after*1.01
		if float64(got) < lo || float64(got) > hi {
			t.Fatalf("%s: %d vCPU-seconds billed, libvirt says %.2f..%.2f around the report (1%% and the ledger's whole second: %.2f..%.2f)", vm, got, before, after, lo, hi)
		}
		t.Logf("%s: %d vCPU-seconds billed, libvirt %.2f..%.2f", vm, got, before, after)
	}
}
