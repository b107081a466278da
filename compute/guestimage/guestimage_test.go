package guestimage

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
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
