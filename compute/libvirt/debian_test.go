package libvirt

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/compute/imagestore"
	"github.com/govcloud/govcloud/dataplane/netnstest"
)

// debianImage returns the image store holding debian-12.qcow2 and the image's sha256, building
// the image with scripts/build-debian-image.sh ('make image-debian') when it is missing or its
// recipe changed: the first run on a machine takes minutes, later ones find it cached. The test
// is skipped only when debootstrap, which builds it, is not installed.
func debianImage(t testing.TB) (store, sum string) {
	t.Helper()
	store = os.Getenv("GOVCLOUD_IMAGE_STORE")
	if store == "" {
		store = imagestore.DefaultDir
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		if _, serr := os.Stat(filepath.Join(store, "debian-12.qcow2.sha256")); serr != nil {
			t.Skipf("debootstrap not found and no Debian image in %s: run 'sudo make deps image-debian'", store)
		}
	} else {
		start := time.Now()
		out, err := exec.Command("../../scripts/build-debian-image.sh", store).CombinedOutput()
		if err != nil {
			t.Fatalf("make image-debian: %v\n%s", err, out)
		}
		t.Logf("%s(%v)", out, time.Since(start).Round(time.Second))
	}
	b, err := os.ReadFile(filepath.Join(store, "debian-12.qcow2.sha256"))
	if err != nil {
		t.Fatal(err)
	}
	return store, strings.Fields(string(b))[0]
}

// Issue 23: the Debian image (debootstrap, 'make image-debian') boots under TCG in a libvirt
// domain made by the provider, and its NoCloud seed sets the hostname, the IPv4 and IPv6
// addresses (SSH answers on both from the host, the guest's gateway) and root's SSH key. An
// image whose file does not have the Image object's sha256 is refused before anything is made.
func TestDebianImageBoots(t *testing.T) {
	netnstest.RequirePrivileged(t)
	store, sum := debianImage(t)
	p := requireLibvirt(t)
	p.images = imagestore.New(store)
	ctx := context.Background()
	br := bridge(t, 3906)
	brl, err := netlink.LinkByName(br)
	if err != nil {
		t.Fatal(err)
	}
	// The host side of the segment: the guest's gateways, and where SSH is tried from.
	for _, a := range []string{"198.18.206.1/24", "2001:db8:206::1/64"} {
		addr, _ := netlink.ParseAddr(a)
		addr.Flags = 0x02 // IFA_F_NODAD
		if err := netlink.AddrAdd(brl, addr); err != nil {
			t.Fatalf("address %s on %s: %v", a, br, err)
		}
	}

	vm := spec("tdeb1", 3906, "198.18.206.10/24", "52:54:00:c7:06:10")
	vm.MemoryMiB = 512
	vm.NICs[0].Addr6 = netip.MustParsePrefix("2001:db8:206::a/64")
	vm.NICs[0].Gateway6 = netip.MustParseAddr("2001:db8:206::1")
	vm.Image = "debian-12"
	vm.ImageFile = compute.Image{Name: "debian-12", Source: "debian-12.qcow2", SHA256: sum, OS: "debian"}
	// A key of this run (ssh-keygen), so the test logs in with it; a fixed one without ssh.
	vm.SSHKeys = []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl govcloud-test"}
	key := filepath.Join(t.TempDir(), "id")
	_, sshErr := exec.LookPath("ssh")
	if sshErr == nil {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "govcloud-test", "-f", key).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
		pub, err := os.ReadFile(key + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		vm.SSHKeys = []string{strings.TrimSpace(string(pub))}
	}
	t.Cleanup(func() { p.Delete(ctx, vm.Name) })

	// A changed image is refused, naming the image and both sums; nothing is made.
	bad := vm
	bad.ImageFile.SHA256 = strings.Repeat("0", 64)
	if _, err := p.Ensure(ctx, bad); err == nil || !strings.Contains(err.Error(), `image "debian-12"`) || !strings.Contains(err.Error(), sum) {
		t.Fatalf("ensure with a wrong sha256: %v, want a refusal naming the image and its sum", err)
	}
	assertGone(t, p, bad.Name, bad.NICs[0].Port)

	start := time.Now()
	st, err := p.Ensure(ctx, vm)
	if err != nil {
		t.Fatalf("ensure %s: %v", vm.Name, err)
	}
	if st.State != compute.Running {
		t.Fatalf("status %+v, want running", st)
	}
	for _, addr := range []string{"198.18.206.10:22", "[2001:db8:206::a]:22"} {
		waitFor(t, 300*time.Second, "SSH banner from "+addr, func() error {
			banner, err := sshBanner(addr)
			if err != nil {
				return fmt.Errorf("%v (console: %q)", err, tail(p.ConsoleLog(vm.Name)))
			}
			if !strings.HasPrefix(banner, "SSH-2.0-OpenSSH") {
				return fmt.Errorf("banner %q", banner)
			}
			return nil
		})
		t.Logf("%s answers SSH %v after Ensure", addr, time.Since(start).Round(100*time.Millisecond))
	}
	fmt.Printf("debian image boot (TCG, 1 vCPU, 512 MiB): Ensure -> SSH banner on IPv4 and IPv6 in %v\n", time.Since(start).Round(100*time.Millisecond))
	// The getty on the serial console greets with the seed's hostname; the seed unit reports it.
	waitFor(t, 60*time.Second, "hostname from the seed on the console", func() error {
		c := p.ConsoleLog(vm.Name)
		if !strings.Contains(c, "tdeb1 login:") || !strings.Contains(c, "govcloud-seed: applied seed") {
			return fmt.Errorf("console: %q", tail(c))
		}
		return nil
	})
	// Inside, through SSH with the seed's key: the hostname, both addresses and both default
	// routes are the seed's.
	if sshErr != nil {
		t.Logf("ssh not found (openssh-client): login with the seed's key not tried")
	} else {
		out, err := exec.Command("ssh", "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
			"-o", "ConnectTimeout=10", "root@198.18.206.10", "hostname; ip -o addr show eth0; ip route show default; ip -6 route show default").CombinedOutput()
		if err != nil {
			t.Fatalf("ssh with the seed's key: %v: %s", err, out)
		}
		for _, w := range []string{"tdeb1\n", "inet 198.18.206.10/24", "inet6 2001:db8:206::a/64", "default via 198.18.206.1", "default via 2001:db8:206::1"} {
			if !strings.Contains(string(out), w) {
				t.Errorf("guest says %q, want %q", out, w)
			}
		}
	}
	// qemu-guest-agent answers on the VM's channel, through libvirtd.
	if reply, err := p.AgentCommand(ctx, vm.Name, `{"execute":"guest-ping"}`, 20); err != nil || !strings.Contains(reply, `"return"`) {
		diag := "ssh not found"
		if sshErr == nil {
			out, _ := exec.Command("ssh", "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
				"root@198.18.206.10", "ls -l /dev/virtio-ports; systemctl status --no-pager qemu-guest-agent 2>&1 | head -20").CombinedOutput()
			diag = string(out)
		}
		t.Errorf("guest agent ping: %q, %v; in the guest:\n%s", reply, err, diag)
	}
	if err := p.Delete(ctx, vm.Name); err != nil {
		t.Fatal(err)
	}
	assertGone(t, p, vm.Name, vm.NICs[0].Port)
	if _, err := os.Stat(p.seedPath(vm.Name)); !os.IsNotExist(err) {
		t.Errorf("seed %s left after delete: %v", p.seedPath(vm.Name), err)
	}
}

// sshBanner reads the first line an SSH server sends on addr.
func sshBanner(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}
