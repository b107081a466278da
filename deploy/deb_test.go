package deploy

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/govcloud/govcloud/dataplane/netnstest"
)

var units = []string{"govcloud-controller.service", "govcloud-agent.service", "govcloud-compute.service"}

// TestDebPackage: 'make deb' builds the package; it installs into a fresh root with its own
// dpkg database (dpkg --root), its units pass 'systemd-analyze verify' with the installed
// binary and man pages seen through a private mount namespace (an overlay of /usr/bin), its
// settings are conffiles, lintian (when installed) finds no error, and purging it leaves
// nothing but dpkg's own database.
func TestDebPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and the package")
	}
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "dpkg", "dpkg-deb", "make", "unshare", "mount")
	out := t.TempDir()
	build := exec.Command("make", "-C", "..", "deb", "DEBDIR="+out)
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "govcloud_*_amd64.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v", debs)
	}
	deb := debs[0]
	run := func(name string, args ...string) string {
		t.Helper()
		b, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, b)
		}
		return string(b)
	}
	info := run("dpkg-deb", "--info", deb)
	for _, want := range []string{"Package: govcloud", "Architecture: amd64", " conffiles"} {
		if !strings.Contains(info, want) {
			t.Errorf("package info lacks %q:\n%s", want, info)
		}
	}

	// A fresh root with an empty dpkg database.
	root := t.TempDir()
	admin := filepath.Join(root, "var/lib/dpkg")
	for _, d := range []string{"info", "updates", "triggers"} {
		if err := os.MkdirAll(filepath.Join(admin, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"status", "available"} {
		if err := os.WriteFile(filepath.Join(admin, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := tree(t, root)
	run("dpkg", "--root="+root, "--log=/dev/null", "--install", deb)
	for _, f := range append([]string{"usr/bin/govcloud", "etc/govcloud/controller.env", "etc/govcloud/agent.env", "etc/govcloud/compute.env",
		"usr/share/man/man1/govcloud.1.gz", "usr/share/man/man1/govcloud-controller.1.gz", "usr/share/doc/govcloud/copyright"}, unitPaths("usr/lib/systemd/system/")...) {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("installed package lacks %s: %v", f, err)
		}
	}
	if v := run(filepath.Join(root, "usr/bin/govcloud"), "version"); !strings.Contains(v, "bpf sha256: ") || strings.Contains(v, "bpf sha256: unknown") {
		t.Errorf("packaged binary's version is not stamped:\n%s", v)
	}
	conf, _ := os.ReadFile(filepath.Join(admin, "info", "govcloud.conffiles"))
	for _, f := range []string{"/etc/govcloud/controller.env", "/etc/govcloud/agent.env", "/etc/govcloud/compute.env"} {
		if !strings.Contains(string(conf), f) {
			t.Errorf("%s is not a conffile (%q)", f, conf)
		}
	}

	// The units, against the installed binary and man pages.
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze not installed: units not verified")
	} else {
		paths := unitPaths(filepath.Join(root, "usr/lib/systemd/system") + "/")
		script := "mount -t overlay overlay -o lowerdir=" + filepath.Join(root, "usr/bin") + ":/usr/bin /usr/bin && " +
			"MANPATH=" + filepath.Join(root, "usr/share/man") + " systemd-analyze verify " + strings.Join(paths, " ")
		if b, err := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script).CombinedOutput(); err != nil || len(strings.TrimSpace(string(b))) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, b)
		}
		for _, u := range units {
			b, _ := exec.Command("systemd-analyze", "security", "--offline=true", "--root="+root, u).CombinedOutput()
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			t.Logf("%s: %s", u, lines[len(lines)-1])
		}
	}
	for _, u := range units {
		b, _ := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system", u))
		for _, want := range []string{"ProtectSystem=strict", "Restart=on-failure", "NoNewPrivileges=yes", "CapabilityBoundingSet=", "EnvironmentFile=/etc/govcloud/"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("%s lacks %s", u, want)
			}
		}
	}

	if _, err := exec.LookPath("lintian"); err != nil {
		t.Log("lintian not installed: package not linted")
	} else {
		b, _ := exec.Command("lintian", "--tag-display-limit", "0", deb).CombinedOutput()
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "E: ") {
				t.Errorf("lintian: %s", l)
			} else if l != "" {
				t.Logf("lintian: %s", l)
			}
		}
	}

	// Purge: nothing left but dpkg's database.
	run("dpkg", "--root="+root, "--log=/dev/null", "--purge", "govcloud")
	var left []string
	for _, p := range tree(t, root) {
		if !slices.Contains(before, p) && !strings.HasPrefix(p, "var/lib/dpkg/") {
			left = append(left, p)
		}
	}
	if len(left) > 0 {
		t.Errorf("purge left %v", left)
	}
}

func unitPaths(dir string) []string {
	var out []string
	for _, u := range units {
		out = append(out, dir+u)
	}
	return out
}

// tree lists every path under root, relative.
func tree(t *testing.T, root string) []string {
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if rel, _ := filepath.Rel(root, p); rel != "." {
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
