package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/config"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
	"github.com/govcloud/govcloud/controlplane/plan"
)

// waitView is what 'apply --wait' judges at one moment: the revision the apply committed, the
// objects it applied (or deleted), the stored objects (for VM placement) and the hosts' last
// reports. It is plain data so that judge can be tested without a controller.
type waitView struct {
	Revision int64
	Changes  []plan.Change
	Objects  map[config.Key]client.Object // stored objects, by key
	Network  map[string]hoststatus.Status // network agent reports, by host
	Compute  map[string]compute.Report    // compute agent reports, by host (absent: none sent)
	Hosts    []string                     // the Host objects' names, sorted
}

// waitVerdict is judge's answer. Waiting lists what is not realized yet ("segment lands-web
// on host gc-host2: host at revision 7 < 9"); Faults lists what failed, keyed by a stable
// name so a fault can be timed ("vm lands-web-1") with its reason. Fatal faults (a VM the
// controller could not place) fail at once: nothing retries them until another write.
type waitVerdict struct {
	Waiting []string
	Faults  map[string]string
	Fatal   map[string]string
}

// Done says whether everything applied is realized.
func (v waitVerdict) Done() bool {
	return len(v.Waiting) == 0 && len(v.Faults) == 0 && len(v.Fatal) == 0
}

// judge decides, for every applied object, whether the hosts realize it at (or after) the
// applied revision:
//   - Segment, Service: every host's network agent reports it "ready";
//   - Host: its network agent reports ready;
//   - Department, SecurityPolicy: every host's network agent is at the revision;
//   - Volume, and any deleted object: every host's agents (network and compute) are at it;
//   - VM: placed (else fatal: the controller's reason) and its host's compute agent reports it
//     running (stopped when its spec asks powerState: stopped); state error is a fault;
//   - AddressPool, PriceList and kinds the hosts never see: realized once committed.
//
// A host whose network agent reports not ready at the revision is a fault for the segments
// and services it names; a report behind the revision is waited on.
func judge(v waitView) waitVerdict {
	out := waitVerdict{Faults: map[string]string{}, Fatal: map[string]string{}}
	wait := func(format string, args ...any) { out.Waiting = append(out.Waiting, fmt.Sprintf(format, args...)) }
	// netAt says whether host h's network agent is at the revision, noting why not.
	netAt := func(what, h string) (hoststatus.Status, bool) {
		st, ok := v.Network[h]
		switch {
		case !ok:
			wait("%s: no report from the network agent of host %s", what, h)
			return st, false
		case st.Revision < v.Revision:
			wait("%s: host %s network agent at revision %d < %d", what, h, st.Revision, v.Revision)
			return st, false
		}
		return st, true
	}
	computeAt := func(what, h string) (compute.Report, bool) {
		r, ok := v.Compute[h]
		switch {
		case !ok:
			wait("%s: no report from the compute agent of host %s (is it running with --report-status?)", what, h)
			return r, false
		case r.Revision < v.Revision:
			wait("%s: host %s compute agent at revision %d < %d", what, h, r.Revision, v.Revision)
			return r, false
		}
		return r, true
	}
	for _, c := range v.Changes {
		what := strings.ToLower(c.Kind) + " " + c.Name
		if c.Action == plan.Delete {
			for _, h := range v.Hosts {
				netAt(what+" (delete)", h)
				if _, ok := v.Compute[h]; ok {
					computeAt(what+" (delete)", h)
				}
			}
			continue
		}
		switch c.Kind {
		case config.KindSegment, config.KindService:
			for _, h := range v.Hosts {
				st, ok := netAt(what, h)
				if !ok {
					continue
				}
				m := st.Segments
				if c.Kind == config.KindService {
					m = st.Services
				}
				switch r, reported := m[c.Name]; {
				case !reported:
					wait("%s: not reported by host %s", what, h)
				case r != "ready":
					out.Faults[what+" on host "+h] = fmt.Sprintf("host %s: %s %s", h, what, r)
				}
			}
		case config.KindHost:
			if st, ok := netAt(what, c.Name); ok && !st.Ready {
				reason := st.Error
				if reason == "" {
					reason = "not ready"
				}
				out.Faults[what] = fmt.Sprintf("host %s not ready: %s", c.Name, reason)
			}
		case config.KindDepartment, config.KindSecurityPolicy:
			for _, h := range v.Hosts {
				netAt(what, h)
			}
		case config.KindVolume:
			for _, h := range v.Hosts {
				computeAt(what, h)
			}
		case config.KindVM:
			o, ok := v.Objects[config.Key{Kind: c.Kind, Name: c.Name}]
			if !ok {
				wait("%s: not in the controller's objects yet", what)
				continue
			}
			h := o.Status.Host
			if h == "" {
				reason := o.Status.Reason
				if reason == "" {
					reason = "no host chosen"
				}
				out.Fatal[what] = fmt.Sprintf("vm %s pending: %s", c.Name, reason)
				continue
			}
			r, ok := computeAt(what, h)
			if !ok {
				continue
			}
			want := compute.Running
			if wantsStopped(o) {
				want = compute.Stopped
			}
			var vm *compute.VMStatus
			for i := range r.VMs {
				if r.VMs[i].Name == c.Name {
					vm = &r.VMs[i]
				}
			}
			switch {
			case vm == nil:
				wait("%s: not reported by the compute agent of host %s", what, h)
			case vm.State == compute.Error:
				out.Faults[what] = fmt.Sprintf("vm %s on host %s: error: %s", c.Name, h, vm.Message)
			case vm.State != want:
				msg := ""
				if vm.Message != "" {
					msg = ": " + vm.Message
				}
				wait("%s: %s on host %s%s", what, vm.State, h, msg)
			}
		}
	}
	return out
}

// wantsStopped says whether a VM's spec asks for powerState: stopped (read through JSON, so
// it holds whether or not this build's VMSpec has the field).
func wantsStopped(o client.Object) bool {
	b, err := json.Marshal(o.Spec)
	if err != nil {
		return false
	}
	var s struct {
		PowerState string `json:"powerState"`
	}
	_ = json.Unmarshal(b, &s)
	return s.PowerState == string(compute.Stopped)
}

// waitSource reads the controller's view; fetchView is the real one.
type waitSource func(ctx context.Context) (waitView, error)

// fetchView reads the objects and hosts' reports from the controller (objects and hosts only:
// the revision and changes are the apply's).
func fetchView(c *client.Client) waitSource {
	return func(ctx context.Context) (waitView, error) {
		var v waitView
		st, err := c.Status(ctx)
		if err != nil {
			return v, err
		}
		objs, err := c.List(ctx, "")
		if err != nil {
			return v, err
		}
		v.Objects = map[config.Key]client.Object{}
		for _, o := range objs {
			v.Objects[config.Key{Kind: o.Kind, Name: o.Name}] = o
			if o.Kind == config.KindHost {
				v.Hosts = append(v.Hosts, o.Name)
			}
		}
		sort.Strings(v.Hosts)
		v.Network = map[string]hoststatus.Status{}
		for h, raw := range st.Hosts {
			var r hoststatus.Report
			if err := json.Unmarshal(raw, &r); err != nil {
				return v, fmt.Errorf("host %s: unreadable network agent report: %w", h, err)
			}
			v.Network[h] = r.Status
		}
		v.Compute = map[string]compute.Report{}
		for h, raw := range st.Compute {
			var r struct {
				Status compute.Report `json:"status"`
			}
			if err := json.Unmarshal(raw, &r); err != nil {
				return v, fmt.Errorf("host %s: unreadable compute agent report: %w", h, err)
			}
			v.Compute[h] = r.Status
		}
		return v, nil
	}
}

// waitOptions tune waitRealized: Timeout bounds the whole wait, FailAfter is how long a fault
// (a host not ready, a VM in error) must last before it fails the wait (agents retry: a guest
// port the network agent looks for may appear a moment later), Poll is the pause between
// reads and Progress the least time between two progress lines.
type waitOptions struct {
	Timeout, FailAfter, Poll, Progress time.Duration
	Now                                func() time.Time
	Sleep                              func(context.Context, time.Duration) error
}

// errWaitTimeout marks a wait that ran out of time.
var errWaitTimeout = errors.New("timed out")

// waitRealized polls src until judge says everything in res is realized (nil), a fault lasts
// FailAfter or a placement fails (an error naming each, with the host's reason), or Timeout
// passes (an error wrapping errWaitTimeout naming what is still not realized). Progress goes
// to w: what is still waited on, when it changes or at most every Progress.
func waitRealized(ctx context.Context, w io.Writer, res *client.ApplyResult, src waitSource, opt waitOptions) error {
	now, sleep := opt.Now, opt.Sleep
	if now == nil {
		now = time.Now
	}
	if sleep == nil {
		sleep = func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	start := now()
	deadline := start.Add(opt.Timeout)
	since := map[string]time.Time{} // when each fault was first seen, continuously
	var lastPrint time.Time
	for {
		v, err := src(ctx)
		if err != nil && ctx.Err() != nil {
			return err
		}
		t := now()
		var verdict waitVerdict
		if err != nil {
			verdict.Waiting = []string{"controller: " + err.Error()}
		} else {
			v.Revision, v.Changes = res.Revision, res.Changes
			verdict = judge(v)
		}
		if verdict.Done() {
			fmt.Fprintf(w, "Realized: every object at revision %d or later (%s)\n", res.Revision, t.Sub(start).Round(100*time.Millisecond))
			return nil
		}
		if len(verdict.Fatal) > 0 {
			return fmt.Errorf("not realized at revision %d: %s", res.Revision, joinSorted(verdict.Fatal))
		}
		for k := range since {
			if _, ok := verdict.Faults[k]; !ok {
				delete(since, k)
			}
		}
		failed := map[string]string{}
		for k, reason := range verdict.Faults {
			if _, ok := since[k]; !ok {
				since[k] = t
			}
			if t.Sub(since[k]) >= opt.FailAfter {
				failed[k] = reason
			}
		}
		if len(failed) > 0 {
			return fmt.Errorf("not realized at revision %d (failing for %s or more): %s", res.Revision, opt.FailAfter, joinSorted(failed))
		}
		pending := append([]string{}, verdict.Waiting...)
		for _, r := range verdict.Faults {
			pending = append(pending, r)
		}
		sort.Strings(pending)
		if !t.Before(deadline) {
			return fmt.Errorf("%w after %s: not realized at revision %d: %s", errWaitTimeout, opt.Timeout, res.Revision, strings.Join(pending, "; "))
		}
		if lastPrint.IsZero() || t.Sub(lastPrint) >= opt.Progress {
			fmt.Fprintf(w, "waiting (%s): %d not realized:\n", t.Sub(start).Round(time.Second), len(pending))
			for _, p := range pending {
				fmt.Fprintf(w, "  %s\n", p)
			}
			lastPrint = t
		}
		if err := sleep(ctx, min(opt.Poll, deadline.Sub(t))); err != nil {
			return err
		}
	}
}

// joinSorted is m's values, sorted, joined by "; ".
func joinSorted(m map[string]string) string {
	vals := make([]string, 0, len(m))
	for _, r := range m {
		vals = append(vals, r)
	}
	sort.Strings(vals)
	return strings.Join(vals, "; ")
}
