package metering

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// API serves the ledger over HTTP with its access rules; the controller authenticates the
// caller and mounts Routes behind its own authentication:
//
//	POST /v1/usage/reports                      an agent's Report -> Outcome (admin, or the
//	                                            agent of the reporting host)
//	GET  /v1/usage?month=YYYY-MM[&department=D][&costCentre=C][&by=vm|service|segment]
//	                                            the month's Bill (month defaults to this one;
//	                                            admin and network see every department, a
//	                                            department caller only its own; an unknown
//	                                            department is a 400). A closed month's bill
//	                                            is its frozen invoice.
//	GET  /v1/usage/invoice?month=YYYY-MM[&...]  the same for a closed month only (409 while
//	                                            the month is open)
//	GET  /v1/usage/metrics                      Prometheus text: govcloud_usage_reports_total
//	                                            {result}, govcloud_usage_reports_refused_total
//	                                            {reason}, and this month's quantities and
//	                                            charges per department (admin, network)
//
// Every report, counted or refused, is passed to Audit.
type API struct {
	Ledger *Ledger
	// Prices rates the days before the first of PriceLists (nil: DefaultPrices).
	Prices *PriceList
	// PriceLists returns the dated price lists (the store's PriceList objects); nil: none.
	PriceLists func(ctx context.Context) ([]*PriceList, error)
	// Departments returns every configured department; nil: those with usage.
	Departments func(ctx context.Context) ([]Department, error)
	// Quotas returns each department's allocation and quota (metrics); nil: none.
	Quotas func(ctx context.Context) ([]QuotaUse, error)
	Log    *slog.Logger
	// Audit records a report's fate in the controller's audit log; nil: not recorded. An
	// error from it fails the request (a write that cannot be audited is not acknowledged).
	Audit func(ctx context.Context, e AuditRecord) error

	once     sync.Once
	reports  *prometheus.CounterVec
	refused  *prometheus.CounterVec
	registry *prometheus.Registry
}

// AuditRecord is one usage report as the audit log keeps it: who sent it, which report, and
// what became of it (Refusal nil: counted or a duplicate, see Outcome).
type AuditRecord struct {
	Caller  Caller
	Host    string
	Source  string
	Epoch   string
	Seq     uint64
	Samples int
	Outcome Outcome
	Refusal *RefusedError
}

// Roles a Caller may have (the controller's token roles of the same names).
const (
	RoleAdmin      = "admin"
	RoleNetwork    = "network"
	RoleAgent      = "agent"
	RoleDepartment = "department"
	RoleAnonymous  = "anonymous" // no token, on a controller that allows anonymous reads
)

// Caller is who sends a request, as the controller authenticated it.
type Caller struct {
	Name       string
	Role       string
	Host       string // an agent's host
	Department string // a department caller's department
	TokenID    string // the credential's id (audit)
	Remote     string // the client's address, host:port (audit)
}

// Route is one authenticated route: a Go ServeMux pattern and its handler, which returns a
// *RequestError (400), a *ForbiddenError (403) or another error (500).
type Route struct {
	Pattern string
	Handle  func(w http.ResponseWriter, r *http.Request, c Caller) error
}

// Routes are the API's routes, for the controller to mount.
func (a *API) Routes() []Route {
	return []Route{{"POST /v1/usage/reports", a.postReport}, {"GET /v1/usage", a.getUsage}, {"GET /v1/usage/invoice", a.getInvoice}, {"GET /v1/usage/metrics", a.getMetrics}}
}

func (a *API) metrics() {
	a.once.Do(func() {
		a.reports = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "govcloud_usage_reports_total",
			Help: "Usage reports the ledger received, by result (counted, duplicate, stale: came after a newer one of its reporter, refused)."}, []string{"result"})
		a.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "govcloud_usage_reports_refused_total",
			Help: "Usage reports the ledger refused, by reason."}, []string{"reason"})
		for _, r := range []string{"counted", "duplicate", "stale", "refused"} {
			a.reports.WithLabelValues(r)
		}
		for _, r := range RefusalReasons() {
			a.refused.WithLabelValues(r)
		}
		a.registry = prometheus.NewRegistry()
		a.registry.MustRegister(a.reports, a.refused)
	})
}

// Refused returns how many reports were refused for reason (tests, status).
func (a *API) Refused(reason string) uint64 {
	a.metrics()
	var m dto.Metric
	if a.refused.WithLabelValues(reason).Write(&m) != nil {
		return 0
	}
	return uint64(m.GetCounter().GetValue())
}

func (a *API) getMetrics(w http.ResponseWriter, r *http.Request, c Caller) error {
	if c.Role != RoleAdmin && c.Role != RoleNetwork {
		return &ForbiddenError{fmt.Sprintf("%s (%s) may not read the usage ledger's metrics", c.Name, c.Role)}
	}
	a.metrics()
	reg := prometheus.NewRegistry()
	reg.MustRegister(a.reports, a.refused)
	if err := a.monthToDate(r.Context(), reg); err != nil {
		return err
	}
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(w, r)
	return nil
}

// QuotaUse is what a department has allocated of one quota'd resource, and its quota.
type QuotaUse struct {
	Department string
	Resource   string  // vcpus, memory_bytes, storage_bytes, bandwidth_bits_per_second
	Allocated  float64 // what its objects ask for now (bandwidth: not known here, left out)
	Quota      float64
	HasQuota   bool // false: no limit (no quota series)
}

// monthToDate registers this month's quantities and charges per department, read now, and
// each department's allocation and quota.
func (a *API) monthToDate(ctx context.Context, reg *prometheus.Registry) error {
	in, err := a.Input(ctx, Month(a.Ledger.now()))
	if err != nil {
		return err
	}
	b, err := in.Rate(BillOptions{})
	if err != nil {
		return err
	}
	qty := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "govcloud_department_month_usage",
		Help: "This month's metered usage so far per department, in the resource's base unit (bytes, vCPU-seconds, MiB-seconds, GiB-seconds; see the bill's resources)."},
		[]string{"department", "cost_centre", "resource"})
	charge := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "govcloud_department_month_charge",
		Help: "This month's charge so far per department, in the currency label (rated as govcloud usage rates it)."},
		[]string{"department", "cost_centre", "currency"})
	for _, l := range b.Lines {
		qty.WithLabelValues(l.Department, l.CostCentre, l.Resource).Add(float64(l.BaseQuantity))
	}
	for _, d := range b.Departments {
		v, _ := new(big.Rat).SetString(d.Charge)
		f, _ := v.Float64()
		charge.WithLabelValues(d.Department, d.CostCentre, b.Currency).Set(f)
	}
	reg.MustRegister(qty, charge)
	if a.Quotas == nil {
		return nil
	}
	qs, err := a.Quotas(ctx)
	if err != nil {
		return fmt.Errorf("quotas: %w", err)
	}
	alloc := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "govcloud_department_allocated",
		Help: "What a department's VMs and volumes are given now (vcpus, memory_bytes, storage_bytes)."}, []string{"department", "resource"})
	quota := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "govcloud_department_quota",
		Help: "A department's quota per resource (absent: no limit)."}, []string{"department", "resource"})
	for _, q := range qs {
		if q.Resource != "bandwidth_bits_per_second" {
			alloc.WithLabelValues(q.Department, q.Resource).Set(q.Allocated)
		}
		if q.HasQuota {
			quota.WithLabelValues(q.Department, q.Resource).Set(q.Quota)
		}
	}
	reg.MustRegister(alloc, quota)
	return nil
}

// ForbiddenError is a request the caller may not make (HTTP 403).
type ForbiddenError struct{ Msg string }

func (e *ForbiddenError) Error() string { return e.Msg }

// RequestError is a client's mistake (HTTP 400).
type RequestError struct{ Err error }

func (e *RequestError) Error() string { return e.Err.Error() }
func (e *RequestError) Unwrap() error { return e.Err }

// DecodeReport reads a report from a request body.
func DecodeReport(r *http.Request) (Report, error) {
	var rep Report
	dec := json.NewDecoder(io.LimitReader(r.Body, 8<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		return rep, &RequestError{fmt.Errorf("usage report: %w", err)}
	}
	return rep, nil
}

// Record counts a report for caller and writes the outcome as JSON. A refusal is a
// *RefusedError; both are counted in the metrics and passed to Audit.
func (a *API) Record(ctx context.Context, w http.ResponseWriter, c Caller, rep Report) error {
	a.metrics()
	out, err := a.Ledger.Record(ctx, rep)
	var re *RefusedError
	switch {
	case errors.As(err, &re):
		a.reports.WithLabelValues("refused").Inc()
		a.refused.WithLabelValues(re.Reason).Inc()
	case err != nil:
		return err
	case out.Applied:
		a.reports.WithLabelValues("counted").Inc()
	case out.Stale:
		a.reports.WithLabelValues("stale").Inc()
	default:
		a.reports.WithLabelValues("duplicate").Inc()
	}
	if a.Audit != nil {
		host, source := rep.Host, rep.Source
		if host == "" {
			host, source = rep.Reporter, SourceNetwork
		}
		if aerr := a.Audit(ctx, AuditRecord{Caller: c, Host: host, Source: source, Epoch: rep.Epoch, Seq: rep.Seq, Samples: len(rep.Samples), Outcome: out, Refusal: re}); aerr != nil {
			return fmt.Errorf("usage report %d of host %q: audit: %w", rep.Seq, host, aerr)
		}
	}
	if re != nil {
		if a.Log != nil {
			a.Log.Warn("usage report refused", "host", rep.Host, "source", rep.Source, "seq", rep.Seq, "reason", re.Reason, "err", re.Error())
		}
		return re
	}
	if out.Gap && a.Log != nil {
		a.Log.Warn("usage reports were missed; covered by the totals", "host", rep.Host, "source", rep.Source, "seq", rep.Seq, "prevSeq", rep.PrevSeq)
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(out)
}

// Input returns what month's bill is computed from: for a closed month its frozen invoice
// (frozen now when it is not yet), else the ledger's usage so far rated with the price lists
// and departments of now.
func (a *API) Input(ctx context.Context, month string) (*BillInput, error) {
	closes, err := a.Ledger.ClosesAt(month)
	if err != nil {
		return nil, &RequestError{err}
	}
	if a.Ledger.Closed(month) {
		if in, err := a.Ledger.Invoice(ctx, month); err != nil || in != nil {
			return in, err
		}
	}
	in := &BillInput{Month: month, ClosesAt: closes, Prices: PriceSchedule{Fallback: a.Prices}}
	if in.Prices.Fallback == nil {
		in.Prices.Fallback = DefaultPrices()
	}
	if a.PriceLists != nil {
		if in.Prices.Lists, err = a.PriceLists(ctx); err != nil {
			return nil, fmt.Errorf("price lists: %w", err)
		}
		slices.SortFunc(in.Prices.Lists, func(x, y *PriceList) int { return strings.Compare(x.EffectiveFrom, y.EffectiveFrom) })
	}
	if a.Departments != nil {
		if in.Departments, err = a.Departments(ctx); err != nil {
			return nil, fmt.Errorf("departments: %w", err)
		}
	}
	if in.Usage, err = a.Ledger.Dated(ctx, month); err != nil {
		return nil, err
	}
	if in.Reports, err = a.Ledger.LastReports(ctx); err != nil {
		return nil, err
	}
	if a.Ledger.Closed(month) {
		return a.Ledger.Freeze(ctx, in)
	}
	return in, nil
}

// FreezeClosed freezes the invoices of the last three months that are closed and not frozen
// yet; the controller calls it every minute so a month is frozen as it closes, before any
// later PriceList or department change could reach its bill.
func (a *API) FreezeClosed(ctx context.Context) error {
	now := a.Ledger.now().UTC()
	first := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	for i := 1; i <= 3; i++ {
		m := Month(first.AddDate(0, -i, 0))
		if !a.Ledger.Closed(m) {
			continue
		}
		if _, err := a.Input(ctx, m); err != nil {
			return fmt.Errorf("invoice %s: %w", m, err)
		}
	}
	return nil
}

// billOptions reads month and options from a request's query.
func billOptions(r *http.Request) (string, BillOptions) {
	q := r.URL.Query()
	month := q.Get("month")
	if month == "" {
		month = Month(time.Now())
	}
	return month, BillOptions{Department: q.Get("department"), CostCentre: q.Get("costCentre"), By: q.Get("by")}
}

// WriteBill writes month's bill as JSON.
func (a *API) WriteBill(ctx context.Context, w http.ResponseWriter, month string, opt BillOptions, invoiceOnly bool) error {
	if invoiceOnly && !a.Ledger.Closed(month) {
		closes, err := a.Ledger.ClosesAt(month)
		if err != nil {
			return &RequestError{err}
		}
		return &OpenMonthError{Month: month, ClosesAt: closes}
	}
	in, err := a.Input(ctx, month)
	if err != nil {
		return err
	}
	b, err := in.Rate(opt)
	if err != nil {
		return &RequestError{err}
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(b)
}

// OpenMonthError is an invoice asked for a month still open (HTTP 409).
type OpenMonthError struct {
	Month    string
	ClosesAt time.Time
}

func (e *OpenMonthError) Error() string {
	return fmt.Sprintf("month %s is open until %s (its grace period included): no invoice yet; 'govcloud usage --month %s' shows the bill so far", e.Month, e.ClosesAt.UTC().Format(time.RFC3339), e.Month)
}

func (a *API) postReport(w http.ResponseWriter, r *http.Request, c Caller) error {
	rep, err := DecodeReport(r)
	if err != nil {
		return err
	}
	host := rep.Host
	if host == "" {
		host = rep.Reporter
	}
	if !(c.Role == RoleAdmin || (c.Role == RoleAgent && c.Host != "" && c.Host == host)) {
		a.metrics()
		a.reports.WithLabelValues("refused").Inc()
		a.refused.WithLabelValues(ReasonIdentity).Inc()
		re := refuse(ReasonIdentity, "host", host, "%s (%s) may not report usage of this host", c.Name, c.Role)
		if a.Audit != nil {
			if aerr := a.Audit(r.Context(), AuditRecord{Caller: c, Host: host, Source: rep.Source, Seq: rep.Seq, Samples: len(rep.Samples), Refusal: re}); aerr != nil {
				return fmt.Errorf("usage report %d of host %q: audit: %w", rep.Seq, host, aerr)
			}
		}
		return &ForbiddenError{re.Error()}
	}
	return a.Record(r.Context(), w, c, rep)
}

func (a *API) getUsage(w http.ResponseWriter, r *http.Request, c Caller) error {
	return a.readBill(w, r, c, false)
}

func (a *API) getInvoice(w http.ResponseWriter, r *http.Request, c Caller) error {
	return a.readBill(w, r, c, true)
}

func (a *API) readBill(w http.ResponseWriter, r *http.Request, c Caller, invoice bool) error {
	month, opt := billOptions(r)
	switch c.Role {
	case RoleAdmin, RoleNetwork, RoleAnonymous: // anonymous: only a controller run with --anonymous-read (the lab)
	case RoleDepartment:
		if opt.Department != "" && opt.Department != c.Department {
			return &ForbiddenError{fmt.Sprintf("%s (department %s) may not read the usage of department %q", c.Name, c.Department, opt.Department)}
		}
		opt.Department = c.Department
	default:
		return &ForbiddenError{fmt.Sprintf("%s (%s) may not read usage", c.Name, c.Role)}
	}
	return a.WriteBill(r.Context(), w, month, opt, invoice)
}
