package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/config"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
	"github.com/govcloud/govcloud/controlplane/plan"
)

func statusOf(t *testing.T, reports map[string]hoststatus.Status) *client.Status {
	t.Helper()
	st := &client.Status{ID: "c1", Revision: 9, Objects: map[string]int{}, Hosts: map[string]json.RawMessage{}}
	for h, s := range reports {
		b, err := json.Marshal(hoststatus.Report{Host: h, Time: time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC), Status: s})
		if err != nil {
			t.Fatal(err)
		}
		st.Hosts[h] = b
	}
	return st
}

// Issue 22: one missing guest port repeated the same multi-line error under every segment of
// the host (9 lines), continuation lines unindented. Each fault is now printed once, where it
// is, indented.
func TestStatusReportsEachFaultOnce(t *testing.T) {
	hostErr := "host network: guest port gv3f2a of VM lands-web-1 on segment lands-web: link not found\nlast seen 2026-12-05T08:59:00Z"
	notReady := "not ready: " + hostErr
	st := statusOf(t, map[string]hoststatus.Status{"gc-host1": {
		Host: "gc-host1", Revision: 9, Ready: false, Error: hostErr + "\nload balancer: boom", XDP: "attached to eth0",
		Segments: map[string]string{"lands-web": notReady, "health-web": notReady, "finance-web": notReady},
		Services: map[string]string{"lands-www": "not ready: load balancer: boom", "health-www": "not ready: vip routes: gone\nsecond line"},
	}})
	var out bytes.Buffer
	writeStatus(&out, st, nil, nil)
	got := out.String()
	if n := strings.Count(got, "link not found"); n != 1 {
		t.Errorf("the guest port fault printed %d times, want once:\n%s", n, got)
	}
	for _, want := range []string{
		"host gc-host1: NOT READY (revision 9, last report 2026-12-05T09:00:00Z)\n",
		"  error: host network: guest port gv3f2a of VM lands-web-1 on segment lands-web: link not found\n" +
			"         last seen 2026-12-05T08:59:00Z\n" +
			"         load balancer: boom\n",
		"  service health-www: not ready: vip routes: gone\n" + strings.Repeat(" ", len("  service health-www: ")) + "second line\n",
		"  not ready because of that error: segment finance-web, segment health-web, segment lands-web, service lands-www\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("status lacks\n%q\ngot\n%s", want, got)
		}
	}
	// The agent's own wording (lab): the error names the segment; that is where the fault is.
	named := "host network: guest gv9a3bbeee on segment \"finance-web\": guest port gv9a3bbeee: Link not found"
	st = statusOf(t, map[string]hoststatus.Status{"gc-host1": {Ready: false, Error: named,
		Segments: map[string]string{"lands-web": "not ready: " + named, "finance-web": "not ready: " + named}}})
	out.Reset()
	writeStatus(&out, st, nil, nil)
	got = out.String()
	for _, want := range []string{
		"  at: segment finance-web\n  also held back until it is fixed: segment lands-web\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("status lacks\n%q\ngot\n%s", want, got)
		}
	}
	for _, l := range strings.Split(strings.TrimRight(got, "\n"), "\n") {
		if strings.HasPrefix(l, "last seen") || strings.HasPrefix(l, "second line") {
			t.Errorf("continuation line not indented: %q", l)
		}
	}
}

// Issue 22: after weight: 0, status showed no weight or draining state. It now lists each
// draining backend with the connections the load balancers still hold for it, and says when
// none are left.
func TestStatusShowsDrains(t *testing.T) {
	zero, one := 0, 1
	obj := func(kind, name string, spec config.Spec, status config.Status) client.Object {
		return client.Object{Object: config.Object{Kind: kind, Metadata: config.Metadata{Name: name}, Spec: spec, Status: status}, Name: name}
	}
	objs := []client.Object{
		obj(config.KindHost, "gc-host1", &config.HostSpec{Address: "198.18.0.11"}, config.Status{}),
		obj(config.KindHost, "gc-host2", &config.HostSpec{Address: "198.18.0.12"}, config.Status{}),
		obj(config.KindVM, "finance-web-1", &config.VMSpec{Department: "finance"}, config.Status{Host: "gc-host1"}),
		obj(config.KindVM, "finance-web-2", &config.VMSpec{Department: "finance"}, config.Status{Host: "gc-host2"}),
		obj(config.KindService, "finance-www", &config.ServiceSpec{Department: "finance", Mode: "dsr",
			Backends: []config.Backend{{VM: "finance-web-1", Weight: &zero}, {VM: "finance-web-2", Weight: &one}}}, config.Status{}),
	}
	h1, h2 := netip.MustParseAddr("198.18.0.11"), netip.MustParseAddr("198.18.0.12")
	for _, tc := range []struct {
		name    string
		c1, c2  []hoststatus.Connections
		want    string
		notWant string
	}{
		{"connections left", []hoststatus.Connections{{Service: "finance-www", Target: h1, Active: 2}, {Service: "finance-www", Target: h2, Active: 5}},
			[]hoststatus.Connections{{Service: "finance-www", Target: h1, Active: 1}},
			"  finance-www/finance-web-1 via its host gc-host1 (198.18.0.11): 3 active connection(s) left [2 on gc-host1, 1 on gc-host2]\n", "safe to remove"},
		{"none left (a host balancing to no target lists none)", []hoststatus.Connections{{Service: "finance-www", Target: h1}}, []hoststatus.Connections{},
			"finance-www/finance-web-1 via its host gc-host1 (198.18.0.11): no active connections left: safe to remove [0 on gc-host1, 0 on gc-host2]", ""},
		{"a host whose agent does not count", []hoststatus.Connections{{Service: "finance-www", Target: h1}}, nil,
			"0 active connection(s) known; 1 host(s) report no count (?) [0 on gc-host1, ? on gc-host2]", "safe to remove"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svcs := map[string]string{"finance-www": "ready"}
			st := statusOf(t, map[string]hoststatus.Status{"gc-host1": {Ready: true, Services: svcs, Connections: tc.c1}, "gc-host2": {Ready: true, Services: svcs, Connections: tc.c2}})
			var out bytes.Buffer
			writeStatus(&out, st, objs, nil)
			got := out.String()
			if !strings.Contains(got, "draining (weight 0;") || !strings.Contains(got, tc.want) || (tc.notWant != "" && strings.Contains(got, tc.notWant)) {
				t.Fatalf("status\n%s\nwant %q (and not %q)", got, tc.want, tc.notWant)
			}
			if strings.Contains(got, "finance-web-2") {
				t.Errorf("a backend with weight 1 listed as draining:\n%s", got)
			}
		})
	}
}

// Issue 22: `get services` said only backends=2 after a drain; it lists weights and marks
// the drained one.
func TestGetServicesShowsWeights(t *testing.T) {
	zero, two := 0, 2
	s := &config.ServiceSpec{Backends: []config.Backend{{VM: "lands-web-1"}, {VM: "lands-web-2", Weight: &zero}, {Address: "198.18.20.9", Weight: &two}}}
	if got, want := backendList(s), "lands-web-1(w1),lands-web-2(w0,draining),198.18.20.9(w2)"; got != want {
		t.Fatalf("backends %q, want %q", got, want)
	}
	var out bytes.Buffer
	o := client.Object{Object: config.Object{Kind: config.KindService, Spec: s}, Name: "lands-www", VIP: "198.19.255.1"}
	if err := printTable(&out, []client.Object{o}); err != nil || !strings.Contains(out.String(), "backends=lands-web-1(w1),lands-web-2(w0,draining)") {
		t.Fatalf("table %q %v", out.String(), err)
	}
}

// Issue 23: a VM that no host takes showed only host=(pending). `get vms` and `status` now
// give the controller's reason, and status lists a VM kept on a host over its capacity.
func TestUnschedulableVMSaysWhy(t *testing.T) {
	noRoom := `no host with 4 free vCPUs for VM "big" among 2 hosts matching rack=r2 (h1: 2 vCPUs free; h2: 3 vCPUs free)`
	noMatch := `no host for VM "lost": none of 2 hosts matches hostSelector rack=r9`
	over := "host h1 over capacity: its VMs take 4 vCPUs of 2 (capacity × overcommit); kept there, not moved"
	vm := func(name string, st config.Status) client.Object {
		return client.Object{Object: config.Object{Kind: config.KindVM, Metadata: config.Metadata{Name: name}, Spec: &config.VMSpec{Department: "a", VCPUs: 4, MemoryMiB: 512}, Status: st}, Name: name, Department: "a"}
	}
	off := vm("off", config.Status{Host: "h2"})
	off.Spec = &config.VMSpec{Department: "a", VCPUs: 1, MemoryMiB: 256, PowerState: config.PowerStopped}
	objs := []client.Object{vm("lost", config.Status{Reason: noMatch}), vm("big", config.Status{Reason: noRoom}),
		vm("ok", config.Status{Host: "h2"}), vm("kept", config.Status{Host: "h1", Reason: over}), off}
	var table bytes.Buffer
	if err := printTable(&table, objs); err != nil {
		t.Fatal(err)
	}
	var status bytes.Buffer
	writeStatus(&status, statusOf(t, nil), objs, nil)
	for _, c := range []struct{ out, want string }{
		{table.String(), "host=(pending) vcpus=4 mem=512MiB addresses= reason: " + noRoom + "\n"},
		{table.String(), "host=(pending) vcpus=4 mem=512MiB addresses= reason: " + noMatch + "\n"},
		{table.String(), "host=h1 vcpus=4 mem=512MiB addresses= reason: " + over + "\n"},
		{table.String(), "host=h2 vcpus=4 mem=512MiB addresses=\n"},
		{table.String(), "host=h2 vcpus=1 mem=256MiB addresses= power=stopped\n"},
		{status.String(), "vm big: pending: " + noRoom + "\nvm kept: on h1: " + over + "\nvm lost: pending: " + noMatch + "\n"},
	} {
		if !strings.Contains(c.out, c.want) {
			t.Errorf("output lacks\n%q\ngot\n%s", c.want, c.out)
		}
	}
	if strings.Contains(status.String(), "vm ok") {
		t.Errorf("status lists a VM placed within capacity:\n%s", status.String())
	}
	// apply says it too, also for a VM in the input that did not change.
	var apply bytes.Buffer
	printChanges(&apply, &client.ApplyResult{Changes: []plan.Change{{Kind: "VM", Name: "big", Action: "create", Reason: noRoom},
		{Kind: "VM", Name: "kept", Action: "unchanged", Reason: over}, {Kind: "VM", Name: "ok", Action: "unchanged"}}}, "applied")
	want := "+ create VM big\n    placement: " + noRoom + "\n= unchanged VM kept\n    placement: " + over + "\napplied:"
	if !strings.HasPrefix(apply.String(), want) {
		t.Errorf("apply output\n%s\nwant it to start\n%s", apply.String(), want)
	}
}

// Issue 23: two netns compute agents with default flags shared one state directory and
// deleted each other's guests; the default is now one directory per host.
func TestNetnsStateDirPerHost(t *testing.T) {
	for _, tc := range []struct {
		flag, host, want, wantErr string
	}{
		{"", "gc-host1", "/run/govcloud/compute/netns/gc-host1", ""},
		{"", "gc-host2", "/run/govcloud/compute/netns/gc-host2", ""},
		{"/srv/g", "gc-host1", "/srv/g", ""},
		{"", "../etc", "", `--host "../etc"`},
		{"", "..", "", `--host ".."`},
		{"", "a\\b", "", `--host "a\\b"`},
		{"", "", "", `--host ""`},
	} {
		got, err := netnsStateDir(tc.flag, tc.host)
		if got != tc.want || (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("netnsStateDir(%q, %q) = %q, %v; want %q, error with %q", tc.flag, tc.host, got, err, tc.want, tc.wantErr)
		}
	}
}

// Issue 23: `get volumes` names the host a volume lives on (a VM using it is placed there).
func TestGetVolumesShowsHost(t *testing.T) {
	vol := func(name, host string) client.Object {
		return client.Object{Object: config.Object{Kind: config.KindVolume, Metadata: config.Metadata{Name: name},
			Spec: &config.VolumeSpec{Department: "a", SizeGiB: 2}, Status: config.Status{Host: host}}, Name: name, Department: "a"}
	}
	var out bytes.Buffer
	if err := printTable(&out, []client.Object{vol("data", "h1"), vol("fresh", "")}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"data   a           size=2GiB host=h1\n", "fresh  a           size=2GiB host=(none yet)\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestStatusShowsVersionSkew: status prints the controller's build and names each host whose
// agent runs another one (version skew was invisible); a host on the same build, or one
// whose agent reports none (older agents), gets no line.
func TestStatusShowsVersionSkew(t *testing.T) {
	st := statusOf(t, map[string]hoststatus.Status{
		"gc-host1": {Ready: true, Version: "v0.4.0 (abc1234)"},
		"gc-host2": {Ready: true, Version: "v0.3.9 (0ddba11)"},
		"gc-host3": {Ready: true},
		"gc-host4": {Ready: true, Version: "0.0.0~gitabc1234 (abc1234)"}, // the package's build of the same commit
	})
	st.Version = json.RawMessage(`{"version":"v0.4.0","commit":"abc1234"}`)
	var out bytes.Buffer
	writeStatus(&out, st, nil, nil)
	got := out.String()
	if !strings.Contains(got, "version:    v0.4.0 (abc1234)\n") {
		t.Errorf("status lacks the controller's version:\n%s", got)
	}
	if n := strings.Count(got, "differs from the controller's"); n != 1 || !strings.Contains(got, "  agent version v0.3.9 (0ddba11) differs from the controller's v0.4.0 (abc1234)\n") {
		t.Errorf("want one skew line, for gc-host2:\n%s", got)
	}
}

func TestSameBuild(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"v0.4.0 (abc1234)", "v0.4.0 (abc1234)", true},
		{"0.0.0~gitabc1234 (abc1234)", "abc1234 (abc1234)", true},
		{"v0.4.0 (abc1234)", "v0.4.0 (0ddba11)", false},
		{"v0.4.0 (abc1234-dirty)", "v0.4.0 (abc1234)", false},
		{"devel (unknown)", "devel (unknown)", true},
		{"devel (unknown)", "v0.4.0 (unknown)", false},
		{"v0.4.0", "v0.4.0 (abc1234)", false},
	} {
		if got := sameBuild(tc.a, tc.b); got != tc.want {
			t.Errorf("sameBuild(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
