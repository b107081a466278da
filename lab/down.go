package lab

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Down removes everything the lab made, whatever its number of hosts: processes (agents
// first, so they take their dataplane down), namespaces, the lab's bpffs and its directory. It
// is safe to run twice and after a failed or interrupted Up, and touches only gc-* namespaces
// and its own directory.
func (l *Lab) Down(ctx context.Context) error {
	var errs []error
	// However many hosts Up made: every agent's pid file, every gc-host* namespace.
	var agents []string
	pids, _ := filepath.Glob(filepath.Join(l.dir, "pids", "agent-*.pid"))
	for _, p := range pids {
		agents = append(agents, strings.TrimSuffix(filepath.Base(p), ".pid"))
	}
	l.stopAll(agents, 5*time.Second)
	var rest []string
	pids, _ = filepath.Glob(filepath.Join(l.dir, "pids", "*.pid"))
	for _, p := range pids {
		rest = append(rest, strings.TrimSuffix(filepath.Base(p), ".pid"))
	}
	l.stopAll(rest, 3*time.Second)
	// With --vms: the domains, volumes and pools of the hosts' compute agents (stopped above).
	if err := l.removeVMs(ctx); err != nil {
		errs = append(errs, err)
	}
	for _, pid := range l.tor().PIDs() {
		killWait(pid, 2*time.Second)
	}
	// Whatever still runs inside a lab namespace is the lab's.
	for _, ns := range labNamespaces() {
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				killWait(pid, time.Second)
			}
		}
	}
	for _, ns := range labNamespaces() {
		if err := sh("ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	for _, m := range []string{filepath.Join(l.dir, "bpf"), l.rootNS()} {
		if isMount(m) {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, d := range []string{l.dir, l.frrDir()} {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	l.printf("lab: removed (namespaces, processes, %s)\n", l.dir)
	return nil
}

func isMount(p string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == p {
			return true
		}
	}
	return false
}
