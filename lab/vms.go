package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/compute/guestimage"
	"github.com/govcloud/govcloud/compute/libvirt"
)

// With --vms the guests are real VMs: one libvirtd on the machine (it makes its taps in the
// machine's namespace) and a compute agent per host, running in the host's namespace as the
// network agent does. Each VM NIC gets a bridge next to its tap and a veth pair into the host,
// whose end there is the guest port on the segment bridge (libvirt.Config.LibvirtNetns).

// vmsFile in the lab's directory says the lab runs real VMs ('lab verify' and 'down' read it).
const vmsFile = "vms"

// computeMetricsPort is where each host's compute agent serves /metrics, on the host's address.
const computeMetricsPort = "9481"

func (l *Lab) vmMode() bool {
	_, err := os.Stat(filepath.Join(l.dir, vmsFile))
	return err == nil
}

func (l *Lab) computeDir(h string) string { return filepath.Join(l.dir, "compute", h) }

// volumeBackupDir holds the lab's volume backups, shared by both hosts' compute agents (as a
// remote mount would be), so a volume backed up on one host can be restored on the other.
func (l *Lab) volumeBackupDir() string { return filepath.Join(l.dir, "volume-backups") }

// labPool is host h's storage pool: the hosts' agents share libvirtd, not volumes.
func labPool(h string) string { return "gc-lab-" + h }

const libvirtSocket = "/run/libvirt/libvirt-sock"

func (l *Lab) preflightVMs() error {
	var missing []string
	for _, t := range []string{"libvirtd", "virtlogd", "qemu-system-x86_64", "busybox"} {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if k, _ := filepath.Glob("/boot/vmlinuz-*"); len(k) == 0 {
		missing = append(missing, "/boot/vmlinuz-* (linux-image-amd64)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("--vms: missing %s: run 'sudo make deps' (installs libvirt, qemu, busybox-static, a kernel)", strings.Join(missing, ", "))
	}
	// qemu runs as an unprivileged user (libvirt-qemu) and opens disks under the lab's directory.
	abs, err := filepath.Abs(l.dir)
	if err != nil {
		return err
	}
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("--vms: qemu (user libvirt-qemu) cannot reach %s: %s is mode %04o; use a --dir whose parents others may traverse", abs, d, fi.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// startCompute starts a compute agent in each host: --provider netns (namespace guests), or
// with --vms libvirt (libvirtd started first when it is not running). A netns agent runs in
// its host's network namespace through nsenter, in the machine's mount namespace, so the
// guests' namespaces it makes are everyone's (ip netns exec would keep them to itself).
func (l *Lab) startCompute(ctx context.Context) error {
	if l.opt.VMs {
		if err := os.WriteFile(filepath.Join(l.dir, vmsFile), nil, 0o644); err != nil {
			return err
		}
		if err := libvirt.StartDaemon(ctx, libvirtSocket); err != nil {
			return err
		}
	}
	for i, h := range l.hosts {
		if err := os.MkdirAll(l.computeDir(h), 0o755); err != nil {
			return err
		}
		args := []string{l.opt.Bin, "compute", "--host", h, "--controller-file", l.controllerFile(), "--ca", l.caFile(), "--api-netns", l.rootNS(),
			"--join-token-file", l.joinTokenFile(h, "compute"), "--state-dir", l.computeDir(h),
			"--metrics-listen", hostAddr(i) + ":" + computeMetricsPort, "--report-status"}
		if !l.opt.VMs {
			// Each host's provider owns the guests in its own state dir only.
			args = append(args, "--provider", "netns", "--netns-state-dir", filepath.Join(l.computeDir(h), "netns"))
			if err := l.startNet("compute-"+h, h, args...); err != nil {
				return err
			}
			continue
		}
		args = append(args, "--provider", "libvirt", "--libvirt-netns", l.rootNS(), "--pool", labPool(h), "--volume-backup-dir", l.volumeBackupDir())
		if err := l.start("compute-"+h, h, args...); err != nil {
			return err
		}
	}
	return nil
}

// removeVMs deletes the lab's domains, volumes, pools and the links made for their NICs.
// The compute agents must be stopped first (they would make them again). libvirtd, a system
// daemon other users may share, keeps running.
func (l *Lab) removeVMs(ctx context.Context) error {
	if !l.vmMode() {
		return nil // namespace guests: their compute dirs hold no libvirt state
	}
	c, err := net.DialTimeout("unix", libvirtSocket, time.Second)
	if err != nil {
		return nil // no libvirtd: no domains
	}
	c.Close()
	// Every host Up may have made: Down does not rely on knowing how many it did.
	hosts := HostNames(MaxHosts)
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		if !dirExists(l.computeDir(h)) {
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = l.removeHostVMs(ctx, h) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (l *Lab) removeHostVMs(ctx context.Context, h string) error {
	// Seen from the machine's namespace, libvirtd's namespace and the agent's are one: the
	// provider removes the per-NIC bridges and veths there too.
	p, err := libvirt.New(ctx, libvirt.Config{Socket: libvirtSocket, Host: h, Pool: labPool(h), StateDir: l.computeDir(h), LibvirtNetns: "/proc/self/ns/net"})
	if err != nil {
		return fmt.Errorf("libvirt for %s: %w", h, err)
	}
	defer p.Close()
	return p.RemoveAll(ctx)
}

// inGuest runs a shell script in a guest: in its namespace, or through a VM's serial shell.
func (l *Lab) inGuest(vm, script string) (string, error) {
	if !l.vmMode() {
		return nsOut("gc-vm-"+vm, "sh", "-c", script)
	}
	socks, _ := filepath.Glob(filepath.Join(l.dir, "compute", "*", "console", "gc-"+vm+".sock"))
	if len(socks) == 0 {
		return "", fmt.Errorf("vm %s: no guest shell socket (is it running?)", vm)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, rc, err := guestimage.Run(ctx, socks[0], script)
	if err == nil && rc != 0 {
		err = fmt.Errorf("%s (in vm %s): exit status %d: %s", script, vm, rc, strings.TrimSpace(out))
	}
	return out, err
}

// guestPing sends n pings from vm to addr (iputils in a namespace, busybox in a VM: same flags).
func (l *Lab) guestPing(vm, addr string, n int) error {
	_, err := l.inGuest(vm, fmt.Sprintf("ping -c %d -A -W 1 %s", n, addr))
	return err
}

// guestHTTP fetches http://addr/ from vm (an IPv6 addr goes in brackets), giving up after 1-2 s.
func (l *Lab) guestHTTP(vm, addr string) (string, error) {
	host := addr
	if a, err := netip.ParseAddr(addr); err == nil && a.Is6() {
		host = "[" + addr + "]"
	}
	if l.vmMode() {
		// busybox wget's own -T crashes (1.35, static); timeout(1) bounds it instead.
		return l.inGuest(vm, "timeout 2 wget -q -O - http://"+host+"/")
	}
	// -g: the brackets of an IPv6 address are not a curl glob.
	return l.inGuest(vm, "curl -g -sS --max-time 1 http://"+host+"/")
}

// stopServer and startServer stop and start a guest's HTTP server (the backend of a service).
// A namespace guest's server (guest-http, started by its compute agent) stops serving on
// SIGUSR1 and serves again on SIGUSR2, staying alive: its agent sees the guest running.
func (l *Lab) stopServer(vm string) error {
	if l.vmMode() {
		_, err := l.inGuest(vm, "killall httpd")
		return err
	}
	return l.signalServer(vm, syscall.SIGUSR1)
}

func (l *Lab) startServer(vm string) error {
	if l.vmMode() {
		_, err := l.inGuest(vm, "pidof httpd >/dev/null || httpd -p 80 -h /www")
		return err
	}
	return l.signalServer(vm, syscall.SIGUSR2)
}

// signalServer signals namespace guest vm's HTTP server, found in its compute agent's state.
func (l *Lab) signalServer(vm string, sig syscall.Signal) error {
	recs, _ := filepath.Glob(filepath.Join(l.dir, "compute", "*", "netns", vm+".json"))
	if len(recs) == 0 {
		return fmt.Errorf("vm %s: no namespace guest (no state in %s)", vm, filepath.Join(l.dir, "compute", "*", "netns"))
	}
	b, err := os.ReadFile(recs[0])
	if err != nil {
		return err
	}
	var r struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.PID <= 0 {
		return fmt.Errorf("vm %s: %s: no server pid (%v)", vm, recs[0], err)
	}
	if err := syscall.Kill(r.PID, sig); err != nil {
		return fmt.Errorf("vm %s: signal server %d: %w", vm, r.PID, err)
	}
	return nil
}

// computeReady waits until each host's compute agent runs every VM placed on it.
func (l *Lab) computeReady(ctx context.Context, vms map[string][]string) error {
	what := "guests running (compute agents, netns)"
	if l.opt.VMs {
		what = "VMs running under libvirt (qemu)"
	}
	return l.waitFor(ctx, what, 120*time.Second, func() error {
		for i, h := range l.hosts {
			if !l.alive("compute-" + h) {
				return fmt.Errorf("compute agent on %s exited:\n%s", h, l.logTail("compute-"+h, 15))
			}
			out, err := nsOut(h, "curl", "-sS", "--max-time", "2", "http://"+hostAddr(i)+":"+computeMetricsPort+"/status")
			if err != nil {
				return err
			}
			var rep compute.Report
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				return fmt.Errorf("%s compute status: %w", h, err)
			}
			for _, vm := range vms[h] {
				j := slices.IndexFunc(rep.VMs, func(s compute.VMStatus) bool { return s.Name == vm })
				if j < 0 || rep.VMs[j].State != compute.Running {
					return fmt.Errorf("%s: vm %s not running yet (%s)", h, vm, rep.Error)
				}
			}
		}
		return nil
	})
}
