package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/controlplane/api"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/config"
	"github.com/govcloud/govcloud/controlplane/reconcile"
	"github.com/govcloud/govcloud/controlplane/store"
	"github.com/govcloud/govcloud/metering"
)

func init() {
	register(newUsageCmd)
	controllerExtensions = append(controllerExtensions, usageLedger)
}

// usageLedger serves the usage ledger from the controller, in its store under
// <prefix>metering/: agents POST /v1/usage/reports (their own host only; the ledger accepts only
// departments and VMs the desired state puts on that host, see metering.Ledger), GET /v1/usage
// gives a month's bill (a department token sees only its department). Every report, counted or
// refused, is in the audit log. Prices come from the file GOVCLOUD_PRICES names, else the
// built-in list (deploy/examples/prices.yaml); GOVCLOUD_MAX_LINK_RATE (bits/s, e.g. 400e9)
// raises the link rate reports are bounded by (default 100 Gbit/s).
func usageLedger(_ context.Context, srv *api.Server, st *store.Store) error {
	prices := metering.DefaultPrices()
	if f := os.Getenv("GOVCLOUD_PRICES"); f != "" {
		p, err := metering.LoadPrices(f)
		if err != nil {
			return fmt.Errorf("GOVCLOUD_PRICES: %w", err)
		}
		prices = p
	}
	l := metering.NewLedgerAt(metering.EtcdKV{C: st.Client()}, st.Prefix()+"metering/")
	l.Placement = storePlacement{st}
	l.Now = func() time.Time { return usageClock() }
	if v := os.Getenv("GOVCLOUD_MAX_LINK_RATE"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 1e6 || f > 1e13 {
			return fmt.Errorf("GOVCLOUD_MAX_LINK_RATE %q: want bits per second from 1e6 to 1e13", v)
		}
		l.Limits.MaxBitRate = uint64(f)
	}
	m := &metering.API{Ledger: l, Prices: prices, Audit: auditUsage(st)}
	for _, rt := range m.Routes() {
		srv.Handle(rt.Pattern, func(w http.ResponseWriter, r *http.Request, p api.Principal) error {
			return httpError(rt.Handle(w, r, metering.Caller{Name: p.Name, Role: p.Role, Host: p.Host, Department: p.Department, TokenID: p.TokenID, Remote: p.Remote}))
		})
	}
	return nil
}

// usageClock is the controller's clock for the ledger (tests set it).
var usageClock = time.Now

// auditUsage records a usage report's fate in the controller's audit log.
func auditUsage(st *store.Store) func(context.Context, metering.AuditRecord) error {
	return func(ctx context.Context, e metering.AuditRecord) error {
		ae := store.AuditEntry{Who: e.Caller.Name, Role: e.Caller.Role, TokenID: e.Caller.TokenID, Remote: e.Caller.Remote, Action: "usage-report",
			// seq as text: a JSON number read back as float64 would round it.
			Detail: map[string]any{"host": e.Host, "source": e.Source, "epoch": e.Epoch, "seq": strconv.FormatUint(e.Seq, 10), "samples": e.Samples}}
		if e.Refusal != nil {
			ae.Result, ae.Error = "refused", e.Refusal.Error()
			ae.Detail["reason"], ae.Detail["field"], ae.Detail["value"] = e.Refusal.Reason, e.Refusal.Field, e.Refusal.Value
		} else {
			ae.Detail["applied"] = e.Outcome.Applied
			if e.Outcome.Stale {
				ae.Detail["stale"] = true
			}
			if e.Outcome.Resumed {
				ae.Detail["resumed"] = true
			}
			if e.Outcome.Reset {
				ae.Detail["reset"] = true
			}
			if e.Outcome.Baseline {
				ae.Detail["baseline"] = true
			}
			if len(e.Outcome.Added) > 0 {
				ae.Detail["added"] = e.Outcome.Added
			}
		}
		return st.AppendAudit(ctx, ae)
	}
}

// storePlacement is metering.Placement from the controller's store: a host's departments are
// those with a segment (every host carries every segment), its VMs those placed on it.
type storePlacement struct{ st *store.Store }

func (p storePlacement) OnHost(ctx context.Context, host string) (*metering.HostPlacement, error) {
	snap, err := p.st.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	d := reconcile.ForHost(snap.State, host, snap.Revision)
	if d == nil {
		return nil, nil
	}
	hp := &metering.HostPlacement{Departments: map[string]bool{}, Segments: map[string]bool{}, VMs: map[string]metering.PlacedVM{}}
	for _, o := range snap.State.List(config.KindDepartment) {
		hp.Departments[o.Metadata.Name] = true
	}
	for _, s := range d.Segments {
		hp.Segments[s.Department] = true
	}
	size := map[string]uint64{}
	for _, v := range d.Volumes {
		size[v.Name] = uint64(max(v.SizeGiB, 0))
	}
	for _, vm := range d.VMs {
		pv := metering.PlacedVM{Department: vm.Department, VCPUs: uint64(max(vm.VCPUs, 0)), MemoryMiB: uint64(max(vm.MemoryMiB, 0))}
		for _, v := range vm.Volumes {
			pv.VolumeGiB += size[v]
		}
		hp.VMs[vm.Name] = pv
	}
	return hp, nil
}

// httpError gives a metering error its HTTP status: refusals 422 and forbidden 403 (both in
// the audit log already), malformed requests 400.
func httpError(err error) error {
	var re *metering.RequestError
	var fe *metering.ForbiddenError
	var rf *metering.RefusedError
	switch {
	case errors.As(err, &rf):
		return &api.HTTPError{Status: http.StatusUnprocessableEntity, Code: "refused", Message: err.Error(), Audited: true}
	case errors.As(err, &re):
		return &api.HTTPError{Status: http.StatusBadRequest, Code: "invalid", Message: err.Error()}
	case errors.As(err, &fe):
		return &api.HTTPError{Status: http.StatusForbidden, Code: "forbidden", Message: err.Error(), Audited: true}
	}
	return err
}

func newUsageCmd(_ *globals) *cobra.Command {
	var month, dept, out string
	cmd := &cobra.Command{
		Use:   "usage",
		Short: "Monthly chargeback: each department's metered quantities and charges, with totals",
		Long: `usage asks the controller's usage ledger for a month's quantities per department
(network bytes in and out, vCPU-seconds, memory and volume GiB-seconds) rated with the
controller's price list (deploy/examples/prices.yaml). Every delta the agents report is counted
exactly once. Output: table (default), csv or json.`,
		Example: "  govcloud usage --month 2026-11 -o csv\n  govcloud usage --month 2026-11 --department lands",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out, "table", "csv", "json"); err != nil {
				return err
			}
			if month == "" {
				month = metering.Month(time.Now())
			}
			if _, err := time.Parse("2006-01", month); err != nil {
				return fmt.Errorf("--month %q: want YYYY-MM", month)
			}
			c := client.FromEnv()
			mc := &metering.Client{Base: c.Base, HTTP: c.FailoverHTTP()}
			bill, err := mc.Bill(cmd.Context(), month, dept)
			if err != nil {
				return err
			}
			return bill.Write(cmd.OutOrStdout(), out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&month, "month", "", "month YYYY-MM (default: this month, UTC)")
	f.StringVar(&dept, "department", "", "only this department")
	f.StringVarP(&out, "output", "o", "table", "table, csv or json")
	return cmd
}
