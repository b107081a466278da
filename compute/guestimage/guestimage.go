// Package guestimage builds the tiny bootable guest the compute tests and the lab boot, without
// downloading anything: Debian's kernel (package linux-image-amd64, /boot/vmlinuz-*) and an
// initramfs assembled here from busybox-static and the kernel package's own virtio modules. Its
// init loads the modules, configures each NIC from the kernel command line (ip=ADDR::GW:MASK::ethN:off,
// one per NIC, and gc.ip6=ADDR/LEN,GW,ethN for IPv6; the kernel itself has no IP autoconfiguration), puts the VIPs it serves as a dsr
// backend on lo (gc.vip=ADDR, repeated), and serves HTTP with busybox httpd answering the VM's
// name (gc.name=NAME). A shell listens on the second serial port (ttyS1) when the VM has one: the
// host runs commands in the guest through it (see Run), without any network path.
package guestimage

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Modules are the kernel modules the guest loads, in dependency order (Debian builds virtio as
// modules). Paths are relative to /lib/modules/VERSION/kernel.
var Modules = []string{
	"drivers/virtio/virtio_ring.ko",
	"drivers/virtio/virtio.ko",
	"drivers/virtio/virtio_pci_legacy_dev.ko",
	"drivers/virtio/virtio_pci_modern_dev.ko",
	"drivers/virtio/virtio_pci.ko",
	"net/core/failover.ko",
	"drivers/net/net_failover.ko",
	"drivers/net/virtio_net.ko",
	"drivers/block/virtio_blk.ko",
}

// ReadyMarker is printed on the serial console once the guest serves HTTP.
const ReadyMarker = "GOVCLOUD-GUEST-READY"

const initScript = `#!/bin/busybox sh
` + netScript + `
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in ` + "@MODULES@" + `; do insmod /lib/modules/$m.ko 2>/dev/null; done
name=guest
for x in $(cat /proc/cmdline); do
  case "$x" in
    gc.name=*) name="${x#gc.name=}" ;;
  esac
done
ip link set lo up
configure_net /proc/cmdline
if [ -e /dev/ttyS1 ]; then
  (while true; do setsid sh -c 'stty -echo -onlcr 2>/dev/null; PS1= exec sh' </dev/ttyS1 >/dev/ttyS1 2>&1; sleep 1; done) &
fi
mkdir -p /www
echo "$name" > /www/index.html
httpd -p 80 -h /www
echo "` + ReadyMarker + ` $name" > /dev/console
echo "` + ReadyMarker + ` $name" > /dev/ttyS0 2>/dev/null
while true; do sleep 3600; done
`

// netScript defines configure_net FILE: it configures the NICs and the served VIPs from the
// kernel command line in FILE (the init calls it with /proc/cmdline; a test with its own file).
// Per NIC: ip=ADDR::GW:MASK::ethN:off for IPv4 (the syntax of the kernel's nfsroot.txt) and
// gc.ip6=ADDR/LEN,GW,ethN for IPv6 (GW may be empty); the first gateway of each family is the
// default route. IPv6 addresses skip duplicate address detection (the controller hands each
// out once; a tentative address could not be a source for the first second).
const netScript = `configure_net() {
for x in $(cat "$1"); do
  case "$x" in
    ip=*)
      v="${x#ip=}"
      addr=$(echo "$v" | cut -d: -f1); gw=$(echo "$v" | cut -d: -f3)
      mask=$(echo "$v" | cut -d: -f4); dev=$(echo "$v" | cut -d: -f6)
      [ -n "$dev" ] || dev=eth0
      i=0; while [ ! -e /sys/class/net/$dev ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
      ifconfig "$dev" "$addr" netmask "$mask" up
      arping -U -c 1 -I "$dev" "$addr" >/dev/null 2>&1 &
      if [ -n "$gw" ] && ! ip route | grep -q '^default'; then ip route add default via "$gw" dev "$dev"; fi
      ;;
    gc.ip6=*)
      v="${x#gc.ip6=}"
      addr=$(echo "$v" | cut -d, -f1); gw=$(echo "$v" | cut -d, -f2); dev=$(echo "$v" | cut -d, -f3)
      [ -n "$dev" ] || dev=eth0
      i=0; while [ ! -e /sys/class/net/$dev ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
      echo 0 > /proc/sys/net/ipv6/conf/$dev/accept_dad
      ip link set "$dev" up
      ip -6 addr add "$addr" dev "$dev"
      if [ -n "$gw" ] && ! ip -6 route | grep -q '^default'; then ip -6 route add default via "$gw" dev "$dev"; fi
      ;;
    gc.vip=*)
      v="${x#gc.vip=}"
      case "$v" in *:*) ip -6 addr add "$v/128" dev lo ;; *) ip addr add "$v/32" dev lo ;; esac
      ;;
  esac
done
}`

// Options say where the kernel, its modules and busybox are.
type Options struct {
	KernelVersion string // default: the newest /boot/vmlinuz-* whose /lib/modules/VERSION has virtio_net.ko
	Busybox       string // default /bin/busybox
	Root          string // default "/" (tests may point at a fake tree)
	// Compressed boots the bzImage as it is. By default Build extracts the uncompressed vmlinux
	// (when the kernel has PVH entry, CONFIG_PVH=y, and xz can unpack it): qemu then boots the ELF
	// directly, which saves the 3-4 s the compressed kernel spends unpacking itself under TCG.
	Compressed bool
}

// Image is a bootable guest: a kernel and an initramfs.
type Image struct {
	Kernel  string
	Initrd  string
	Version string
}

// FindKernel returns the Debian kernel version that has the guest's modules.
func FindKernel(root string) (string, error) {
	if root == "" {
		root = "/"
	}
	ks, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	sort.Sort(sort.Reverse(sort.StringSlice(ks)))
	for _, k := range ks {
		v := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		if _, err := os.Stat(filepath.Join(root, "lib/modules", v, "kernel/drivers/net/virtio_net.ko")); err == nil {
			return v, nil
		}
	}
	return "", fmt.Errorf("no /boot/vmlinuz-* with virtio_net.ko under %s/lib/modules (install the linux-image-amd64 package)", root)
}

// Build writes the initramfs into dir (named by a hash of its content, so rebuilding is free)
// and returns the image. dir must be readable by the hypervisor.
func Build(dir string, o Options) (Image, error) {
	if o.Root == "" {
		o.Root = "/"
	}
	if o.Busybox == "" {
		o.Busybox = filepath.Join(o.Root, "bin/busybox")
	}
	var err error
	if o.KernelVersion == "" {
		if o.KernelVersion, err = FindKernel(o.Root); err != nil {
			return Image{}, err
		}
	}
	img, err := Initramfs(o)
	if err != nil {
		return Image{}, err
	}
	sum := sha256.Sum256(img)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Image{}, fmt.Errorf("image dir %s: %w", dir, err)
	}
	out := Image{
		Kernel:  filepath.Join(o.Root, "boot", "vmlinuz-"+o.KernelVersion),
		Initrd:  filepath.Join(dir, "gc-initrd-"+hex.EncodeToString(sum[:6])+".img"),
		Version: o.KernelVersion,
	}
	if _, err := os.Stat(out.Kernel); err != nil {
		return Image{}, fmt.Errorf("kernel %s: %w", o.KernelVersion, err)
	}
	if !o.Compressed {
		if v, err := uncompressed(out.Kernel, filepath.Join(o.Root, "boot", "config-"+o.KernelVersion), dir, o.KernelVersion); err == nil {
			out.Kernel = v
		}
	}
	if _, err := os.Stat(out.Initrd); err == nil {
		return out, nil
	}
	tmp := out.Initrd + ".tmp"
	if err := os.WriteFile(tmp, img, 0o644); err != nil {
		return Image{}, fmt.Errorf("write initramfs %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, out.Initrd); err != nil {
		return Image{}, fmt.Errorf("install initramfs %s: %w", out.Initrd, err)
	}
	return out, nil
}

// Initramfs returns the gzipped newc cpio archive of the guest.
func Initramfs(o Options) ([]byte, error) {
	bb, err := os.ReadFile(o.Busybox)
	if err != nil {
		return nil, fmt.Errorf("busybox %s (install busybox-static): %w", o.Busybox, err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	w := &cpioWriter{w: zw}
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "www", "lib", "lib/modules"} {
		w.dir(d)
	}
	w.node("dev/console", 0o020600, 5, 1)
	w.node("dev/ttyS0", 0o020600, 4, 64)
	w.file("bin/busybox", 0o755, bb)
	var names []string
	for _, m := range Modules {
		p := filepath.Join(o.Root, "lib/modules", o.KernelVersion, "kernel", m)
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("module %s of kernel %s: %w", m, o.KernelVersion, err)
		}
		n := strings.TrimSuffix(filepath.Base(m), ".ko")
		names = append(names, n)
		w.file("lib/modules/"+n+".ko", 0o644, b)
	}
	w.file("init", 0o755, []byte(strings.Replace(initScript, "@MODULES@", strings.Join(names, " "), 1)))
	if err := w.close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gzip initramfs: %w", err)
	}
	return buf.Bytes(), nil
}

// NIC is one guest interface for the command line: its IPv4 and IPv6 addresses with the
// segment's prefix length (either may be zero) and the gateway of each family.
type NIC struct {
	Addr     netip.Prefix
	Gateway  netip.Addr
	Addr6    netip.Prefix
	Gateway6 netip.Addr
}

// Cmdline is the kernel command line for a guest named name with its NICs (eth0, eth1, ...) and
// the VIPs it serves as a dsr backend (on lo).
func Cmdline(name string, nics []NIC, vips []netip.Addr) string {
	// No timer/TSC calibration and no mitigations: each costs a lot under TCG.
	parts := []string{"console=ttyS0", "panic=-1", "quiet", "mitigations=off", "tsc=reliable", "no_timer_check", "lpj=8000000", "gc.name=" + name}
	for i, n := range nics {
		if n.Addr.IsValid() && n.Addr.Addr().Is4() {
			gw := ""
			if n.Gateway.IsValid() {
				gw = n.Gateway.String()
			}
			parts = append(parts, fmt.Sprintf("ip=%s::%s:%s::eth%d:off", n.Addr.Addr(), gw, mask4(n.Addr.Bits()), i))
		}
		if n.Addr6.IsValid() && n.Addr6.Addr().Is6() {
			gw := ""
			if n.Gateway6.IsValid() {
				gw = n.Gateway6.String()
			}
			parts = append(parts, fmt.Sprintf("gc.ip6=%s,%s,eth%d", n.Addr6, gw, i))
		}
	}
	for _, v := range vips {
		if v.IsValid() {
			parts = append(parts, "gc.vip="+v.String())
		}
	}
	return strings.Join(parts, " ")
}

func mask4(bits int) string {
	var m [4]byte
	for i := 0; i < bits && i < 32; i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(m).String()
}

// uncompressed writes the vmlinux ELF inside bzImage kernel into dir (once) and returns its path.
func uncompressed(kernel, config, dir, version string) (string, error) {
	cfg, err := os.ReadFile(config)
	if err != nil || !bytes.Contains(cfg, []byte("\nCONFIG_PVH=y")) {
		return "", fmt.Errorf("kernel %s: no PVH entry (CONFIG_PVH) in %s", version, config)
	}
	out := filepath.Join(dir, "gc-vmlinux-"+version)
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	bz, err := os.ReadFile(kernel)
	if err != nil {
		return "", err
	}
	i := bytes.Index(bz, []byte("\xfd7zXZ\x00"))
	if i < 0 {
		return "", fmt.Errorf("kernel %s: no xz payload", kernel)
	}
	cmd := exec.Command("xz", "-dc")
	cmd.Stdin = bytes.NewReader(bz[i:])
	var elf bytes.Buffer
	cmd.Stdout = &elf
	_ = cmd.Run() // xz complains about the data after the stream; the ELF is complete
	if elf.Len() < 1<<20 || !bytes.HasPrefix(elf.Bytes(), []byte("\x7fELF")) {
		return "", fmt.Errorf("kernel %s: xz gave no ELF", kernel)
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, elf.Bytes(), 0o644); err != nil {
		return "", err
	}
	return out, os.Rename(tmp, out)
}
