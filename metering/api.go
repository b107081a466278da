package metering

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// API serves the ledger over HTTP, for the controller to mount (behind its own auth):
//
//	POST /v1/usage/reports                      an agent's Report -> Outcome
//	GET  /v1/usage?month=YYYY-MM[&department=D] the month's Bill (month defaults to this one)
type API struct {
	Ledger *Ledger
	Prices *PriceList
	Log    *slog.Logger
}

// Handler returns the API's routes.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/usage/reports", a.postReport)
	mux.HandleFunc("GET /v1/usage", a.getUsage)
	return mux
}

func httpError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

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

func fail(w http.ResponseWriter, err error) {
	var re *RequestError
	if errors.As(err, &re) {
		httpError(w, http.StatusBadRequest, err)
		return
	}
	httpError(w, http.StatusInternalServerError, err)
}

func (a *API) postReport(w http.ResponseWriter, r *http.Request) {
	rep, err := DecodeReport(r)
	if err == nil {
		err = a.Record(r.Context(), w, rep)
	}
	if err != nil {
		fail(w, err)
	}
}

func (a *API) getUsage(w http.ResponseWriter, r *http.Request) {
	if err := a.WriteBill(r.Context(), w, r.URL.Query().Get("month"), r.URL.Query().Get("department")); err != nil {
		fail(w, err)
	}
}
