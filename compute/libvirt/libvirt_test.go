package libvirt

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/vishvananda/netlink"

	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/compute/guestimage"
)

// A VM made through the provider boots under qemu (TCG), takes the controller's address and MAC
// from the kernel command line and answers HTTP with its name to a neighbour guest on the same
// segment bridge; Ensure again changes nothing; Delete leaves no domain, volume, tap or log.
func TestVMBootsAndAnswersNeighbour(t *testing.T) {
	p := requireLibvirt(t)
	ctx := context.Background()
	br := bridge(t, 3901)
	np := netnsProvider(t)

	peer := spec("tpeer", 3901, "198.18.201.20/24", "02:00:00:c7:00:20")
	if _, err := np.Ensure(ctx, peer); err != nil {
		t.Fatalf("neighbour guest: %v", err)
	}
	t.Cleanup(func() { np.Delete(ctx, peer.Name) })

	// An image this host does not have is refused before anything is made.
	other := spec("tvm0", 3901, "198.18.201.9/24", "52:54:00:c7:00:09")
	other.Image = "debian-12"
	if _, err := p.Ensure(ctx, other); err == nil || !strings.Contains(err.Error(), `image "debian-12"`) {
		t.Fatalf("ensure with image debian-12: %v, want a refusal naming the image", err)
	}
	assertGone(t, p, other.Name, other.NICs[0].Port)

	vm := spec("tvm1", 3901, "198.18.201.10/24", "52:54:00:c7:00:10")
	vm.Volumes = []compute.VolumeSpec{{Name: "tvd1", SizeGiB: 1}}
	vm.Serves = []netip.Addr{netip.MustParseAddr("198.19.254.1")}
	t.Cleanup(func() { p.Delete(ctx, vm.Name); p.PruneVolumes(ctx, nil) })
	start := time.Now()
	st, err := p.Ensure(ctx, vm)
	if err != nil {
		t.Fatalf("ensure %s: %v", vm.Name, err)
	}
	t.Logf("ensure took %v; status %+v", time.Since(start), st)
	if st.State != "running" || st.PID == 0 || len(st.Addresses) != 1 || st.Addresses[0] != "198.18.201.10" {
		t.Fatalf("status %+v: want running with a qemu pid and address 198.18.201.10", st)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", st.PID)); err != nil {
		t.Fatalf("qemu pid %d: %v", st.PID, err)
	}
	// The guest's root shell is reachable by root only.
	if fi, err := os.Stat(p.ShellSocket(vm.Name)); err != nil {
		t.Errorf("shell socket: %v", err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("shell socket %s: mode %v, want 0600", p.ShellSocket(vm.Name), fi.Mode().Perm())
	}
	tap, err := netlink.LinkByName(vm.NICs[0].Port)
	if err != nil {
		t.Fatalf("tap %s: %v", vm.NICs[0].Port, err)
	}
	brl, _ := netlink.LinkByName(br)
	if tap.Attrs().MasterIndex != brl.Attrs().Index {
		t.Fatalf("tap %s master index %d, want bridge %s (%d)", tap.Attrs().Name, tap.Attrs().MasterIndex, br, brl.Attrs().Index)
	}

	waitFor(t, 90*time.Second, "vm answers HTTP from the neighbour", func() error {
		body, err := get(np.NamespaceName(peer.Name), "http://198.18.201.10/")
		if err != nil {
			return fmt.Errorf("%v: %s (console: %q)", err, body, tail(p.ConsoleLog(vm.Name)))
		}
		if body != "tvm1" {
			return fmt.Errorf("body %q, want tvm1", body)
		}
		return nil
	})
	t.Logf("answering %v after ensure", time.Since(start))
	// The guest's MAC is the controller's: the neighbour learned it.
	neigh, err := sh("ip", "netns", "exec", np.NamespaceName(peer.Name), "ip", "neigh", "show", "198.18.201.10")
	if err != nil || !strings.Contains(neigh, "52:54:00:c7:00:10") {
		t.Fatalf("neighbour entry of the vm: %q (%v), want MAC 52:54:00:c7:00:10", neigh, err)
	}

	st2, err := p.Ensure(ctx, vm)
	if err != nil || st2.PID != st.PID {
		t.Fatalf("second ensure: pid %d -> %d, err %v: want the same qemu", st.PID, st2.PID, err)
	}

	// The dsr VIPs from the command line are on the guest's lo; a change reaches the running
	// guest through its shell, without replacing it.
	lo := func() string {
		out, rc, err := guestimage.Run(ctx, p.ShellSocket(vm.Name), "ip addr show dev lo")
		if err != nil || rc != 0 {
			t.Fatalf("guest shell: rc %d, %v: %s", rc, err, out)
		}
		return out
	}
	if got := lo(); !strings.Contains(got, "198.19.254.1/32") {
		t.Fatalf("guest lo %q: want the VIP 198.19.254.1/32 from the command line", got)
	}
	vm.Serves = []netip.Addr{netip.MustParseAddr("198.19.254.2")}
	if st3, err := p.Ensure(ctx, vm); err != nil || st3.PID != st.PID {
		t.Fatalf("ensure with another VIP: pid %d -> %d, err %v: want the same qemu", st.PID, st3.PID, err)
	}
	if got := lo(); !strings.Contains(got, "198.19.254.2/32") || strings.Contains(got, "198.19.254.1/32") {
		t.Fatalf("guest lo %q after the change: want 198.19.254.2/32 only", got)
	}
	if m, _ := p.meta(mustDomain(t, p, vm.Name)); m.Serves != "198.19.254.2" {
		t.Fatalf("metadata serves %q, want 198.19.254.2", m.Serves)
	}
	us, err := p.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, u := range us {
		if u.VM == vm.Name {
			found = true
			var want uint64
			var wantVols []compute.VolumeUsage
			for _, n := range [][2]string{{compute.RootVolume(vm.Name), p.rootName(vm.Name)}, {"tvd1", p.dataName("tvd1")}} {
				v, err := p.l.StorageVolLookupByName(p.pool, n[1])
				if err != nil {
					t.Fatalf("volume %s: %v", n[1], err)
				}
				_, _, alloc, _ := p.l.StorageVolGetInfo(v)
				want += alloc
				wantVols = append(wantVols, compute.VolumeUsage{Name: n[0], AllocatedBytes: alloc})
			}
			slices.SortFunc(wantVols, func(a, b compute.VolumeUsage) int { return strings.Compare(a.Name, b.Name) })
			if !slices.Equal(u.Volumes, wantVols) {
				t.Errorf("per-volume usage %+v, want %+v", u.Volumes, wantVols)
			}
			if u.VCPUSeconds <= 0 || u.MemoryBytes != 128<<20 || u.Department != "lands" || u.VolumeBytes != want {
				t.Fatalf("usage %+v: want cpu time > 0, 128 MiB, department lands, %d volume bytes (root + data)", u, want)
			}
		}
	}
	if !found {
		t.Fatalf("usage %+v has no %s", us, vm.Name)
	}

	x, _ := p.l.DomainGetXMLDesc(mustDomain(t, p, vm.Name), 0)
	if !strings.Contains(x, p.dataName("tvd1")) || !strings.Contains(x, "<target dev='vdb' bus='virtio'/>") {
		t.Fatalf("domain XML has no data volume as vdb:\n%s", x)
	}

	if err := p.Delete(ctx, vm.Name); err != nil {
		t.Fatalf("delete: %v", err)
	}
	assertGone(t, p, vm.Name, vm.NICs[0].Port)
	// The data volume outlives the VM until the controller drops it.
	if _, err := p.l.StorageVolLookupByName(p.pool, p.dataName("tvd1")); err != nil {
		t.Fatalf("data volume deleted with the VM: %v", err)
	}
	if err := p.PruneVolumes(ctx, map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.l.StorageVolLookupByName(p.pool, p.dataName("tvd1")); err == nil {
		t.Fatal("data volume survives PruneVolumes")
	}
}

func mustDomain(t testing.TB, p *Provider, vm string) golibvirt.Domain {
	d, err := p.l.DomainLookupByName(domName(vm))
	if err != nil {
		t.Fatalf("domain of %s: %v", vm, err)
	}
	return d
}

func tail(s string) string {
	if len(s) > 300 {
		return s[len(s)-300:]
	}
	return s
}

func assertGone(t testing.TB, p *Provider, vm, port string) {
	t.Helper()
	if _, err := p.l.DomainLookupByName(domName(vm)); err == nil {
		t.Errorf("domain %s still exists", domName(vm))
	}
	if _, err := p.l.StorageVolLookupByName(p.pool, p.rootName(vm)); err == nil {
		t.Errorf("volume %s still exists", p.rootName(vm))
	}
	if _, err := netlink.LinkByName(port); err == nil {
		t.Errorf("tap %s still exists", port)
	}
	if _, err := os.Stat(p.consoleLog(vm)); err == nil {
		t.Errorf("console log of %s still exists", vm)
	}
}
