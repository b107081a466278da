package guestimage

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/govcloud/govcloud/dataplane/netnstest"
)

func TestCmdline(t *testing.T) {
	got := Cmdline("web1", []NIC{
		{Addr: netip.MustParsePrefix("198.18.20.10/24"), Gateway: netip.MustParseAddr("198.18.20.1")},
		{Addr: netip.MustParsePrefix("198.18.21.10/25")},
	}, []netip.Addr{netip.MustParseAddr("198.19.255.1"), netip.MustParseAddr("2001:db8::1")})
	want := "console=ttyS0 panic=-1 quiet mitigations=off tsc=reliable no_timer_check lpj=8000000 gc.name=web1 ip=198.18.20.10::198.18.20.1:255.255.255.0::eth0:off ip=198.18.21.10:::255.255.255.128::eth1:off gc.vip=198.19.255.1 gc.vip=2001:db8::1"
	if got != want {
		t.Fatalf("cmdline\n got %s\nwant %s", got, want)
	}
}

// fakeRoot is a tree with a kernel, its modules and a busybox.
func fakeRoot(t *testing.T) string {
	root := t.TempDir()
	files := map[string]string{"boot/vmlinuz-9.9.9-amd64": "kernel", "bin/busybox": "busybox"}
	for _, m := range Modules {
		files["lib/modules/9.9.9-amd64/kernel/"+m] = "module " + m
	}
	for f, c := range files {
		p := filepath.Join(root, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// readCpio returns name -> (mode, content) of a newc archive.
func readCpio(t *testing.T, b []byte) map[string][2]string {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	out := map[string][2]string{}
	for off := 0; off < len(raw); {
		h := string(raw[off : off+110])
		if h[:6] != "070701" {
			t.Fatalf("bad magic at %d: %q", off, h[:6])
		}
		field := func(i int) int { v, _ := strconv.ParseUint(h[6+8*i:14+8*i], 16, 32); return int(v) }
		mode, size, nameLen := field(1), field(6), field(11)
		name := string(raw[off+110 : off+110+nameLen-1])
		off += (110 + nameLen + 3) &^ 3
		data := string(raw[off : off+size])
		off += (size + 3) &^ 3
		if name == "TRAILER!!!" {
			break
		}
		out[name] = [2]string{strconv.FormatInt(int64(mode), 8), data}
	}
	return out
}

func TestBuildInitramfs(t *testing.T) {
	root := fakeRoot(t)
	v, err := FindKernel(root)
	if err != nil || v != "9.9.9-amd64" {
		t.Fatalf("kernel %q %v", v, err)
	}
	dir := t.TempDir()
	img, err := Build(dir, Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	if img.Kernel != filepath.Join(root, "boot/vmlinuz-9.9.9-amd64") {
		t.Fatalf("kernel %s", img.Kernel)
	}
	b, err := os.ReadFile(img.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	files := readCpio(t, b)
	if f := files["bin/busybox"]; f[0] != "100755" || f[1] != "busybox" {
		t.Fatalf("busybox entry %v", f)
	}
	if f := files["dev/console"]; f[0] != "20600" {
		t.Fatalf("console node %v", f)
	}
	if f := files["lib/modules/virtio_net.ko"]; f[1] != "module drivers/net/virtio_net.ko" {
		t.Fatalf("virtio_net entry %v", f)
	}
	init := files["init"][1]
	if files["init"][0] != "100755" || !strings.Contains(init, "insmod /lib/modules/$m.ko") || !strings.Contains(init, "virtio_ring virtio virtio_pci_legacy_dev") || !strings.Contains(init, "httpd -p 80") {
		t.Fatalf("init script:\n%s", init)
	}
	// Same content: same file, no rebuild.
	img2, err := Build(dir, Options{Root: root})
	if err != nil || img2.Initrd != img.Initrd {
		t.Fatalf("rebuild: %s vs %s (%v)", img2.Initrd, img.Initrd, err)
	}
	// A kernel without the modules is refused by name.
	os.Remove(filepath.Join(root, "lib/modules/9.9.9-amd64/kernel/drivers/block/virtio_blk.ko"))
	if _, err := Initramfs(Options{Root: root, KernelVersion: "9.9.9-amd64", Busybox: filepath.Join(root, "bin/busybox")}); err == nil || !strings.Contains(err.Error(), "virtio_blk.ko") {
		t.Fatalf("missing module: %v", err)
	}
}

// TestCmdlineIPv6: a NIC's IPv6 address goes on the command line as gc.ip6=ADDR/LEN,GW,ethN,
// beside (or without) its ip=; rows: dual-stack /64 with a gateway, IPv6-only /120, dual-stack
// /127 without a gateway.
func TestCmdlineIPv6(t *testing.T) {
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	for _, c := range []struct {
		nic  NIC
		want string
	}{
		{NIC{Addr: p("198.18.20.10/24"), Gateway: a("198.18.20.1"), Addr6: p("2001:db8:20::a/64"), Gateway6: a("2001:db8:20::1")},
			"ip=198.18.20.10::198.18.20.1:255.255.255.0::eth0:off gc.ip6=2001:db8:20::a/64,2001:db8:20::1,eth0"},
		{NIC{Addr6: p("2001:db8:21::a/120"), Gateway6: a("2001:db8:21::1")}, "gc.ip6=2001:db8:21::a/120,2001:db8:21::1,eth0"},
		{NIC{Addr: p("198.18.22.10/31"), Addr6: p("2001:db8:22::1/127")}, "ip=198.18.22.10:::255.255.255.254::eth0:off gc.ip6=2001:db8:22::1/127,,eth0"},
	} {
		got := Cmdline("g", []NIC{c.nic}, nil)
		if want := "console=ttyS0 panic=-1 quiet mitigations=off tsc=reliable no_timer_check lpj=8000000 gc.name=g " + c.want; got != want {
			t.Errorf("cmdline\n got %s\nwant %s", got, want)
		}
	}
}

// TestGuestNetScript runs the guest init's network configuration (busybox sh) in a namespace
// with the command line Cmdline makes: eth0 dual-stack with both default routes, eth1 IPv6
// only (its gateway is not a second default), a served IPv6 VIP on lo.
func TestGuestNetScript(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "busybox")
	ns := netnstest.New(t, "gct-gi6-")
	for i, dev := range []string{"eth0", "eth1"} {
		peer := "p" + strconv.Itoa(i)
		ns.MustRun(t, "ip", "link", "add", dev, "type", "veth", "peer", "name", peer)
		ns.MustRun(t, "ip", "link", "set", peer, "up")
	}
	ns.MustRun(t, "ip", "link", "set", "lo", "up")
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	line := Cmdline("g", []NIC{
		{Addr: p("198.18.20.10/24"), Gateway: a("198.18.20.1"), Addr6: p("2001:db8:20::a/64"), Gateway6: a("2001:db8:20::1")},
		{Addr6: p("2001:db8:21::a/120"), Gateway6: a("2001:db8:21::1")},
	}, []netip.Addr{a("2001:db8:ff::1")})
	file := filepath.Join(t.TempDir(), "cmdline")
	if err := os.WriteFile(file, []byte(line+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	if out, err := exec.Command("busybox", "--install", "-s", bin).CombinedOutput(); err != nil {
		t.Fatalf("busybox --install: %v: %s", err, out)
	}
	cmd := ns.Cmd("busybox", "sh", "-c", netScript+"\nconfigure_net "+file)
	cmd.Env = []string{"PATH=" + bin}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("configure_net: %v: %s", err, out)
	}
	for _, c := range []struct {
		args []string
		want []string
		not  []string
	}{
		{[]string{"-4", "-o", "addr", "show", "dev", "eth0"}, []string{"198.18.20.10/24"}, nil},
		{[]string{"-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"}, []string{"2001:db8:20::a/64"}, []string{"tentative"}},
		{[]string{"-6", "-o", "addr", "show", "dev", "eth1", "scope", "global"}, []string{"2001:db8:21::a/120"}, []string{"tentative"}},
		{[]string{"-6", "-o", "addr", "show", "dev", "lo"}, []string{"2001:db8:ff::1/128"}, nil},
		{[]string{"-4", "route", "show", "default"}, []string{"default via 198.18.20.1 dev eth0"}, nil},
		{[]string{"-6", "route", "show", "default"}, []string{"default via 2001:db8:20::1 dev eth0"}, []string{"eth1"}},
	} {
		out := ns.MustRun(t, "ip", c.args...)
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("ip %s: %q, want %q", strings.Join(c.args, " "), out, w)
			}
		}
		for _, n := range c.not {
			if strings.Contains(out, n) {
				t.Errorf("ip %s: %q, want no %q", strings.Join(c.args, " "), out, n)
			}
		}
	}
}
