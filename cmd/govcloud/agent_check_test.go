package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/internal/buildinfo"
)

// TestPreflight: in a fresh namespace, a veth uplink runs XDP natively, lo does not, and a
// missing interface is named; every other check passes on this kernel (6.18), and the
// failure message names each missing feature.
func TestPreflight(t *testing.T) {
	netnstest.RequirePrivileged(t)
	ns := netnstest.New(t, "gc-pf")
	peer := netnstest.New(t, "gc-pfp")
	if err := netnstest.Veth(ns, "up0", peer, "up1"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		uplink  string
		missing []string // names in the error; nil: passes
		out     string
	}{
		{"up0", nil, "ok       XDP native on the uplink"},
		{"", nil, "skipped  XDP native on the uplink: give --uplink IF\n"},
		{"lo", []string{"XDP native on the uplink"}, "driver of lo has no native XDP"},
		{"nosuch0", []string{"XDP native on the uplink"}, `uplink "nosuch0": no such interface`},
	} {
		var out bytes.Buffer
		var err error
		if derr := ns.Do(func() error {
			err = runPreflight(&out, preflightInput{uplink: tc.uplink, pinRoot: "/sys/fs/bpf/govcloud"})
			return nil
		}); derr != nil {
			t.Fatal(derr)
		}
		for _, m := range tc.missing {
			if err == nil || !strings.Contains(err.Error(), m) {
				t.Errorf("uplink %q: error %v does not name %q", tc.uplink, err, m)
			}
		}
		if tc.missing == nil && err != nil {
			t.Errorf("uplink %q: %v\n%s", tc.uplink, err, out.String())
		}
		if !strings.Contains(out.String(), tc.out) {
			t.Errorf("uplink %q: output lacks %q:\n%s", tc.uplink, tc.out, out.String())
		}
		if n := strings.Count("\n"+out.String(), "\nok "); n < 5 {
			t.Errorf("uplink %q: fewer than 5 checks passed on this kernel:\n%s", tc.uplink, out.String())
		}
	}
}

// TestVersion: 'govcloud version -o json' (and yaml) is the build information, and --version prints
// the same text as 'govcloud version'.
func TestVersion(t *testing.T) {
	run := func(args ...string) string {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out.String()
	}
	var got buildinfo.Info
	if err := json.Unmarshal([]byte(run("version", "-o", "json")), &got); err != nil {
		t.Fatal(err)
	}
	if want := buildinfo.Get(); got != want || got.Go == "" || got.Version == "" || got.BPFSHA256 == "" {
		t.Errorf("version -o json %+v, want %+v", got, want)
	}
	if y := run("version", "-o", "yaml"); !strings.Contains(y, "bpfSha256: "+got.BPFSHA256) && !strings.Contains(y, got.BPFSHA256) {
		t.Errorf("version -o yaml does not hold the eBPF hash %s:\n%s", got.BPFSHA256, y)
	}
	text, flag := run("version"), run("--version")
	if text != flag || !strings.HasPrefix(text, "govcloud ") || !strings.Contains(text, "bpf sha256: ") {
		t.Errorf("version %q, --version %q", text, flag)
	}
}

// TestAgentFlagsChecked: the agent's flags that need neither root nor the network are
// checked before anything else, every bad one named with its value: --check prints one BAD
// line each (and still runs the kernel checks); without --check the agent refuses to start
// before it dials the controller or touches the dataplane.
func TestAgentFlagsChecked(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		args []string
		want string
	}{
		{[]string{"--management", "198.18.0.0/33"}, `--management`},
		{[]string{"--management", "not-an-address"}, `not-an-address`},
		{[]string{"--tenant-allow", "icmp:198.18.0.53:53"}, `--tenant-allow`},
		{[]string{"--tenant-allow", "udp:198.18.0.53"}, `--tenant-allow`},
		{[]string{"--maglev-tables", "sometimes"}, `--maglev-tables "sometimes"`},
		{[]string{"--usage-interval", "-5s"}, `--usage-interval -5s: want 1s or more`},
		{[]string{"--usage-interval", "0s"}, `--usage-interval 0s`},
		{[]string{"--ca", missing}, `CA file ` + missing},
		{[]string{"--join-token-file", missing}, `--join-token-file: open ` + missing},
		{[]string{"--token-file", empty}, `--token-file ` + empty + `: empty`},
		{[]string{"--controller", "not a url"}, `controller URL "not a url"`},
		{[]string{"--controller", "https://198.18.0.1:8480,ftp://198.18.0.2"}, `scheme "ftp"`},
		{[]string{"--controller-file", missing}, `--controller-file: open ` + missing},
		{[]string{"--metrics-listen", "127.0.0.1"}, `--metrics-listen "127.0.0.1": want host:port`},
		{[]string{"--metrics-listen", "127.0.0.1:9480,:http"}, `--metrics-listen ":http": port "http" is not a number`},
		{[]string{"--metrics-listen", "127.0.0.1:65536"}, `port "65536"`},
		{[]string{"--metrics-listen", "999.1.1.1:80"}, `host "999.1.1.1" is not an IP address`},
		{[]string{"--metrics-listen", "nosuch.invalid:9480"}, `host "nosuch.invalid"`},
		{[]string{"--metrics-listen", "127.0.0.1:9480,127.0.0.1:9480"}, `"127.0.0.1:9480": given twice`},
	}
	run := func(args ...string) (string, error) {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"agent", "--state-dir", t.TempDir(), "--pin-root", "/sys/fs/bpf/govcloud-flags-test"}, args...))
		err := root.Execute()
		return out.String(), err
	}
	for _, tc := range bad {
		args := tc.args
		if args[0] != "--controller" && args[0] != "--controller-file" {
			args = append([]string{"--controller", "https://198.18.0.1:1"}, args...)
		}
		if _, err := run(args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("agent %v: error %v, want one naming %q", tc.args, err, tc.want)
		}
	}
	// --check with many bad values at once, three in one --metrics-listen list: each named on
	// a BAD line of its own.
	out, err := run("--check", "--controller", "not a url", "--management", "198.18.0.0/33", "--management", "not-an-address",
		"--tenant-allow", "icmp:198.18.0.53:53", "--maglev-tables", "sometimes", "--usage-interval", "-5s", "--ca", missing,
		"--metrics-listen", "127.0.0.1:x,[::1]:y,::2:3")
	if err == nil || err.Error() != "preflight: 10 bad flag value(s)" {
		t.Errorf("agent --check with 10 bad values: error %v\n%s", err, out)
	}
	for _, want := range []string{`controller URL "not a url"`, `"198.18.0.0/33"`, `"not-an-address"`, `"icmp:198.18.0.53:53"`, `"sometimes"`,
		`--usage-interval -5s`, `CA file ` + missing, `"127.0.0.1:x": port "x"`, `"[::1]:y": port "y"`, `"::2:3": want host:port`} {
		if !strings.Contains(out, "BAD      ") || !strings.Contains(out, want) {
			t.Errorf("agent --check: output does not name %q:\n%s", want, out)
		}
	}
	// Good values of each pass the flag check.
	tok := filepath.Join(t.TempDir(), "join-token")
	if err := os.WriteFile(tok, []byte("gcj_x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ = run("--check", "--controller", "https://198.18.0.1:8480, https://[2001:db8::1]:8480/", "--management", "198.18.0.0/15", "--management", "2001:db8::1",
		"--tenant-allow", "udp:198.18.0.53:53", "--tenant-allow", "tcp:[2001:db8::53]:53", "--maglev-tables", "local", "--usage-interval", "1s",
		"--join-token-file", tok, "--metrics-listen", "127.0.0.1:9480,[::1]:9480,:0,localhost:9481")
	if !strings.Contains(out, "ok       flags\n") || strings.Contains(out, "BAD") {
		t.Errorf("agent --check with good flags:\n%s", out)
	}
	// A host that has its certificate needs no join token: a used one may be gone.
	certDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(certDir, "host.crt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ = run("--check", "--controller", "https://198.18.0.1:8480", "--cert-dir", certDir, "--join-token-file", missing)
	if !strings.Contains(out, "ok       flags\n") || strings.Contains(out, "BAD") {
		t.Errorf("agent --check with a host certificate and its join token gone:\n%s", out)
	}
}

// TestPinRootOnBPFFS: the preflight checks the bpf filesystem where --pin-root is, not
// /sys/fs/bpf: a pin root still to be made counts by its nearest existing parent.
func TestPinRootOnBPFFS(t *testing.T) {
	if err := onBPFFS("/sys/fs/bpf"); err != nil {
		msg := fmt.Sprintf("no bpf filesystem at /sys/fs/bpf (kernel CONFIG_BPF_SYSCALL; mount -t bpf bpf /sys/fs/bpf): %v", err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg) // CI mounts it: the lab's and the dataplane's tests pin there
		}
		t.Skip(msg)
	}
	for _, tc := range []struct {
		dir  string
		want string // in the error; "" = on bpffs
	}{
		{"/sys/fs/bpf", ""},
		{"/sys/fs/bpf/govcloud-not-yet/lb", ""},
		{"/sys/fs/bpf/../bpf/x", ""},
		{t.TempDir(), "is not a bpf filesystem"},
		{"/nonexistent-pin-root/x", `--pin-root /nonexistent-pin-root/x: / is not a bpf filesystem`},
		{"", "skipped"},
	} {
		err := onBPFFS(tc.dir)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("onBPFFS(%q) = %v, want %q", tc.dir, err, tc.want)
		}
	}
}
