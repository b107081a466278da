package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// preflightCheck is one kernel feature the agent needs and how to find it without changing
// anything: probes load a two-instruction program at most, attach nothing, write no map, no
// link, no rule.
type preflightCheck struct {
	name string // shown as is
	fix  string // what to do when missing
	run  func(in preflightInput) error
}

// preflightInput is what the checks look at besides the kernel: the flags naming host objects.
type preflightInput struct {
	uplink  string // --uplink: the interface whose driver must run XDP natively ("": skipped)
	pinRoot string // --pin-root: must be on a bpf filesystem (or be made in one)
}

// errSkipped marks a check that could not run (an input is missing), not a missing feature.
var errSkipped = errors.New("skipped")

var preflightChecks = []preflightCheck{
	{"BPF syscall (XDP programs)", "run as root (CAP_BPF, CAP_NET_ADMIN) on a kernel with CONFIG_BPF_SYSCALL", func(preflightInput) error {
		return features.HaveProgramType(ebpf.XDP)
	}},
	{"BTF (/sys/kernel/btf/vmlinux)", "a kernel built with CONFIG_DEBUG_INFO_BTF", func(preflightInput) error {
		_, err := os.Stat("/sys/kernel/btf/vmlinux")
		return err
	}},
	{"bpffs at --pin-root", "mount -t bpf bpf /sys/fs/bpf, or give a --pin-root on a bpf filesystem", func(in preflightInput) error {
		return onBPFFS(in.pinRoot)
	}},
	{"TCX (tc BPF links, Linux 6.6+)", "a Linux 6.6 or newer kernel", func(preflightInput) error {
		return haveTCX()
	}},
	{"nftables", "a kernel with nf_tables (CONFIG_NF_TABLES, inet family)", func(preflightInput) error {
		c, err := nftables.New(nftables.AsLasting())
		if err != nil {
			return err
		}
		defer c.CloseLasting()
		_, err = c.ListTablesOfFamily(nftables.TableFamilyINet)
		return err
	}},
	{"XDP native on the uplink", "a NIC driver with native XDP (xdp-features 'basic'), or another uplink", func(in preflightInput) error {
		if in.uplink == "" {
			return fmt.Errorf("%w: give --uplink IF", errSkipped)
		}
		return xdpNative(in.uplink)
	}},
}

// runPreflight prints the flag errors found (flagErrs: one line each, or "ok flags"), runs
// every check and prints one line each; it fails naming every bad flag and missing feature.
func runPreflight(w io.Writer, in preflightInput, flagErrs ...error) error {
	var missing []string
	var bad string
	for _, err := range flagErrs {
		fmt.Fprintf(w, "BAD      %v\n", err)
	}
	if len(flagErrs) > 0 {
		bad = fmt.Sprintf("%d bad flag value(s)", len(flagErrs))
	} else {
		fmt.Fprintf(w, "ok       flags\n")
	}
	for _, c := range preflightChecks {
		err := c.run(in)
		switch {
		case err == nil:
			fmt.Fprintf(w, "ok       %s\n", c.name)
		case errors.Is(err, errSkipped):
			fmt.Fprintf(w, "skipped  %s: %s\n", c.name, strings.TrimPrefix(err.Error(), errSkipped.Error()+": "))
		default:
			fmt.Fprintf(w, "MISSING  %s: %v (%s)\n", c.name, err, c.fix)
			missing = append(missing, c.name)
		}
	}
	switch {
	case bad != "" && len(missing) > 0:
		return fmt.Errorf("preflight: %s; missing %s", bad, strings.Join(missing, "; "))
	case bad != "":
		return fmt.Errorf("preflight: %s", bad)
	case len(missing) > 0:
		return fmt.Errorf("preflight: missing %s", strings.Join(missing, "; "))
	}
	return nil
}

// haveTCX attaches a do-nothing program to no interface (ifindex 2^32-1): a kernel with TCX
// answers "no such device", one without it "not supported".
func haveTCX() error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}})
	if err != nil {
		return fmt.Errorf("load a tc program: %w", err)
	}
	defer prog.Close()
	l, err := link.AttachTCX(link.TCXOptions{Interface: int(^uint32(0) >> 1), Program: prog, Attach: ebpf.AttachTCXIngress})
	if err == nil {
		l.Close()
		return nil
	}
	if errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
		return nil
	}
	return err
}

// Generic netlink "netdev" family (include/uapi/linux/netdev.h).
const (
	genlCtrlID            = 0x10 // GENL_ID_CTRL
	ctrlCmdGetFamily      = 3
	ctrlAttrFamilyID      = 1
	ctrlAttrFamilyName    = 2
	netdevCmdDevGet       = 1
	netdevAttrIfindex     = 1
	netdevAttrXDPFeatures = 3
	netdevXDPActBasic     = 1 // XDP_PASS, DROP, ABORTED and TX in the driver: native XDP
)

// xdpNative asks the kernel (netdev generic netlink, Linux 6.3+) whether ifname's driver runs
// XDP natively.
func xdpNative(ifname string) error {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("uplink %q: no such interface in this network namespace", ifname)
	}
	c, err := netlink.Dial(unix.NETLINK_GENERIC, nil)
	if err != nil {
		return fmt.Errorf("generic netlink: %w", err)
	}
	defer c.Close()
	ae := netlink.NewAttributeEncoder()
	ae.String(ctrlAttrFamilyName, "netdev")
	b, _ := ae.Encode()
	msgs, err := c.Execute(netlink.Message{Header: netlink.Header{Type: genlCtrlID, Flags: netlink.Request},
		Data: append([]byte{ctrlCmdGetFamily, 1, 0, 0}, b...)})
	if err != nil {
		return fmt.Errorf("netdev netlink family (Linux 6.3+ reports XDP features): %w", err)
	}
	var family uint16
	for _, m := range msgs {
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return err
		}
		for ad.Next() {
			if ad.Type() == ctrlAttrFamilyID {
				family = ad.Uint16()
			}
		}
	}
	if family == 0 {
		return errors.New("netdev netlink family not found (Linux 6.3+ reports XDP features)")
	}
	ae = netlink.NewAttributeEncoder()
	ae.Uint32(netdevAttrIfindex, uint32(ifi.Index))
	b, _ = ae.Encode()
	msgs, err = c.Execute(netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(family), Flags: netlink.Request},
		Data: append([]byte{netdevCmdDevGet, 1, 0, 0}, b...)})
	if err != nil {
		return fmt.Errorf("XDP features of %s: %w", ifname, err)
	}
	for _, m := range msgs {
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return err
		}
		ad.ByteOrder = binary.NativeEndian
		for ad.Next() {
			if ad.Type() == netdevAttrXDPFeatures {
				if f := ad.Uint64(); f&netdevXDPActBasic == 0 {
					return fmt.Errorf("driver of %s has no native XDP (xdp-features %#x)", ifname, f)
				}
				return nil
			}
		}
	}
	return fmt.Errorf("the kernel reported no XDP features for %s", ifname)
}

// onBPFFS says whether dir is on a bpf filesystem: dir itself, or, when the agent is still to
// make it, its nearest existing parent (a directory made there is on the same filesystem).
func onBPFFS(dir string) error {
	if dir == "" {
		return fmt.Errorf("%w: no --pin-root", errSkipped)
	}
	p := filepath.Clean(dir)
	for {
		var st unix.Statfs_t
		err := unix.Statfs(p, &st)
		switch {
		case err == nil && st.Type == unix.BPF_FS_MAGIC:
			return nil
		case err == nil:
			return fmt.Errorf("--pin-root %s: %s is not a bpf filesystem (type %#x)", dir, p, st.Type)
		case !errors.Is(err, unix.ENOENT) || p == "/" || p == ".":
			return fmt.Errorf("--pin-root %s: %w", dir, err)
		}
		p = filepath.Dir(p)
	}
}
