package compute

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/govcloud/govcloud/controlplane/desired"
)

// Reconcile makes the provider hold exactly want: owned VMs that are not wanted are deleted
// first (freeing their names and ports), then every wanted VM is ensured. It returns the status
// of every wanted VM; a VM that failed is reported in state error with the reason, and the
// errors are joined into the returned error. The volumes it keeps are those the wanted VMs
// use (ReconcileKeeping keeps more).
func Reconcile(ctx context.Context, p Provider, want []VMSpec, log *slog.Logger) ([]VMStatus, error) {
	return ReconcileKeeping(ctx, p, want, nil, log)
}

// ReconcileKeeping is Reconcile keeping also the volumes named in keep (the host's desired
// volumes: a Volume lives until it is deleted, attached to a VM or not).
func ReconcileKeeping(ctx context.Context, p Provider, want []VMSpec, keep []string, log *slog.Logger) ([]VMStatus, error) {
	have, err := p.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list vms: %w", err)
	}
	wanted := map[string]bool{}
	keepVols := map[string]bool{}
	for _, v := range keep {
		keepVols[v] = true
	}
	for _, s := range want {
		wanted[s.Name] = true
		for _, v := range s.Volumes {
			keepVols[v.Name] = true
		}
	}
	var errs []error
	for _, h := range have {
		if wanted[h.Name] {
			continue
		}
		log.Info("deleting vm", "vm", h.Name, "state", h.State)
		if err := p.Delete(ctx, h.Name); err != nil {
			errs = append(errs, fmt.Errorf("delete vm %q: %w", h.Name, err))
		}
	}
	if sw, ok := p.(Sweeper); ok {
		if err := sw.Sweep(ctx); err != nil {
			errs = append(errs, fmt.Errorf("sweep: %w", err))
		}
	}
	if vp, ok := p.(VolumePruner); ok {
		if err := vp.PruneVolumes(ctx, keepVols); err != nil {
			errs = append(errs, fmt.Errorf("prune volumes: %w", err))
		}
	}
	out := make([]VMStatus, 0, len(want))
	for _, s := range want {
		st, err := p.Ensure(ctx, s)
		if err != nil {
			st = VMStatus{Name: s.Name, Department: s.Department, State: Error, Message: err.Error()}
			// The providers' errors name the VM already; others get its name here.
			if prefix := fmt.Sprintf("vm %q", s.Name); !strings.HasPrefix(err.Error(), prefix) {
				err = fmt.Errorf("%s: %w", prefix, err)
			}
			errs = append(errs, err)
		}
		out = append(out, st)
	}
	return out, errors.Join(errs...)
}

// DesiredSource is the part of the controller client the agent uses.
type DesiredSource interface {
	Desired(ctx context.Context, host string, after int64, timeout time.Duration) (*desired.State, error)
}

// StatusSink receives the agent's report after every pass (the controller, metrics, a test).
type StatusSink func(ctx context.Context, r Report)

// Report is what one reconcile pass produced.
type Report struct {
	Host     string     `json:"host"`
	Revision int64      `json:"revision"`
	VMs      []VMStatus `json:"vms"`
	Usage    []Usage    `json:"usage"`
	Error    string     `json:"error,omitempty"`
}

// Agent follows the controller's desired state for one host and reconciles the provider to it.
type Agent struct {
	Host     string
	Source   DesiredSource
	Provider Provider
	Naming   Naming
	Log      *slog.Logger
	Sink     StatusSink    // optional
	Retry    time.Duration // pause after a failed pass; default 2s
}

// Run reconciles until ctx ends. With the controller away it keeps what exists (fail-static).
func (a *Agent) Run(ctx context.Context) error {
	retry := a.Retry
	if retry == 0 {
		retry = 2 * time.Second
	}
	var rev int64
	var last *desired.State
	for ctx.Err() == nil {
		st, err := a.Source.Desired(ctx, a.Host, rev, 30*time.Second)
		if err != nil {
			// Fail-static: the controller is away, what exists keeps running.
			a.Log.Warn("desired state", "host", a.Host, "err", err)
			sleep(ctx, retry)
			continue
		}
		if st == nil {
			// Nothing changed for a poll's length: a resync pass puts back what went away
			// behind the agent's back (a qemu that died, a guest's server that stopped).
			if last != nil && ctx.Err() == nil {
				a.Pass(ctx, last)
			}
			continue
		}
		last = st
		if rep := a.Pass(ctx, st); rep.Error != "" {
			sleep(ctx, retry)
			continue // the same revision comes back at once: retry it
		}
		rev = st.Revision
	}
	return nil
}

// Pass runs one reconcile against st and reports it.
func (a *Agent) Pass(ctx context.Context, st *desired.State) Report {
	rep := Report{Host: a.Host, Revision: st.Revision}
	specs, err := FromDesired(st, a.Naming)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	var keep []string
	for _, v := range st.Volumes {
		keep = append(keep, v.Name)
	}
	rep.VMs, err = ReconcileKeeping(ctx, a.Provider, specs, keep, a.Log)
	if err != nil {
		errs = append(errs, err)
	}
	if rep.Usage, err = a.Provider.Usage(ctx); err != nil {
		errs = append(errs, fmt.Errorf("usage: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		rep.Error = err.Error()
		a.Log.Warn("compute reconcile", "host", a.Host, "revision", st.Revision, "err", err)
	} else {
		a.Log.Info("compute reconciled", "host", a.Host, "revision", st.Revision, "vms", len(rep.VMs))
	}
	if a.Sink != nil {
		a.Sink(ctx, rep)
	}
	return rep
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
