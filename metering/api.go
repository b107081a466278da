package metering

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// API serves the ledger over HTTP with its access rules; the controller authenticates the
// caller and mounts Routes behind its own authentication:
//
//	POST /v1/usage/reports                      an agent's Report -> Outcome (admin, or the
//	                                            agent of the reporting host)
//	GET  /v1/usage?month=YYYY-MM[&department=D] the month's Bill (month defaults to this one;
//	                                            admin and network see every department, a
//	                                            department caller only its own)
type API struct {
	Ledger *Ledger
	Prices *PriceList
	Log    *slog.Logger
}

// Roles a Caller may have (the controller's token roles of the same names).
const (
	RoleAdmin      = "admin"
	RoleNetwork    = "network"
	RoleAgent      = "agent"
	RoleDepartment = "department"
)

// Caller is who sends a request, as the controller authenticated it.
type Caller struct {
	Name       string
	Role       string
	Host       string // an agent's host
	Department string // a department caller's department
}

// Route is one authenticated route: a Go ServeMux pattern and its handler, which returns a
// *RequestError (400), a *ForbiddenError (403) or another error (500).
type Route struct {
	Pattern string
	Handle  func(w http.ResponseWriter, r *http.Request, c Caller) error
}

// Routes are the API's routes, for the controller to mount.
func (a *API) Routes() []Route {
	return []Route{{"POST /v1/usage/reports", a.postReport}, {"GET /v1/usage", a.getUsage}}
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

// Record counts a report and writes the outcome as JSON.
func (a *API) Record(ctx context.Context, w http.ResponseWriter, rep Report) error {
	if err := rep.validate(); err != nil {
		return &RequestError{err}
	}
	out, err := a.Ledger.Record(ctx, rep)
	if err != nil {
		return err
	}
	if out.Gap && a.Log != nil {
		a.Log.Warn("usage reports were missed; covered by the totals", "reporter", rep.Reporter, "seq", rep.Seq, "prevSeq", rep.PrevSeq)
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
	if !(c.Role == RoleAdmin || (c.Role == RoleAgent && c.Host == rep.Reporter)) {
		return &ForbiddenError{fmt.Sprintf("%s (%s) may not report usage as %q", c.Name, c.Role, rep.Reporter)}
	}
	return a.Record(r.Context(), w, rep)
}

func (a *API) getUsage(w http.ResponseWriter, r *http.Request, c Caller) error {
	dept := r.URL.Query().Get("department")
	switch c.Role {
	case RoleAdmin, RoleNetwork:
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
