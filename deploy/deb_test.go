package deploy

import (
	"debug/elf"
	"fmt"
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

// TestDebPackage: 'make deb' builds the package; its maintainer scripts are in it and are valid
// sh; it installs into a fresh root with its own dpkg database (dpkg --root; a static busybox is
// the root's /bin/sh, for the scripts dpkg runs chrooted), its binary's version is the
// package's, its units (and the controller's example backup drop-in) pass 'systemd-analyze
// verify' with the installed binary and man pages seen through a private mount namespace (an
// overlay of /usr/bin), its settings are conffiles, lintian (when installed) finds no error, and
// purging it leaves nothing but dpkg's own database. Then the maintainer scripts' calls on
// install, upgrade, remove and purge, with and without a running systemd (TestDebPackage/scripts).
func TestDebPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and the package")
	}
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "dpkg", "dpkg-deb", "make", "unshare", "mount", "busybox")
	busybox := requireStatic(t, "busybox")
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

	version := strings.TrimSpace(run("dpkg-deb", "--field", deb, "Version"))

	// The maintainer scripts: in the control archive, executable, valid sh.
	control := t.TempDir()
	run("dpkg-deb", "--control", deb, control)
	for _, f := range maintScripts {
		p := filepath.Join(control, f)
		st, err := os.Stat(p)
		if err != nil {
			t.Errorf("package has no %s: %v", f, err)
			continue
		}
		if st.Mode()&0o111 != 0o111 {
			t.Errorf("%s mode %v, want executable", f, st.Mode())
		}
		for _, s := range []string{"sh", "dash", "busybox"} {
			if s == "busybox" {
				s = busybox + " sh"
			}
			args := append(strings.Fields(s), "-n", p)
			if b, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
				t.Errorf("%s -n %s: %v\n%s", s, f, err, b)
			}
		}
	}

	// A fresh root with an empty dpkg database and a shell, no systemd.
	root := freshRoot(t, busybox, false)
	admin := filepath.Join(root, "var/lib/dpkg")
	before := tree(t, root)
	run("dpkg", "--root="+root, "--log=/dev/null", "--install", deb)
	for _, f := range append([]string{"usr/bin/govcloud", "etc/govcloud/controller.env", "etc/govcloud/agent.env", "etc/govcloud/compute.env",
		"usr/share/man/man1/govcloud.1.gz", "usr/share/man/man1/govcloud-controller.1.gz", "usr/share/doc/govcloud/copyright"}, unitPaths("usr/lib/systemd/system/")...) {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("installed package lacks %s: %v", f, err)
		}
	}
	v := run(filepath.Join(root, "usr/bin/govcloud"), "version")
	if !strings.Contains(v, "bpf sha256: ") || strings.Contains(v, "bpf sha256: unknown") {
		t.Errorf("packaged binary's version is not stamped:\n%s", v)
	}
	if first, _, _ := strings.Cut(v, "\n"); first != "govcloud "+version {
		t.Errorf("packaged binary says %q, the package's version is %q", first, version)
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
		verifyBackupDropIn(t, root)
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
	assertNothingLeft(t, root, before)

	t.Run("scripts", func(t *testing.T) { testMaintScripts(t, deb, version, busybox) })
}

var maintScripts = []string{"postinst", "prerm", "postrm"}

// verifyBackupDropIn: the example drop-in that lets the controller write --backup-dir
// (ReadWritePaths=/mnt/backup) passes 'systemd-analyze verify' beside the installed controller
// unit; a broken copy of it does not (so the drop-in is read at all).
func verifyBackupDropIn(t *testing.T, root string) {
	t.Helper()
	example, err := os.ReadFile(filepath.Join(root, "usr/share/doc/govcloud/examples/govcloud-controller.service.d/backup-dir.conf"))
	if err != nil {
		t.Fatalf("the package's example backup drop-in: %v", err)
	}
	if !strings.Contains(string(example), "\nReadWritePaths=/mnt/backup\n") {
		t.Errorf("the example backup drop-in does not make /mnt/backup writable:\n%s", example)
	}
	unit, err := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/govcloud-controller.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		dropIn  string
		wantErr bool
	}{
		{"example", string(example), false},
		{"broken", string(example) + "ReadWritePaths=relative/backup\n", true},
	} {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "govcloud-controller.service.d"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "govcloud-controller.service"), unit, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "govcloud-controller.service.d/backup-dir.conf"), []byte(tc.dropIn), 0o644); err != nil {
			t.Fatal(err)
		}
		script := "mount -t overlay overlay -o lowerdir=" + filepath.Join(root, "usr/bin") + ":/usr/bin /usr/bin && " +
			"MANPATH=" + filepath.Join(root, "usr/share/man") + " systemd-analyze verify " + filepath.Join(dir, "govcloud-controller.service")
		b, err := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script).CombinedOutput()
		complained := err != nil || len(strings.TrimSpace(string(b))) > 0
		if complained != tc.wantErr || (tc.wantErr && !strings.Contains(string(b), "backup-dir.conf")) {
			t.Errorf("systemd-analyze verify of the controller with the %s backup drop-in: %v (want a complaint: %v)\n%s", tc.name, err, tc.wantErr, b)
		}
	}
}

// testMaintScripts installs, reinstalls (an upgrade: prerm upgrade, postinst configure OLD),
// removes and purges the package in a fresh root where systemctl, deb-systemd-helper and
// deb-systemd-invoke are fakes on PATH that log their arguments, with systemd running there
// (/run/systemd/system) or not, and in one without the helpers at all. Each step must succeed
// with exactly the listed calls: daemon-reload after each change, units stopped on remove
// only, never on upgrade, the host agent never restarted, nothing enabled or started, enable
// links purged on purge; and the root must be left as it was.
func testMaintScripts(t *testing.T, deb, version, busybox string) {
	units := "govcloud-controller.service govcloud-agent.service govcloud-compute.service"
	updateState := "postinst: deb-systemd-helper update-state " + units
	reload := func(script string) string { return script + ": systemctl --system daemon-reload" }
	steps := []struct {
		name    string
		dpkg    string
		systemd []string // calls with systemd running
		offline []string // calls in a chroot: the helpers there, systemd not running
	}{
		{"configure", "--install", []string{updateState, reload("postinst")}, []string{updateState}},
		{"upgrade", "--install", []string{updateState, reload("postinst"),
			"postinst: deb-systemd-invoke try-restart govcloud-controller.service govcloud-compute.service"}, []string{updateState}},
		{"remove", "--remove", []string{"prerm: deb-systemd-invoke stop govcloud-compute.service govcloud-agent.service govcloud-controller.service",
			reload("postrm")}, nil},
		{"purge", "--purge", []string{"postrm: deb-systemd-helper purge " + units}, []string{"postrm: deb-systemd-helper purge " + units}},
	}
	for _, variant := range []string{"systemd", "offline", "bare"} {
		t.Run(variant, func(t *testing.T) {
			root := freshRoot(t, busybox, variant == "systemd")
			log := filepath.Join(root, "calls.log")
			if variant != "bare" {
				for _, tool := range []string{"systemctl", "deb-systemd-helper", "deb-systemd-invoke"} {
					fake := "#!/bin/sh\necho \"$DPKG_MAINTSCRIPT_NAME: " + tool + " $*\" >>/calls.log\n"
					if err := os.WriteFile(filepath.Join(root, "usr/sbin", tool), []byte(fake), 0o755); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := os.WriteFile(log, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			before := tree(t, root)
			for _, st := range steps {
				if err := os.Truncate(log, 0); err != nil {
					t.Fatal(err)
				}
				arg := st.dpkg
				if arg != "--install" {
					arg += " govcloud"
				} else {
					arg += " " + deb
				}
				cmd := exec.Command("dpkg", append([]string{"--root=" + root, "--log=/dev/null"}, strings.Fields(arg)...)...)
				cmd.Env = append(os.Environ(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
				b, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("%s: dpkg %s: %v\n%s", st.name, arg, err, b)
				}
				calls, _ := os.ReadFile(log)
				got := strings.Split(strings.TrimSpace(string(calls)), "\n")
				if len(calls) == 0 {
					got = nil
				}
				want := st.offline
				switch variant {
				case "systemd":
					want = st.systemd
				case "bare":
					want = nil
				}
				if !slices.Equal(got, want) {
					t.Errorf("%s (version %s): maintainer scripts called\n%s\nwant\n%s", st.name, version, strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
				for _, c := range got {
					if strings.Contains(c, " enable") || strings.Contains(c, " start ") ||
						(st.name == "upgrade" && strings.Contains(c, "govcloud-agent") && (strings.Contains(c, " stop ") || strings.Contains(c, "restart"))) {
						t.Errorf("%s: %q: units are never enabled or started, the agent never touched on upgrade", st.name, c)
					}
				}
				if st.name == "upgrade" && variant == "systemd" && !strings.Contains(string(b), "restart it (systemctl restart govcloud-agent)") {
					t.Errorf("upgrade: postinst does not tell that the agent still runs the old binary:\n%s", b)
				}
			}
			assertNothingLeft(t, root, before)
		})
	}
}

// freshRoot makes a root with an empty dpkg database, a static busybox as /bin/sh (dpkg runs
// the maintainer scripts chrooted into the root), /dev/null, and /run/systemd/system when
// systemd is to look as if it runs.
func freshRoot(t *testing.T, busybox string, systemd bool) string {
	t.Helper()
	root := t.TempDir()
	admin := filepath.Join(root, "var/lib/dpkg")
	dirs := []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "bin", "usr/sbin", "dev", "tmp"}
	if systemd {
		dirs = append(dirs, "run/systemd/system")
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"status", "available"} {
		if err := os.WriteFile(filepath.Join(admin, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("busybox", filepath.Join(root, "bin/sh")); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("mknod", "-m", "666", filepath.Join(root, "dev/null"), "c", "1", "3").CombinedOutput(); err != nil {
		t.Fatalf("mknod %s/dev/null: %v\n%s", root, err, b)
	}
	return root
}

// requireStatic returns the path of a statically linked tool, which runs in a chroot without
// libraries (busybox-static's busybox, not busybox's).
func requireStatic(t *testing.T, name string) string {
	t.Helper()
	missing := func(why string) {
		msg := fmt.Sprintf("%s: needs busybox-static (installed by 'sudo make deps')", why)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	p, err := exec.LookPath(name)
	if err != nil {
		missing(fmt.Sprintf("no %s on PATH", name))
	}
	f, err := elf.Open(p)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			missing(p + " is dynamically linked")
		}
	}
	return p
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

// assertNothingLeft fails t when root holds a path that was not in before (tree's listing),
// dpkg's own database aside: what a purge must leave.
func assertNothingLeft(t *testing.T, root string, before []string) {
	t.Helper()
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
