// Package usageapi mounts the metering ledger on the controller's API server: the ledger
// lives in the controller's store under <prefix>metering/, a host's placement (which
// departments and VMs it may report) comes from the stored desired state, every report's
// fate goes to the store's audit log, and metering's errors get their HTTP status.
//
// The access rules themselves (who may report for which host, who may read which bill) are
// metering.API's; this package only connects them to the store and the server.
package usageapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/govcloud/govcloud/controlplane/api"
	"github.com/govcloud/govcloud/controlplane/config"
	"github.com/govcloud/govcloud/controlplane/reconcile"
	"github.com/govcloud/govcloud/controlplane/store"
	"github.com/govcloud/govcloud/metering"
)

// Config is how the ledger is rated and bounded.
type Config struct {
	// Prices rates the days before the first PriceList object (GOVCLOUD_PRICES or the
	// built-in list); the store's PriceList objects rate the rest.
	Prices     *metering.PriceList
	MaxBitRate uint64           // bits/s a report's traffic is bounded by; 0: metering's default
	Grace      time.Duration    // a month closes this long after the next began; 0: metering's default (1h)
	Now        func() time.Time // the ledger's clock; nil: time.Now
}

// Mount serves the usage ledger on srv: POST /v1/usage/reports, GET /v1/usage, GET
// /v1/usage/invoice and GET /v1/usage/metrics (see metering.API.Routes for the access rules),
// with the store's PriceList objects and departments. It returns the API it mounted, whose
// FreezeClosed the controller calls every minute.
func Mount(srv *api.Server, st *store.Store, cfg Config) *metering.API {
	l := metering.NewLedgerAt(metering.EtcdKV{C: st.Client()}, st.Prefix()+"metering/")
	l.Placement = Placement{st}
	if cfg.Now != nil {
		l.Now = cfg.Now
	}
	if cfg.MaxBitRate != 0 {
		l.Limits.MaxBitRate = cfg.MaxBitRate
	}
	l.Limits.Grace = cfg.Grace
	m := &metering.API{Ledger: l, Prices: cfg.Prices, Audit: Audit(st),
		PriceLists:  func(ctx context.Context) ([]*metering.PriceList, error) { return PriceLists(ctx, st) },
		Departments: func(ctx context.Context) ([]metering.Department, error) { return Departments(ctx, st) },
		Quotas:      func(ctx context.Context) ([]metering.QuotaUse, error) { return Quotas(ctx, st) }}
	for _, rt := range m.Routes() {
		srv.Handle(rt.Pattern, func(w http.ResponseWriter, r *http.Request, p api.Principal) error {
			return HTTPError(rt.Handle(w, r, metering.Caller{Name: p.Name, Role: p.Role, Host: p.Host, Department: p.Department, TokenID: p.TokenID, Remote: p.Remote}))
		})
	}
	return m
}

// PriceLists are the store's PriceList objects as metering rates with them.
func PriceLists(ctx context.Context, st *store.Store) ([]*metering.PriceList, error) {
	snap, err := st.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	var out []*metering.PriceList
	for _, o := range snap.State.List(config.KindPriceList) {
		s := o.Spec.(*config.PriceListSpec)
		p := &metering.PriceList{Name: o.Metadata.Name, Currency: s.CurrencyCode(), EffectiveFrom: s.EffectiveFrom}
		for _, x := range s.Prices {
			p.Prices = append(p.Prices, metering.Price{Resource: x.Resource, Unit: x.Unit, UnitSize: uint64(max(x.UnitSize, 1)), Price: x.Price})
		}
		out = append(out, p)
	}
	return out, nil
}

// Departments are the store's departments with their display names and cost centres.
func Departments(ctx context.Context, st *store.Store) ([]metering.Department, error) {
	snap, err := st.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	var out []metering.Department
	for _, o := range snap.State.List(config.KindDepartment) {
		s := o.Spec.(*config.DepartmentSpec)
		out = append(out, metering.Department{Name: o.Metadata.Name, DisplayName: s.DisplayName, CostCentre: s.CostCentre})
	}
	return out, nil
}

// Quotas are each department's quotas and what its VMs and volumes are given now: vcpus,
// memory_bytes, storage_bytes (volumes), and bandwidth_bits_per_second (quota only).
func Quotas(ctx context.Context, st *store.Store) ([]metering.QuotaUse, error) {
	snap, err := st.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	alloc := map[string]map[string]float64{}
	add := func(d, r string, v float64) {
		if alloc[d] == nil {
			alloc[d] = map[string]float64{}
		}
		alloc[d][r] += v
	}
	for _, o := range snap.State.List(config.KindVM) {
		s := o.Spec.(*config.VMSpec)
		add(s.Department, "vcpus", float64(s.VCPUs))
		add(s.Department, "memory_bytes", float64(s.MemoryMiB)*(1<<20))
	}
	for _, o := range snap.State.List(config.KindVolume) {
		s := o.Spec.(*config.VolumeSpec)
		add(s.Department, "storage_bytes", float64(s.SizeGiB)*(1<<30))
	}
	var out []metering.QuotaUse
	for _, o := range snap.State.List(config.KindDepartment) {
		d, q := o.Metadata.Name, o.Spec.(*config.DepartmentSpec).Quotas
		for _, r := range []struct {
			name  string
			quota *int
			scale float64
		}{{"vcpus", q.VCPUs, 1}, {"memory_bytes", q.MemoryGiB, 1 << 30}, {"storage_bytes", q.StorageGiB, 1 << 30}, {"bandwidth_bits_per_second", q.BandwidthMbps, 1e6}} {
			u := metering.QuotaUse{Department: d, Resource: r.name, Allocated: alloc[d][r.name], HasQuota: r.quota != nil}
			if r.quota != nil {
				u.Quota = float64(*r.quota) * r.scale
			}
			out = append(out, u)
		}
	}
	return out, nil
}

// Audit records a usage report's fate in the store's audit log (action "usage-report";
// refusals with reason, field and value).
func Audit(st *store.Store) func(context.Context, metering.AuditRecord) error {
	return func(ctx context.Context, e metering.AuditRecord) error {
		ae := store.AuditEntry{Who: e.Caller.Name, Role: e.Caller.Role, TokenID: e.Caller.TokenID, Remote: e.Caller.Remote, Action: "usage-report",
			// seq as text: a JSON number read back as float64 would round it.
			Detail: map[string]any{"host": e.Host, "source": e.Source, "epoch": e.Epoch, "seq": strconv.FormatUint(e.Seq, 10), "samples": e.Samples}}
		if e.Refusal != nil {
			ae.Result, ae.Error = "refused", e.Refusal.Error()
			ae.Detail["reason"], ae.Detail["field"], ae.Detail["value"] = e.Refusal.Reason, e.Refusal.Field, e.Refusal.Value
		} else {
			ae.Detail["applied"] = e.Outcome.Applied
			for k, on := range map[string]bool{"stale": e.Outcome.Stale, "resumed": e.Outcome.Resumed, "reset": e.Outcome.Reset, "baseline": e.Outcome.Baseline} {
				if on {
					ae.Detail[k] = true
				}
			}
			if len(e.Outcome.Added) > 0 {
				ae.Detail["added"] = e.Outcome.Added
			}
		}
		return st.AppendAudit(ctx, ae)
	}
}

// Placement is metering.Placement from the controller's store: a host's departments are
// those with a segment (every host carries every segment), its VMs those placed on it, with
// their vCPUs, memory and the size of their volumes (the ledger's physical bounds).
type Placement struct{ St *store.Store }

// OnHost implements metering.Placement; nil when the store has no such host.
func (p Placement) OnHost(ctx context.Context, host string) (*metering.HostPlacement, error) {
	snap, err := p.St.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	d := reconcile.ForHost(snap.State, host, snap.Revision)
	if d == nil {
		return nil, nil
	}
	hp := &metering.HostPlacement{Departments: map[string]bool{}, Segments: map[string]bool{}, VMs: map[string]metering.PlacedVM{},
		SegmentOf: map[string]string{}, ServiceOf: map[string]string{}}
	for _, o := range snap.State.List(config.KindDepartment) {
		hp.Departments[o.Metadata.Name] = true
	}
	for _, s := range d.Segments {
		hp.Segments[s.Department] = true
		hp.SegmentOf[s.Name] = s.Department
	}
	for _, s := range d.Services {
		hp.ServiceOf[s.Name] = s.Department
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

// HTTPError gives a metering error its HTTP status: refusals 422 and forbidden 403 (both in
// the audit log already), malformed requests 400; other errors pass unchanged.
func HTTPError(err error) error {
	var re *metering.RequestError
	var fe *metering.ForbiddenError
	var rf *metering.RefusedError
	var om *metering.OpenMonthError
	switch {
	case errors.As(err, &om):
		return &api.HTTPError{Status: http.StatusConflict, Code: "month_open", Message: err.Error()}
	case errors.As(err, &rf):
		return &api.HTTPError{Status: http.StatusUnprocessableEntity, Code: "refused", Message: err.Error(), Audited: true}
	case errors.As(err, &re):
		return &api.HTTPError{Status: http.StatusBadRequest, Code: "invalid", Message: err.Error()}
	case errors.As(err, &fe):
		return &api.HTTPError{Status: http.StatusForbidden, Code: "forbidden", Message: err.Error(), Audited: true}
	}
	return err
}
