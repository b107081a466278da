// Package netns is the lightweight compute Provider: a "VM" is a network namespace gc-vm-NAME
// with one veth per segment (host end named by the network agent's GuestPort, joined to the
// segment bridge; guest end ethN with the controller's MAC and address), a default route via the
// segment gateway and an HTTP server answering the VM's name. It stands in for real VMs in the
// lab and in fast tests, behind the same interface as the libvirt provider.
package netns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/dataplane/ethtool"
	"github.com/govcloud/govcloud/dataplane/nsexec"
)

// Prefix names the namespaces this provider owns.
const Prefix = "gc-vm-"

// announceAgain is when a new guest's second ARP announcement follows its first: past Linux's
// default neighbour locktime (1 s), shorter than RFC 5227's ANNOUNCE_INTERVAL (2 s) so a
// neighbour that ignored the first learns the guest within its first ping timeouts.
const announceAgain = 1100 * time.Millisecond

// Config configures the provider.
type Config struct {
	// StateDir keeps one JSON file per VM (written before anything is made, so a killed agent's
	// half-made VM is found again). It is what the provider owns: providers of several hosts
	// on one machine (the lab) each have their own and never list or delete the others'
	// guests. Default /run/govcloud/compute/netns.
	StateDir string
	// HTTPCommand is the server a guest runs inside its namespace; default: this executable's
	// hidden "guest-http --name VM --listen :80" subcommand.
	HTTPCommand func(vm string) []string
	// Prefix of the namespaces, default Prefix (tests use their own so a lab teardown running
	// beside them, which sweeps gc-vm-*, leaves them alone).
	Prefix string
	Log    *slog.Logger
}

// Provider is the namespace provider.
type Provider struct {
	cfg Config
	log *slog.Logger
	mu  sync.Mutex
}

// New returns a provider; it makes nothing until Ensure.
func New(cfg Config) (*Provider, error) {
	if cfg.StateDir == "" {
		cfg.StateDir = "/run/govcloud/compute/netns"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = Prefix
	}
	if cfg.HTTPCommand == nil {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("own executable for guest-http: %w", err)
		}
		cfg.HTTPCommand = func(vm string) []string { return []string{exe, "guest-http", "--name", vm, "--listen", ":80"} }
	}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("state dir %s: %w", cfg.StateDir, err)
	}
	return &Provider{cfg: cfg, log: cfg.Log}, nil
}

// BusyboxHTTP is an HTTPCommand serving the VM name with busybox httpd from a file under dir
// (for tests, whose binary has no guest-http subcommand).
func BusyboxHTTP(dir string) func(vm string) []string {
	return func(vm string) []string {
		www := filepath.Join(dir, "www-"+vm)
		_ = os.MkdirAll(www, 0o755)
		_ = os.WriteFile(filepath.Join(www, "index.html"), []byte(vm+"\n"), 0o644)
		return []string{"busybox", "httpd", "-f", "-p", "80", "-h", www}
	}
}

// NamespaceName is the namespace of a VM.
func (p *Provider) NamespaceName(vm string) string { return p.cfg.Prefix + vm }

type record struct {
	Name        string    `json:"name"`
	Department  string    `json:"department"`
	Fingerprint string    `json:"fingerprint"`
	VCPUs       int       `json:"vcpus"`
	MemoryMiB   int       `json:"memoryMiB"`
	Ports       []string  `json:"ports"`
	Addresses   []string  `json:"addresses"`
	Serves      []string  `json:"serves,omitempty"` // dsr VIPs on the guest's lo
	PID         int       `json:"pid"`
	Created     time.Time `json:"created"`
	Done        bool      `json:"done"` // every step succeeded
	// NSInode identifies the namespace this provider made (its /run/netns file's inode): a
	// namespace of the same name made since by another host's provider is not touched.
	NSInode uint64 `json:"nsInode,omitempty"`
}

// nsInode is the inode of namespace ns's file (0: none).
func nsInode(ns string) uint64 {
	var st syscall.Stat_t
	if syscall.Stat(filepath.Join("/run/netns", ns), &st) != nil {
		return 0
	}
	return st.Ino
}

func (p *Provider) recPath(vm string) string { return filepath.Join(p.cfg.StateDir, vm+".json") }

func (p *Provider) load(vm string) (record, bool) {
	b, err := os.ReadFile(p.recPath(vm))
	if err != nil {
		return record{}, false
	}
	var r record
	if json.Unmarshal(b, &r) != nil {
		return record{Name: vm}, true
	}
	return r, true
}

func (p *Provider) save(r record) error {
	b, _ := json.Marshal(r)
	tmp := p.recPath(r.Name) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write state of vm %q: %w", r.Name, err)
	}
	if err := os.Rename(tmp, p.recPath(r.Name)); err != nil {
		return fmt.Errorf("write state of vm %q: %w", r.Name, err)
	}
	return nil
}

func nsExists(ns string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", ns))
	return err == nil
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil && !zombie(pid) }

func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z'
}

// Ensure makes the namespace guest exist with spec.
func (p *Provider) Ensure(ctx context.Context, s compute.VMSpec) (compute.VMStatus, error) {
	if err := compute.ValidName(s.Name); err != nil {
		return compute.VMStatus{}, err
	}
	if s.ImageFile.Source != "" {
		return compute.VMStatus{}, fmt.Errorf("vm %q: image %q: namespace guests run no disk image (only the built-in tiny guest's role); a host with --provider libvirt boots it", s.Name, s.Image)
	}
	if !s.WantsRunning() {
		return compute.VMStatus{}, fmt.Errorf("vm %q: powerState %q: namespace guests have no power state (they are processes, not machines); a host with --provider libvirt stops VMs", s.Name, s.PowerState)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fp := s.Fingerprint()
	if r, ok := p.load(s.Name); ok {
		if r.Done && r.Fingerprint == fp && nsExists(p.NamespaceName(s.Name)) && alive(r.PID) {
			if err := p.setServes(ctx, &r, s.Serves); err != nil {
				return p.status(r), fmt.Errorf("vm %q: %w", s.Name, err)
			}
			return p.status(r), nil
		}
		if err := p.deleteLocked(ctx, s.Name); err != nil {
			return compute.VMStatus{}, err
		}
	} else if nsExists(p.NamespaceName(s.Name)) {
		// Not ours (every guest this provider makes has its state first): another host's
		// provider holds a VM of that name, moving here once it is deleted there.
		return compute.VMStatus{}, fmt.Errorf("vm %q: namespace %s exists but is not this host's (no state in %s): another host still holds it", s.Name, p.NamespaceName(s.Name), p.cfg.StateDir)
	}
	for _, n := range s.NICs {
		if _, err := net.InterfaceByName(n.Bridge); err != nil {
			return compute.VMStatus{}, fmt.Errorf("vm %q: bridge %q of segment %q: %w", s.Name, n.Bridge, n.Segment, err)
		}
	}
	r := record{Name: s.Name, Department: s.Department, Fingerprint: fp, VCPUs: s.VCPUs, MemoryMiB: s.MemoryMiB, Created: time.Now().UTC()}
	for _, n := range s.NICs {
		r.Ports = append(r.Ports, n.Port)
		for _, a := range []netip.Prefix{n.Addr, n.Addr6} {
			if a.IsValid() {
				r.Addresses = append(r.Addresses, a.Addr().String())
			}
		}
	}
	if err := p.save(r); err != nil { // intent first: a crash from here on is found by List
		return compute.VMStatus{}, err
	}
	if err := p.create(ctx, s, &r); err != nil {
		if derr := p.deleteLocked(ctx, s.Name); derr != nil {
			err = errors.Join(err, fmt.Errorf("clean up: %w", derr))
		}
		return compute.VMStatus{}, fmt.Errorf("vm %q: %w", s.Name, err)
	}
	r.Done = true
	if err := p.save(r); err != nil {
		return compute.VMStatus{}, err
	}
	return p.status(r), nil
}

func (p *Provider) create(ctx context.Context, s compute.VMSpec, r *record) error {
	ns := p.NamespaceName(s.Name)
	if err := addNamespace(ns); err != nil {
		return err
	}
	r.NSInode = nsInode(ns)
	nsh, nl, err := openNamespace(ns)
	if err != nil {
		return err
	}
	defer nsh.Close()
	defer nl.Close()
	if err := linkUp(nl, "lo"); err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	for _, v := range s.Serves {
		if err := addrOn(nl, "lo", netip.PrefixFrom(v, v.BitLen()), false); err != nil {
			return fmt.Errorf("namespace %s: VIP %s: %w", ns, v, err)
		}
		r.Serves = append(r.Serves, v.String())
	}
	var gw, gw6 bool
	var nics []netlink.Link // the guest ends
	for i, n := range s.NICs {
		dev := fmt.Sprintf("eth%d", i)
		br, err := netlink.LinkByName(n.Bridge)
		if err != nil {
			return fmt.Errorf("bridge %q of segment %q: %w", n.Bridge, n.Segment, err)
		}
		veth := &netlink.Veth{
			LinkAttrs: netlink.LinkAttrs{Name: n.Port, MasterIndex: br.Attrs().Index, Flags: net.FlagUp},
			PeerName:  dev, PeerHardwareAddr: n.MAC, PeerNamespace: netlink.NsFd(nsh),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("veth %s on bridge %s, peer %s in %s: %w", n.Port, n.Bridge, dev, ns, err)
		}
		if n.Addr.IsValid() {
			if err := addrOn(nl, dev, n.Addr, false); err != nil {
				return fmt.Errorf("%s in %s: address %s: %w", dev, ns, n.Addr, err)
			}
		}
		if n.Addr6.IsValid() {
			// nodad: the address is the controller's alone, and a tentative one cannot be a
			// source for the second or so duplicate address detection takes.
			if err := addrOn(nl, dev, n.Addr6, true); err != nil {
				return fmt.Errorf("%s in %s: address %s: %w", dev, ns, n.Addr6, err)
			}
		}
		if err := linkUp(nl, dev); err != nil {
			return fmt.Errorf("%s in %s: %w", dev, ns, err)
		}
		link, err := nl.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("%s in %s: %w", dev, ns, err)
		}
		nics = append(nics, link)
		if !gw && n.Gateway.IsValid() {
			gw = true
			if err := defaultRoute(nl, link, n.Gateway); err != nil {
				return fmt.Errorf("%s in %s: default route via %s: %w", dev, ns, n.Gateway, err)
			}
		}
		if !gw6 && n.Addr6.IsValid() && n.Gateway6.IsValid() {
			gw6 = true
			if err := defaultRoute(nl, link, n.Gateway6); err != nil {
				return fmt.Errorf("%s in %s: IPv6 default route via %s: %w", dev, ns, n.Gateway6, err)
			}
		}
	}
	// Checksums: veth leaves TX checksums to the receiver, which XDP on the host cannot do
	// ('ethtool -K ethN tx off').
	if err := nsexec.Do(nsh, func() error {
		for _, l := range nics {
			if _, err := ethtool.FeaturesOff(l.Attrs().Name, ethtool.TxChecksum...); err != nil {
				return fmt.Errorf("TX checksum offload off: %w", err)
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("in %s: %w", ns, err)
	}
	// Each NIC announces its IPv4 address (gratuitous ARP), so a neighbour still holding the
	// MAC of a guest deleted from this address (a VM re-made, its address reused) learns the
	// new one at once instead of after its entry goes stale (5-45 s; 8 s seen in
	// bench-compute). The kernel's arp_notify sent nothing on a veth coming up here. Twice,
	// as RFC 5227 announces (ANNOUNCE_NUM 2): a neighbour ignores a new MAC for an entry it
	// updated less than its locktime ago (Linux: 1 s), as when a guest is re-made at once.
	// Best effort: without it the guest is still right, only found later.
	send := func(h netns.NsHandle) {
		_ = nsexec.Do(h, func() error {
			for i, n := range s.NICs {
				if a := nics[i].Attrs(); n.Addr.IsValid() && n.Addr.Addr().Is4() {
					if err := announce(a.Index, a.HardwareAddr, n.Addr.Addr()); err != nil {
						p.log.Warn("gratuitous ARP", "vm", s.Name, "dev", a.Name, "err", err)
					}
				}
			}
			return nil
		})
	}
	send(nsh)
	inode := r.NSInode
	time.AfterFunc(announceAgain, func() {
		h, err := netns.GetFromName(ns)
		if err != nil {
			return // deleted meanwhile
		}
		defer h.Close()
		if nsInode(ns) == inode { // still this guest's namespace
			send(h)
		}
	})
	logf, err := os.OpenFile(filepath.Join(p.cfg.StateDir, s.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("guest log: %w", err)
	}
	defer logf.Close()
	argv := p.cfg.HTTPCommand(s.Name)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// Forked by a thread inside the namespace, the server is in it from its first instant: an
	// agent killed at any moment of this leaves no process outside that a later Delete's sweep
	// of the namespace's processes would miss (as 'ip netns exec' did until it had entered).
	if err := nsexec.Do(nsh, cmd.Start); err != nil {
		return fmt.Errorf("start guest http server in %s: %w", ns, err)
	}
	r.PID = cmd.Process.Pid
	go cmd.Wait() // reap it if it dies while we run
	return nil
}

// openNamespace opens the named namespace and a route netlink handle working inside it.
func openNamespace(ns string) (netns.NsHandle, *netlink.Handle, error) {
	nsh, err := netns.GetFromName(ns)
	if err != nil {
		return 0, nil, fmt.Errorf("namespace %s: %w", ns, err)
	}
	nl, err := netlink.NewHandleAt(nsh, unix.NETLINK_ROUTE)
	if err != nil {
		nsh.Close()
		return 0, nil, fmt.Errorf("namespace %s: netlink: %w", ns, err)
	}
	return nsh, nl, nil
}

func linkUp(nl *netlink.Handle, dev string) error {
	l, err := nl.LinkByName(dev)
	if err == nil {
		err = nl.LinkSetUp(l)
	}
	if err != nil {
		return fmt.Errorf("%s up: %w", dev, err)
	}
	return nil
}

// addrOn adds (or replaces) address a on dev; nodad skips IPv6 duplicate address detection.
func addrOn(nl *netlink.Handle, dev string, a netip.Prefix, nodad bool) error {
	l, err := nl.LinkByName(dev)
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())}}
	if nodad {
		addr.Flags = unix.IFA_F_NODAD
	}
	return nl.AddrReplace(l, addr)
}

// defaultRoute makes gw the default route (of gw's family) through link.
func defaultRoute(nl *netlink.Handle, link netlink.Link, gw netip.Addr) error {
	return nl.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw.AsSlice()})
}

// setServes makes the VIPs on a running guest's lo those of want, and records them.
func (p *Provider) setServes(ctx context.Context, r *record, want []netip.Addr) error {
	ns := p.NamespaceName(r.Name)
	var next []string
	for _, v := range want {
		next = append(next, v.String())
	}
	if slices.Equal(next, r.Serves) {
		return nil
	}
	nsh, nl, err := openNamespace(ns)
	if err != nil {
		return err
	}
	defer nsh.Close()
	defer nl.Close()
	for _, v := range want {
		if !slices.Contains(r.Serves, v.String()) {
			if err := addrOn(nl, "lo", netip.PrefixFrom(v, v.BitLen()), false); err != nil {
				return fmt.Errorf("VIP %s: %w", v, err)
			}
		}
	}
	if lo, err := nl.LinkByName("lo"); err == nil {
		for _, old := range r.Serves {
			if v, err := netip.ParseAddr(old); err == nil && !slices.Contains(want, v) {
				_ = nl.AddrDel(lo, &netlink.Addr{IPNet: &net.IPNet{IP: v.AsSlice(), Mask: net.CIDRMask(v.BitLen(), v.BitLen())}})
			}
		}
	}
	r.Serves = next
	return p.save(*r)
}

func (p *Provider) status(r record) compute.VMStatus {
	st := compute.VMStatus{Name: r.Name, Department: r.Department, Addresses: r.Addresses, Ports: r.Ports, PID: r.PID}
	switch {
	case !r.Done:
		st.State, st.Message = compute.Error, "half-made (agent stopped while creating)"
	case !nsExists(p.NamespaceName(r.Name)):
		st.State, st.Message = compute.Error, "namespace missing"
	case !alive(r.PID):
		st.State, st.Message = compute.Stopped, "http server not running"
	default:
		st.State = compute.Running
	}
	return st
}

// Delete kills the guest's processes, removes its ports, namespace and state.
func (p *Provider) Delete(ctx context.Context, name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.deleteLocked(ctx, name)
}

func (p *Provider) deleteLocked(ctx context.Context, name string) error {
	ns := p.NamespaceName(name)
	r, _ := p.load(name)
	var errs []error
	mine := r.NSInode == 0 || nsInode(ns) == r.NSInode // 0: recorded before it was made
	var killed []int
	if nsExists(ns) && mine {
		for _, pid := range nsPids(ns) {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed = append(killed, pid)
			}
		}
	}
	if r.PID > 0 && alive(r.PID) && inNamespaceCmd(r.PID, name) {
		if syscall.Kill(r.PID, syscall.SIGKILL) == nil {
			killed = append(killed, r.PID)
		}
	}
	// A deleted guest's processes are gone when Delete returns (SIGKILL takes effect a
	// moment after it is sent).
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) && slices.ContainsFunc(killed, alive); {
		time.Sleep(5 * time.Millisecond)
	}
	// Something else (a killed agent's last command) may remove them meanwhile: only what
	// still exists after a failure is an error.
	for _, port := range r.Ports {
		if l, err := netlink.LinkByName(port); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				if _, gone := netlink.LinkByName(port); gone == nil {
					errs = append(errs, fmt.Errorf("deleting port %s: %w", port, err))
				}
			}
		}
	}
	if nsExists(ns) && mine {
		if err := delNamespace(ns); err != nil && nsExists(ns) {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		_ = os.Remove(p.recPath(name))
		_ = os.Remove(filepath.Join(p.cfg.StateDir, name+".log"))
		_ = os.RemoveAll(filepath.Join(p.cfg.StateDir, "www-"+name))
	}
	return errors.Join(errs...)
}

// inNamespaceCmd guards against killing a recycled PID: the process must be our server.
func inNamespaceCmd(pid int, vm string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), vm)
}

// List reports every owned guest: those with a state file in this provider's state dir.
// Namespaces with the prefix but no state here are another host's (providers of several
// hosts on one machine, the lab) and are left alone.
func (p *Provider) List(ctx context.Context) ([]compute.VMStatus, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	names := map[string]bool{}
	files, err := os.ReadDir(p.cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("read state dir %s: %w", p.cfg.StateDir, err)
	}
	for _, f := range files {
		if n, ok := strings.CutSuffix(f.Name(), ".json"); ok {
			names[n] = true
		}
	}
	var out []compute.VMStatus
	for n := range names {
		if r, ok := p.load(n); ok {
			out = append(out, p.status(r))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Usage reports each guest's CPU time (its processes') and its nominal memory.
func (p *Provider) Usage(ctx context.Context) ([]compute.Usage, error) {
	vms, err := p.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []compute.Usage
	for _, v := range vms {
		r, ok := p.load(v.Name)
		if !ok {
			continue
		}
		u := compute.Usage{VM: r.Name, Department: r.Department, VCPUs: r.VCPUs, MemoryBytes: uint64(r.MemoryMiB) << 20}
		for _, pid := range nsPids(p.NamespaceName(r.Name)) {
			u.VCPUSeconds += cpuSeconds(pid)
		}
		out = append(out, u)
	}
	return out, nil
}

func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state); utime, stime are fields 14, 15
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}
