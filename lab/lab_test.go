package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/govcloud/govcloud/dataplane/netnstest"
)

// TestLab runs the user's first hour as a test: 'lab up', 'lab verify', 'lab up' again over
// the running lab, 'lab down', then an 'up' interrupted half-way followed by 'down'; after each
// down the machine holds no gc- namespace, no lab process and no lab directory.
func TestLab(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra", "curl", "ethtool", "ping")
	if len(labNamespaces()) > 0 {
		t.Fatalf("a lab is already running here (%v): 'sudo make demo-down' first", labNamespaces())
	}
	bin := filepath.Join(t.TempDir(), "govcloud")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/govcloud").CombinedOutput(); err != nil {
		t.Fatalf("building govcloud: %v\n%s", err, out)
	}
	dir := filepath.Join(t.TempDir(), "lab")
	run := func(args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"lab"}, append(args, "--dir", dir, "--config", "../deploy/examples/lab")...)...)
		out, err := cmd.CombinedOutput()
		t.Logf("govcloud lab %s:\n%s", strings.Join(args, " "), out)
		return string(out), err
	}
	t.Cleanup(func() {
		if len(labNamespaces()) > 0 {
			_, _ = run("down")
		}
	})
	assertClean := func(when string) {
		t.Helper()
		if ns := labNamespaces(); len(ns) > 0 {
			t.Fatalf("%s: namespaces left: %v", when, ns)
		}
		for _, pat := range []string{bin, dir} { // govcloud processes; FRR (its files are in dir)
			if out, _ := exec.Command("pgrep", "-f", pat).Output(); len(strings.TrimSpace(string(out))) > 0 {
				t.Fatalf("%s: lab processes left (%s): %s", when, pat, out)
			}
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("%s: %s still exists", when, dir)
		}
	}

	if _, err := run("up"); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	if _, err := run("verify"); err != nil {
		t.Fatalf("lab verify: %v", err)
	}
	if out, err := run("up"); err != nil || !strings.Contains(out, "earlier lab") {
		t.Fatalf("second lab up: %v (it must replace the running lab)", err)
	}
	if _, err := run("down"); err != nil {
		t.Fatalf("lab down: %v", err)
	}
	assertClean("after down")
	if _, err := run("down"); err != nil {
		t.Fatalf("second lab down: %v", err)
	}

	// Interrupt an up half-way (once the agents run), then down.
	cmd := exec.Command(bin, "lab", "up", "--dir", dir, "--config", "../deploy/examples/lab")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(dir, "pids", "agent-gc-host2.pid")); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	_ = cmd.Wait()
	if _, err := run("down"); err != nil {
		t.Fatalf("down after an interrupted up: %v", err)
	}
	assertClean("after an interrupted up and down")
}
