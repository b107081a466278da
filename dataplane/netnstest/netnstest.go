// Package netnstest runs privileged tests in network namespaces that the test itself creates
// and removes. Work inside a namespace runs on a goroutine whose OS thread is locked and that
// never returns to Go's pool still inside the namespace.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/govcloud/govcloud/dataplane/nsexec"
	"github.com/vishvananda/netns"
)

// RequirePrivileged skips tb unless the process can create namespaces and load BPF (root).
// Under CI (CI=true) a missing privilege is a failure, not a skip, so CI never hides these tests.
// GOVCLOUD_UNPRIVILEGED=1 (make test-unit) skips them on purpose.
func RequirePrivileged(tb testing.TB) {
	tb.Helper()
	if os.Getenv("GOVCLOUD_UNPRIVILEGED") == "1" {
		tb.Skip("privileged test: skipped by GOVCLOUD_UNPRIVILEGED=1 (make test-unit)")
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			tb.Fatal("privileged test: CI must run as root (needs CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF)")
		}
		tb.Skip("privileged test: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF); run 'sudo make test'")
	}
}

// RequireTool skips (or fails under CI) when an external program the test drives is missing.
func RequireTool(tb testing.TB, names ...string) {
	tb.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			msg := fmt.Sprintf("needs %s on PATH (installed by 'sudo make deps')", n)
			if os.Getenv("CI") == "true" {
				tb.Fatal(msg)
			}
			tb.Skip(msg)
		}
	}
}

// TempPinDir makes a directory on bpffs (/sys/fs/bpf) that is removed with tb; without bpffs it
// skips naming it (or fails under CI, whose 'make deps' mounts it).
func TempPinDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("/sys/fs/bpf", "gct-")
	if err != nil {
		msg := fmt.Sprintf("needs bpffs mounted at /sys/fs/bpf (mounted by 'sudo make deps'): %v", err)
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// NS is a named network namespace (visible to 'ip netns exec') owned by one test.
type NS struct {
	Name   string
	handle netns.NsHandle
	nl     *netlink.Handle
}

// New creates a namespace named prefix-<random>, brings its loopback up and removes it when
// the test ends (also on failure). Names are short enough for interface-name derived uses.
func New(tb testing.TB, prefix string) *NS {
	tb.Helper()
	ns, err := Create(prefix + "-" + randSuffix())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := ns.Close(); err != nil {
			tb.Errorf("removing namespace %s: %v", ns.Name, err)
		}
	})
	return ns
}

// Create makes the named namespace with 'ip netns add' and brings lo up. The caller owns it.
func Create(name string) (*NS, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	ns, err := Open(name)
	if err != nil {
		_ = exec.Command("ip", "netns", "del", name).Run()
		return nil, err
	}
	lo, err := ns.nl.LinkByName("lo")
	if err == nil {
		err = ns.nl.LinkSetUp(lo)
	}
	if err != nil {
		_ = ns.Close()
		return nil, fmt.Errorf("namespace %s: bringing lo up: %w", name, err)
	}
	return ns, nil
}

// Open attaches to an existing named namespace.
func Open(name string) (*NS, error) {
	h, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("opening namespace %s: %w", name, err)
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("netlink handle in namespace %s: %w", name, err)
	}
	return &NS{Name: name, handle: h, nl: nl}, nil
}

// Close kills what still runs in the namespace (only processes inside it) and deletes it.
func (n *NS) Close() error {
	n.nl.Close()
	n.handle.Close()
	_ = exec.Command("ip", "netns", "pids", n.Name).Run()
	if out, err := exec.Command("ip", "netns", "pids", n.Name).Output(); err == nil {
		for _, pid := range strings.Fields(string(out)) {
			_ = exec.Command("kill", "-9", pid).Run()
		}
	}
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", n.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Netlink returns a netlink handle bound to the namespace (no thread switching needed).
func (n *NS) Netlink() *netlink.Handle { return n.nl }

// Handle returns the namespace's file handle.
func (n *NS) Handle() netns.NsHandle { return n.handle }

// Do runs fn inside the namespace on a dedicated, locked OS thread (nsexec.Do). Sockets and
// BPF objects created in fn keep their namespace after fn returns.
func (n *NS) Do(fn func() error) error { return nsexec.Do(n.handle, fn) }

// Cmd returns a command that runs inside the namespace ('ip netns exec').
func (n *NS) Cmd(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command inside the namespace and returns its combined output.
func (n *NS) Run(name string, args ...string) (string, error) {
	out, err := n.Cmd(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), n.Name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// MustRun is Run that fails the test on error.
func (n *NS) MustRun(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := n.Run(name, args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// Veth creates a veth pair with one end (nameA) in a and the other (nameB) in b, both up.
func Veth(a *NS, nameA string, b *NS, nameB string) error {
	la := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: nameA}, PeerName: nameB, PeerNamespace: netlink.NsFd(int(b.handle))}
	if err := a.nl.LinkAdd(la); err != nil {
		return fmt.Errorf("veth %s(%s)-%s(%s): %w", nameA, a.Name, nameB, b.Name, err)
	}
	for _, side := range []struct {
		ns   *NS
		name string
	}{{a, nameA}, {b, nameB}} {
		l, err := side.ns.nl.LinkByName(side.name)
		if err == nil {
			err = side.ns.nl.LinkSetUp(l)
		}
		if err != nil {
			return fmt.Errorf("bringing %s up in %s: %w", side.name, side.ns.Name, err)
		}
	}
	return nil
}

// AddrAdd adds a CIDR address ("198.18.0.1/24") to a link in the namespace.
func (n *NS) AddrAdd(link, cidr string) error {
	l, err := n.nl.LinkByName(link)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", link, n.Name, err)
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return fmt.Errorf("address %q: %w", cidr, err)
	}
	a.Flags |= 0x80 // IFA_F_NODAD: usable at once, v6 included
	if err := n.nl.AddrAdd(l, a); err != nil {
		return fmt.Errorf("adding %s to %s in %s: %w", cidr, link, n.Name, err)
	}
	return nil
}

func randSuffix() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
