package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/config"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
	"github.com/govcloud/govcloud/controlplane/plan"
)

// realizedView is an apply at revision 9 of a department, a segment, a service, a host and
// two VMs, every one realized on both hosts.
func realizedView() waitView {
	vm := func(name, host, reason string) client.Object {
		o := client.Object{Name: name}
		o.Kind, o.Spec = config.KindVM, &config.VMSpec{Department: "lands"}
		o.Status.Host, o.Status.Reason = host, reason
		return o
	}
	net := func(h string, rev int64) hoststatus.Status {
		return hoststatus.Status{Host: h, Revision: rev, Ready: true,
			Segments: map[string]string{"lands-web": "ready"}, Services: map[string]string{"lands-www": "ready"}}
	}
	return waitView{
		Revision: 9,
		Changes: []plan.Change{
			{Kind: config.KindDepartment, Name: "lands", Action: plan.Unchanged},
			{Kind: config.KindSegment, Name: "lands-web", Action: plan.Create},
			{Kind: config.KindHost, Name: "h2", Action: plan.Update},
			{Kind: config.KindVM, Name: "vm1", Action: plan.Create},
			{Kind: config.KindVM, Name: "vm2", Action: plan.Create},
			{Kind: config.KindService, Name: "lands-www", Action: plan.Create},
		},
		Objects: map[config.Key]client.Object{
			{Kind: config.KindVM, Name: "vm1"}: vm("vm1", "h1", ""),
			{Kind: config.KindVM, Name: "vm2"}: vm("vm2", "h2", ""),
		},
		Network: map[string]hoststatus.Status{"h1": net("h1", 9), "h2": net("h2", 11)},
		Compute: map[string]compute.Report{
			"h1": {Host: "h1", Revision: 9, VMs: []compute.VMStatus{{Name: "vm1", State: compute.Running}}},
			"h2": {Host: "h2", Revision: 10, VMs: []compute.VMStatus{{Name: "vm2", State: compute.Running}}},
		},
		Hosts: []string{"h1", "h2"},
	}
}

func TestJudge(t *testing.T) {
	for _, tc := range []struct {
		desc                   string
		edit                   func(v *waitView)
		waiting, faults, fatal []string // each substring must be in one entry; the counts must match
	}{
		{desc: "all realized, some hosts past the revision", edit: func(*waitView) {}},
		{desc: "one VM pending with the controller's reason", edit: func(v *waitView) {
			o := v.Objects[config.Key{Kind: config.KindVM, Name: "vm2"}]
			o.Status.Host, o.Status.Reason = "", "no host with 4 free vCPUs among 2 matching `rack=r2`"
			v.Objects[config.Key{Kind: config.KindVM, Name: "vm2"}] = o
		}, fatal: []string{"vm vm2 pending: no host with 4 free vCPUs among 2 matching `rack=r2`"}},
		{desc: "one host's network agent behind the revision", edit: func(v *waitView) {
			s := v.Network["h1"]
			s.Revision = 8
			v.Network["h1"] = s
		}, waiting: []string{
			"department lands: host h1 network agent at revision 8 < 9",
			"segment lands-web: host h1 network agent at revision 8 < 9",
			"service lands-www: host h1 network agent at revision 8 < 9"}},
		{desc: "a compute agent behind the revision", edit: func(v *waitView) {
			r := v.Compute["h2"]
			r.Revision = 7
			v.Compute["h2"] = r
		}, waiting: []string{"vm vm2: host h2 compute agent at revision 7 < 9"}},
		{desc: "a VM in error", edit: func(v *waitView) {
			v.Compute["h1"].VMs[0] = compute.VMStatus{Name: "vm1", State: compute.Error, Message: `image "debian" not on this host`}
		}, faults: []string{`vm vm1 on host h1: error: image "debian" not on this host`}},
		{desc: "a VM still being made", edit: func(v *waitView) {
			v.Compute["h1"].VMs[0] = compute.VMStatus{Name: "vm1", State: compute.Creating}
		}, waiting: []string{"vm vm1: creating on host h1"}},
		{desc: "a host not ready naming the segment", edit: func(v *waitView) {
			s := v.Network["h2"]
			s.Ready, s.Error = false, `guest port gv1 of VM vm2 on segment "lands-web": Link not found`
			s.Segments = map[string]string{"lands-web": "not ready: " + s.Error}
			v.Network["h2"] = s
		}, faults: []string{`host h2: segment lands-web not ready: guest port gv1 of VM vm2 on segment "lands-web"`, `host h2 not ready: guest port`}},
		{desc: "no compute report from a host", edit: func(v *waitView) {
			delete(v.Compute, "h1")
		}, waiting: []string{"vm vm1: no report from the compute agent of host h1"}},
		{desc: "a service not reported yet", edit: func(v *waitView) {
			delete(v.Network["h1"].Services, "lands-www")
		}, waiting: []string{"service lands-www: not reported by host h1"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			v := realizedView()
			tc.edit(&v)
			got := judge(v)
			check := func(what string, have []string, want []string) {
				t.Helper()
				if len(have) != len(want) {
					t.Errorf("%s: %q, want %d entries like %q", what, have, len(want), want)
					return
				}
				for _, w := range want {
					found := false
					for _, h := range have {
						found = found || strings.Contains(h, w)
					}
					if !found {
						t.Errorf("%s: %q has none with %q", what, have, w)
					}
				}
			}
			values := func(m map[string]string) []string {
				var out []string
				for _, v := range m {
					out = append(out, v)
				}
				return out
			}
			check("waiting", got.Waiting, tc.waiting)
			check("faults", values(got.Faults), tc.faults)
			check("fatal", values(got.Fatal), tc.fatal)
			if want := len(tc.waiting)+len(tc.faults)+len(tc.fatal) == 0; got.Done() != want {
				t.Errorf("Done() = %v, want %v", got.Done(), want)
			}
		})
	}
}

// fakeClock drives waitRealized without sleeping: each Sleep moves the time on.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }
func (c *fakeClock) sleep(_ context.Context, d time.Duration) error {
	c.t = c.t.Add(d)
	return nil
}

func TestWaitRealized(t *testing.T) {
	res := &client.ApplyResult{Revision: 9, Changes: realizedView().Changes}
	behind := func(v *waitView) { s := v.Network["h1"]; s.Revision = 8; v.Network["h1"] = s }
	vmError := func(v *waitView) {
		v.Compute["h1"].VMs[0] = compute.VMStatus{Name: "vm1", State: compute.Error, Message: "qemu exited"}
	}
	pending := func(v *waitView) {
		o := v.Objects[config.Key{Kind: config.KindVM, Name: "vm1"}]
		o.Status.Host, o.Status.Reason = "", "no host matches hostSelector rack=r9"
		v.Objects[config.Key{Kind: config.KindVM, Name: "vm1"}] = o
	}
	for _, tc := range []struct {
		desc    string
		steps   []func(*waitView) // the view at each poll; the last one repeats
		wantErr string            // "" = success
		timeout bool
		took    time.Duration // fake time when it returned
	}{
		{desc: "realized after two polls", steps: []func(*waitView){behind, behind, func(*waitView) {}}, took: 2 * time.Second},
		{desc: "a pending VM fails at once", steps: []func(*waitView){pending}, wantErr: "vm vm1 pending: no host matches hostSelector rack=r9"},
		{desc: "an error that clears is no failure", steps: []func(*waitView){vmError, vmError, func(*waitView) {}}, took: 2 * time.Second},
		{desc: "an error that lasts fails after --fail-after", steps: []func(*waitView){vmError},
			wantErr: "vm vm1 on host h1: error: qemu exited", took: 10 * time.Second},
		{desc: "a host behind until the timeout", steps: []func(*waitView){behind}, timeout: true,
			wantErr: "segment lands-web: host h1 network agent at revision 8 < 9", took: time.Minute},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			clock := &fakeClock{t: time.Date(2026, 12, 6, 7, 0, 0, 0, time.UTC)}
			start := clock.t
			n := 0
			src := func(context.Context) (waitView, error) {
				v := realizedView()
				tc.steps[min(n, len(tc.steps)-1)](&v)
				n++
				return v, nil
			}
			var out bytes.Buffer
			err := waitRealized(context.Background(), &out, res, src,
				waitOptions{Timeout: time.Minute, FailAfter: 10 * time.Second, Poll: time.Second, Progress: 5 * time.Second, Now: clock.now, Sleep: clock.sleep})
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("failed: %v\n%s", err, out.String())
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one with %q\n%s", err, tc.wantErr, out.String())
			case errors.Is(err, errWaitTimeout) != tc.timeout:
				t.Errorf("timeout: %v, want %v", errors.Is(err, errWaitTimeout), tc.timeout)
			}
			if took := clock.t.Sub(start); took != tc.took {
				t.Errorf("returned after %s, want %s", took, tc.took)
			}
			if tc.wantErr == "" && !strings.Contains(out.String(), "Realized: every object at revision 9") {
				t.Errorf("no final line:\n%s", out.String())
			}
			if tc.timeout {
				// Progress at most every 5 s: 60 s of waiting print 12 or 13 times, not 60.
				if p := strings.Count(out.String(), "waiting ("); p < 12 || p > 13 {
					t.Errorf("%d progress reports in a minute, want one every 5 s:\n%s", p, out.String())
				}
			}
		})
	}
}
