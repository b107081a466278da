package metering

import (
	"encoding/json"
	"fmt"
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

func (a *API) postReport(w http.ResponseWriter, r *http.Request) {
	var rep Report
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		httpError(w, http.StatusBadRequest, fmt.Errorf("usage report: %w", err))
		return
	}
	out, err := a.Ledger.Record(r.Context(), rep)
	if err != nil {
		code := http.StatusInternalServerError
		if rep.validate() != nil {
			code = http.StatusBadRequest
		}
		httpError(w, code, err)
		return
	}
	if out.Gap && a.Log != nil {
		a.Log.Warn("usage reports were missed; covered by the totals", "reporter", rep.Reporter, "seq", rep.Seq, "prevSeq", rep.PrevSeq)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func (a *API) getUsage(w http.ResponseWriter, r *http.Request) {
	month := r.URL.Query().Get("month")
	if month == "" {
		month = Month(time.Now())
	}
	u, err := a.Ledger.Usage(r.Context(), month)
	if err != nil {
		httpError(w, http.StatusBadRequest, err)
		return
	}
	dept := r.URL.Query().Get("department")
	if dept != "" {
		if _, ok := u[dept]; !ok {
			u[dept] = map[string]uint64{} // a department with no usage gets a zero bill
		}
	}
	prices := a.Prices
	if prices == nil {
		prices = &PriceList{Currency: "AUD"}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(Rate(month, u, prices, dept))
}
