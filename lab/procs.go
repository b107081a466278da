package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// start runs a long-lived process, detached from this one (new session), in namespace ns
// ("" for the machine's own), logging to DIR/logs/NAME.log and recording its pid.
func (l *Lab) start(name, ns string, args ...string) error {
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	return l.startArgs(name, args)
}

// startNet is start in namespace ns's network only (nsenter --net): unlike 'ip netns exec' it
// keeps the machine's mount namespace, so namespaces the process makes ('ip netns add', the
// netns compute provider's guests) are seen by everyone.
func (l *Lab) startNet(name, ns string, args ...string) error {
	return l.startArgs(name, append([]string{"nsenter", "--net=" + filepath.Join("/run/netns", ns), "--"}, args...))
}

func (l *Lab) startArgs(name string, args []string) error {
	logf, err := os.OpenFile(filepath.Join(l.dir, "logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = os.Environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	return os.WriteFile(filepath.Join(l.dir, "pids", name+".pid"), []byte(strconv.Itoa(pid)), 0o644)
}

// alive reports whether the named process still runs.
func (l *Lab) alive(name string) bool {
	pid := l.pid(name)
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

func (l *Lab) pid(name string) int {
	b, err := os.ReadFile(filepath.Join(l.dir, "pids", name+".pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// stop sends SIGTERM, waits up to grace, then SIGKILL; it forgets the pid.
func (l *Lab) stop(name string, grace time.Duration) {
	pid := l.pid(name)
	defer os.Remove(filepath.Join(l.dir, "pids", name+".pid"))
	if pid <= 0 {
		return
	}
	killWait(pid, grace)
}

func killWait(pid int, grace time.Duration) {
	if syscall.Kill(pid, syscall.SIGTERM) != nil {
		return
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 40 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(50 * time.Millisecond)
	}
}

// stopAll stops the named processes at once (each as stop does).
func (l *Lab) stopAll(names []string, grace time.Duration) {
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Add(1)
		go func() { defer wg.Done(); l.stop(n, grace) }()
	}
	wg.Wait()
}

// kill sends SIGKILL (no chance to clean up) and forgets the pid.
func (l *Lab) kill(name string) {
	if pid := l.pid(name); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		for i := 0; i < 40 && syscall.Kill(pid, 0) == nil; i++ {
			time.Sleep(50 * time.Millisecond)
		}
	}
	_ = os.Remove(filepath.Join(l.dir, "pids", name+".pid"))
}

// logTail returns the last lines of a process's log, for error messages.
func (l *Lab) logTail(name string, n int) string {
	b, err := os.ReadFile(filepath.Join(l.dir, "logs", name+".log"))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitFor polls check until it succeeds, timeout passes or ctx ends (Ctrl-C). It prints
// progress only: "waiting (Ns)" every waitProgress once a wait is that long, with the first
// line of the current reason only once it has lasted waitReason (a transient fault of a wait
// that then succeeds is not shouted); the whole reason, indented, is in the error on timeout.
func (l *Lab) waitFor(ctx context.Context, what string, timeout time.Duration, check func() error) error {
	start := time.Now()
	last := start
	var err error
	for {
		if err = check(); err == nil {
			l.printf("   %s: ok (%.1fs)\n", what, time.Since(start).Seconds())
			return nil
		}
		if time.Since(start) > timeout {
			return fmt.Errorf("%s: not ready after %v: %s", what, timeout, indentLines(err.Error(), "    "))
		}
		if time.Since(last) >= waitProgress {
			line := fmt.Sprintf("   %s: waiting (%.0fs)", what, time.Since(start).Seconds())
			if time.Since(start) >= waitReason {
				reason, _, _ := strings.Cut(err.Error(), "\n")
				if len(reason) > 120 {
					reason = reason[:117] + "..."
				}
				line += ": " + reason
			}
			l.printf("%s\n", line)
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, context.Cause(ctx))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// How often a long wait says so, and after how long it says why.
var (
	waitProgress = 5 * time.Second
	waitReason   = 15 * time.Second
)

// indentLines indents every line of s but the first with prefix.
func indentLines(s, prefix string) string {
	return strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+prefix)
}
