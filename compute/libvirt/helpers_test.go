package libvirt

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/govcloud/govcloud/agent"
	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/compute/netns"
	"github.com/govcloud/govcloud/dataplane/netdev"
	"github.com/govcloud/govcloud/dataplane/netnstest"
)

// Test objects live in the root namespace (libvirtd makes taps there), under names of their own:
// bridge gcbr39xx, domains and volumes gc-t*, namespaces gc-vm-t*, pool gc-test-pool.
const testStateDir = "/var/lib/govcloud/compute-test"

func requireLibvirt(t testing.TB) *Provider {
	t.Helper()
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "libvirtd", "virtlogd", "qemu-system-x86_64", "qemu-img", "busybox", "curl")
	if _, err := os.Stat("/usr/bin/qemu-system-x86_64"); err != nil {
		t.Fatalf("qemu-system-x86_64: %v (install qemu-system-x86)", err)
	}
	ctx := context.Background()
	if err := StartDaemon(ctx, ""); err != nil {
		t.Fatalf("libvirtd: %v", err)
	}
	p, err := New(ctx, Config{Pool: "gc-test-pool", StateDir: testStateDir, PoolPath: testStateDir + "/pool"})
	if err != nil {
		t.Fatalf("libvirt provider: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// bridge makes the segment bridge of vlan in the root namespace, removed at cleanup.
func bridge(t testing.TB, vlan int) string {
	t.Helper()
	name := netdev.BridgeName(uint16(vlan))
	if l, err := netlink.LinkByName(name); err == nil {
		_ = netlink.LinkDel(l)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatalf("bridge %s: %v", name, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		t.Fatalf("bridge %s up: %v", name, err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	return name
}

func spec(name string, vlan int, addr string, mac string) compute.VMSpec {
	s := compute.VMSpec{Name: name, Department: "lands", VCPUs: 1, MemoryMiB: 128}
	hw, _ := net.ParseMAC(mac)
	p := netip.MustParsePrefix(addr)
	s.NICs = []compute.NIC{{
		Segment: "seg", VLAN: vlan, MAC: hw, Addr: p,
		Gateway: p.Masked().Addr().Next(),
		Bridge:  netdev.BridgeName(uint16(vlan)), Port: agent.GuestPort(name, "seg"),
	}}
	return s
}

func netnsProvider(t testing.TB) *netns.Provider {
	t.Helper()
	dir := t.TempDir()
	p, err := netns.New(netns.Config{StateDir: dir, HTTPCommand: netns.BusyboxHTTP(dir), Prefix: "gct-vm-"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// get fetches url from inside namespace ns with busybox wget.
func get(ns, url string) (string, error) {
	out, err := exec.Command("ip", "netns", "exec", ns, "curl", "-sS", "--max-time", "2", url).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func waitFor(t testing.TB, d time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = fn(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s within %v: %v", what, d, err)
}

func sh(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func testLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
