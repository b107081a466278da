package main

import (
	"bytes"
	"encoding/json"
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
		if derr := ns.Do(func() error { err = runPreflight(&out, tc.uplink); return nil }); derr != nil {
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

// TestVersion: 'govcloud version -o json' is the build information, and --version prints
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
	text, flag := run("version"), run("--version")
	if text != flag || !strings.HasPrefix(text, "govcloud ") || !strings.Contains(text, "bpf sha256: ") {
		t.Errorf("version %q, --version %q", text, flag)
	}
}

// TestAgentFlagsChecked: the agent's flags that need neither root nor the network are
// checked before anything else, every bad one named with its value: --check prints one BAD
// line each (and still runs the kernel checks); without --check the agent refuses to start
// before it dials the controller.
func TestAgentFlagsChecked(t *testing.T) {
	bad := []struct {
		args []string
		want string
	}{
		{[]string{"--management", "198.18.0.0/33"}, `--management`},
		{[]string{"--management", "not-an-address"}, `not-an-address`},
		{[]string{"--tenant-allow", "icmp:198.18.0.53:53"}, `--tenant-allow`},
		{[]string{"--tenant-allow", "udp:198.18.0.53"}, `--tenant-allow`},
		{[]string{"--maglev-tables", "sometimes"}, `--maglev-tables "sometimes"`},
		{[]string{"--metrics-listen", "127.0.0.1"}, `--metrics-listen "127.0.0.1": want host:port`},
		{[]string{"--metrics-listen", "127.0.0.1:9480,:http"}, `--metrics-listen ":http": port "http" is not a number`},
		{[]string{"--metrics-listen", "127.0.0.1:65536"}, `port "65536"`},
	}
	run := func(args ...string) (string, error) {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"agent", "--state-dir", t.TempDir(), "--controller", "https://198.18.0.1:1"}, args...))
		err := root.Execute()
		return out.String(), err
	}
	for _, tc := range bad {
		if _, err := run(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("agent %v: error %v, want one naming %q", tc.args, err, tc.want)
		}
	}
	// --check with six bad values at once (the slice flags keep each; --metrics-listen its
	// last): each named on a BAD line.
	var all []string
	for _, tc := range bad[:5] {
		all = append(all, tc.args...)
	}
	all = append(all, bad[len(bad)-1].args...)
	out, err := run(append([]string{"--check"}, all...)...)
	if err == nil || !strings.Contains(err.Error(), "6 bad flag value(s)") {
		t.Errorf("agent --check with 6 bad flags: error %v", err)
	}
	for _, tc := range append(bad[:5:5], bad[len(bad)-1]) {
		if !strings.Contains(out, "BAD      ") || !strings.Contains(out, tc.want) {
			t.Errorf("agent --check: output does not name %q:\n%s", tc.want, out)
		}
	}
	// Good values of each pass the flag check.
	out, _ = run("--check", "--management", "198.18.0.0/15", "--management", "2001:db8::1", "--tenant-allow", "udp:198.18.0.53:53",
		"--tenant-allow", "tcp:[2001:db8::53]:53", "--maglev-tables", "local", "--metrics-listen", "127.0.0.1:9480,[::1]:9480,:0")
	if !strings.Contains(out, "ok       flags\n") || strings.Contains(out, "BAD") {
		t.Errorf("agent --check with good flags:\n%s", out)
	}
}
