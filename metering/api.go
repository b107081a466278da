package metering

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
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
//	GET  /v1/usage?month=YYYY-MM[&department=D] the month's Bill (month defaults to this one;
//	                                            admin and network see every department, a
//	                                            department caller only its own)
//	GET  /v1/usage/metrics                      Prometheus text: govcloud_usage_reports_total
//	                                            {result}, govcloud_usage_reports_refused_total
//	                                            {reason} (admin, network)
//
// Every report, counted or refused, is passed to Audit.
type API struct {
	Ledger *Ledger
	Prices *PriceList
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
	return []Route{{"POST /v1/usage/reports", a.postReport}, {"GET /v1/usage", a.getUsage}, {"GET /v1/usage/metrics", a.getMetrics}}
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
	promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}).ServeHTTP(w, r)
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

// WriteBill writes a month's bill ("" = this month; dept "" = every department) as JSON.
func (a *API) WriteBill(ctx context.Context, w http.ResponseWriter, month, dept string) error {
	if month == "" {
		month = Month(time.Now())
	}
	u, err := a.Ledger.Usage(ctx, month)
	if err != nil {
		return &RequestError{err}
	}
	if dept != "" {
		if _, ok := u[dept]; !ok {
			u[dept] = map[string]uint64{} // a department with no usage gets a zero bill
		}
	}
	prices := a.Prices
	if prices == nil {
		prices = DefaultPrices()
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(Rate(month, u, prices, dept))
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
	dept := r.URL.Query().Get("department")
	switch c.Role {
	case RoleAdmin, RoleNetwork, RoleAnonymous: // anonymous: only a controller run with --anonymous-read (the lab)
	case RoleDepartment:
		if dept != "" && dept != c.Department {
			return &ForbiddenError{fmt.Sprintf("%s (department %s) may not read the usage of department %q", c.Name, c.Department, dept)}
		}
		dept = c.Department
	default:
		return &ForbiddenError{fmt.Sprintf("%s (%s) may not read usage", c.Name, c.Role)}
	}
	return a.WriteBill(r.Context(), w, r.URL.Query().Get("month"), dept)
}
