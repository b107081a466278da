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
