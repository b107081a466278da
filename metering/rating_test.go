package metering

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"
)

func examplePrices(t *testing.T) *PriceList {
	t.Helper()
	p, err := LoadPrices("../deploy/examples/prices.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParsePricesErrors(t *testing.T) {
	for name, y := range map[string]string{
		"no currency":      "prices: []",
		"unit size 0":      "currency: AUD\nprices: [{resource: x, unit: u, unitSize: 0, price: '1'}]",
		"bad price":        "currency: AUD\nprices: [{resource: x, unit: u, unitSize: 1, price: 'cheap'}]",
		"negative price":   "currency: AUD\nprices: [{resource: x, unit: u, unitSize: 1, price: '-1'}]",
		"twice":            "currency: AUD\nprices: [{resource: x, unit: u, unitSize: 1, price: '1'}, {resource: x, unit: u, unitSize: 1, price: '2'}]",
		"unknown field":    "currency: AUD\ncolour: red",
		"wrong kind":       "kind: Service\ncurrency: AUD",
		"missing resource": "currency: AUD\nprices: [{unit: u, unitSize: 1, price: '1'}]",
	} {
		if _, err := ParsePrices([]byte(y)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRateExact(t *testing.T) {
	in := &BillInput{Month: "2026-11", Prices: PriceSchedule{Fallback: examplePrices(t)},
		Departments: []Department{{Name: "lands", DisplayName: "Department of Lands", CostCentre: "CC-1001"}, {Name: "health", CostCentre: "CC-2002"}},
		Usage: []DatedAmount{
			{Day: "2026-11-02", Department: "lands", Resource: ResNetTxBytes, Item: "lands-web", Amount: 3 << 30},
			{Day: "2026-11-02", Department: "lands", Resource: ResNetRxBytes, Item: "lands-web", Amount: 10 << 30}, // counted, not billed
			{Day: "2026-11-02", Department: "lands", Resource: ResVCPUSeconds, Item: "vm1", Amount: 7200},
			// 1 byte of tx: 0.05/2^30 rounds to 0.00; half a cent rounds up.
			{Day: "2026-11-03", Department: "health", Resource: ResNetTxBytes, Amount: 1},
			{Day: "2026-11-03", Department: "health", Resource: ResVCPUSeconds, Item: "vm2", Amount: 450},
		}}
	b, err := in.Rate(BillOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"lands/" + ResNetTxBytes:  "0.15",
		"lands/" + ResVCPUSeconds: "0.08",
		"health/" + ResNetTxBytes: "0.00",
		// 0.125 h x 0.04 = 0.005 -> 0.01
		"health/" + ResVCPUSeconds: "0.01",
	}
	if len(b.Lines) != 2*len(billable) {
		t.Fatalf("%d lines, want every billable resource of both departments (%d): %+v", len(b.Lines), 2*len(billable), b.Lines)
	}
	for _, l := range b.Lines {
		w, ok := want[l.Department+"/"+l.Resource]
		if !ok {
			w = "0.00"
		}
		if l.Charge != w {
			t.Errorf("%s/%s charge %s, want %s", l.Department, l.Resource, l.Charge, w)
		}
		if l.Resource == ResNetRxBytes {
			t.Errorf("network_rx_bytes billed: %+v", l)
		}
	}
	// Sorted by cost centre: lands (CC-1001) first.
	if b.Total != "0.24" || b.Departments[0].Department != "lands" || b.Departments[0].Charge != "0.23" || b.Departments[1].Charge != "0.01" ||
		b.Departments[0].DisplayName != "Department of Lands" || b.CostCentres[0] != (CostCentreTotal{"CC-1001", "0.23"}) {
		t.Errorf("totals %+v %+v total %s, want lands 0.23, health 0.01, total 0.24", b.Departments, b.CostCentres, b.Total)
	}
	l := b.Lines[0]
	if l.Resource != ResNetTxBytes || l.Quantity != "3.000000" || l.Unit != "GiB" || l.PricePerUnit != "0.05" || l.BaseQuantity != 3<<30 || l.BaseUnit != "bytes" || l.From != "2026-11-01" || l.To != "2026-11-30" {
		t.Errorf("first line %+v", l)
	}
	one, err := in.Rate(BillOptions{Department: "lands"})
	if err != nil || len(one.Departments) != 1 || one.Total != "0.23" {
		t.Errorf("lands only: %+v %v", one, err)
	}
	var buf bytes.Buffer
	if err := b.Write(&buf, "csv"); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rows[0], CSVHeader) || rows[1][2] != "CC-1001" || rows[1][4] != "Department of Lands" || rows[1][9] != "3.000000" || rows[1][10] != "GiB" || rows[1][11] != "0.05" {
		t.Errorf("csv header and first line: %v\n%v", rows[0], rows[1])
	}
	if last := rows[len(rows)-1]; last[0] != "total" || last[12] != "0.24" || last[13] != "AUD" {
		t.Errorf("csv total row %v", last)
	}
	buf.Reset()
	if err := b.Write(&buf, "table"); err != nil || !strings.Contains(buf.String(), "3.000000 GiB") || !strings.Contains(buf.String(), "0.05 per GiB") ||
		!strings.Contains(buf.String(), "TOTAL (Department of Lands)") || !strings.Contains(buf.String(), "no host has reported usage yet") {
		t.Errorf("table (%v):\n%s", err, buf.String())
	}
	if err := b.Write(&buf, "xml"); err == nil {
		t.Error("xml output accepted")
	}
}

// TestAPIEndToEnd posts reports through the HTTP API with a Reporter, retries one, and reads
// the bill back with the client the CLI uses.
func TestAPIEndToEnd(t *testing.T) {
	api := &API{Ledger: NewLedger(NewMemKV()), Prices: examplePrices(t), Departments: func(context.Context) ([]Department, error) {
		return []Department{{Name: "lands"}, {Name: "health"}, {Name: "treasury"}}, nil
	}}
	clock := time.Date(2026, 11, 5, 0, 0, 0, 0, time.UTC)
	api.Ledger.Now = func() time.Time { return clock }
	srv := httptest.NewServer(serveAs(api, Caller{Name: "test", Role: RoleAdmin}))
	defer srv.Close()
	c := &Client{Base: srv.URL}
	tr := &FakeTraffic{}
	var lastRep Report
	r := &Reporter{Host: "host1", Epoch: func() string { return "boot1/42" },
		Samples: func() ([]Sample, error) { st, err := tr.Traffic(); return TrafficSamples(st), err },
		Send: func(ctx context.Context, rep Report) (Outcome, error) {
			lastRep = rep
			return c.Report(ctx, rep)
		},
		Now: func() time.Time { clock = clock.Add(time.Minute); return clock }}
	ctx := context.Background()
	if o, err := r.Once(ctx); err != nil || !o.Baseline { // counters at zero: the baseline
		t.Fatalf("first report: %+v %v", o, err)
	}
	tr.Add("lands", "lands-web", "tx", 1, 1<<30)
	tr.Add("lands", "lands-db", "tx", 1, 1<<30)
	if _, err := r.Once(ctx); err != nil {
		t.Fatal(err)
	}
	tr.Add("lands", "lands-web", "rx", 1, 5<<30)
	tr.Add("health", "health-web", "tx", 1, 10<<30)
	if _, err := r.Once(ctx); err != nil {
		t.Fatal(err)
	}
	// The agent did not hear the answer and sends the same report again.
	if o, err := c.Report(ctx, lastRep); err != nil || o.Applied {
		t.Fatalf("retried report: %+v %v", o, err)
	}
	// A failing send, then more traffic: the next report covers it.
	send := r.Send
	r.Send = func(context.Context, Report) (Outcome, error) { return Outcome{}, errors.New("controller away") }
	if _, err := r.Once(ctx); err == nil {
		t.Fatal("failing send reported no error")
	}
	r.Send = send
	tr.Add("health", "health-web", "tx", 1, 10<<30)
	o, err := r.Once(ctx)
	if err != nil || !o.Gap {
		t.Fatalf("report after a lost one: %+v %v, want a gap", o, err)
	}
	bill, err := c.Bill(ctx, "2026-11", "")
	if err != nil {
		t.Fatal(err)
	}
	// lands: 2 GiB tx x 0.05 = 0.10 (rx is the same bytes at the other host: not billed);
	// health: 20 GiB tx x 0.05 = 1.00; treasury: nothing, listed at 0.
	if bill.Total != "1.10" || len(bill.Departments) != 3 || bill.Departments[0].Charge != "1.00" || bill.Departments[1].Charge != "0.10" || bill.Departments[2].Charge != "0.00" {
		t.Fatalf("bill %+v", bill)
	}
	if len(bill.MeteredUpTo) != 1 || bill.MeteredUpTo[0].Host != "host1" || !bill.MeteredUpTo[0].Time.Equal(lastRep.Time) {
		t.Fatalf("freshness %+v, want host1 at %s", bill.MeteredUpTo, lastRep.Time)
	}
	if b, err := c.Bill(ctx, "2026-11", "treasury"); err != nil || b.Total != "0.00" || len(b.Departments) != 1 {
		t.Fatalf("bill of a department without usage: %+v %v", b, err)
	}
	if _, err := c.Bill(ctx, "2026-11", "nosuch"); err == nil || !strings.Contains(err.Error(), `department "nosuch" does not exist (departments: health, lands, treasury)`) {
		t.Fatalf("bill of an unknown department: %v", err)
	}
	if _, err := c.Bill(ctx, "november", ""); err == nil || !strings.Contains(err.Error(), "november") {
		t.Fatalf("bad month: %v", err)
	}
	if _, err := c.Report(ctx, Report{Reporter: "h/1", Seq: 1, Time: clock}); err == nil {
		t.Fatal("invalid report accepted")
	}
}

func TestDefaultPricesAreTheExample(t *testing.T) {
	got, want := DefaultPrices(), examplePrices(t)
	want.Name = got.Name
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("built-in prices differ from deploy/examples/prices.yaml:\n%+v\n%+v", got, want)
	}
}

// serveAs serves a's routes as the controller would, with every request from caller c.
func serveAs(a *API, c Caller) http.Handler {
	mux := http.NewServeMux()
	for _, rt := range a.Routes() {
		mux.HandleFunc(rt.Pattern, func(w http.ResponseWriter, r *http.Request) {
			if err := rt.Handle(w, r, c); err != nil {
				status := http.StatusInternalServerError
				var re *RequestError
				var fe *ForbiddenError
				switch {
				case errors.As(err, &re):
					status = http.StatusBadRequest
				case errors.As(err, &fe):
					status = http.StatusForbidden
				}
				var oe *OpenMonthError
				if errors.As(err, &oe) {
					status = http.StatusConflict
				}
				http.Error(w, `{"error":"`+err.Error()+`"}`, status)
			}
		})
	}
	return mux
}

// TestAPIAccess: who may report and read, decided by the routes the controller mounts.
func TestAPIAccess(t *testing.T) {
	a := &API{Ledger: NewLedger(NewMemKV()), Prices: examplePrices(t), Departments: func(context.Context) ([]Department, error) {
		return []Department{{Name: "lands"}, {Name: "health"}}, nil
	}}
	rep := `{"reporter":"host1","epoch":"e","seq":1,"time":"` + time.Now().UTC().Format(time.RFC3339) + `","samples":[]}`
	for _, tc := range []struct {
		name       string
		c          Caller
		method     string
		path, body string
		want       int
	}{
		{"admin reports for any host", Caller{Role: RoleAdmin}, "POST", "/v1/usage/reports", rep, 200},
		{"agent reports for its host", Caller{Role: RoleAgent, Host: "host1"}, "POST", "/v1/usage/reports", rep, 200},
		{"agent reports for another host", Caller{Role: RoleAgent, Host: "host2"}, "POST", "/v1/usage/reports", rep, 403},
		{"department reports", Caller{Role: RoleDepartment, Department: "lands"}, "POST", "/v1/usage/reports", rep, 403},
		{"network reports", Caller{Role: RoleNetwork}, "POST", "/v1/usage/reports", rep, 403},
		{"unknown field in a report", Caller{Role: RoleAdmin}, "POST", "/v1/usage/reports", `{"reporter":"host1","colour":1}`, 400},
		{"admin reads all", Caller{Role: RoleAdmin}, "GET", "/v1/usage?month=2026-11", "", 200},
		{"network reads all", Caller{Role: RoleNetwork}, "GET", "/v1/usage?month=2026-11", "", 200},
		{"department reads its own", Caller{Role: RoleDepartment, Department: "lands"}, "GET", "/v1/usage?month=2026-11&department=lands", "", 200},
		{"department reads another", Caller{Role: RoleDepartment, Department: "lands"}, "GET", "/v1/usage?month=2026-11&department=health", "", 403},
		{"agent reads usage", Caller{Role: RoleAgent, Host: "host1"}, "GET", "/v1/usage?month=2026-11", "", 403},
		{"no role reads usage", Caller{}, "GET", "/v1/usage?month=2026-11", "", 403},
		{"anonymous reads (a controller with --anonymous-read)", Caller{Role: RoleAnonymous}, "GET", "/v1/usage?month=2026-11", "", 200},
		{"anonymous reports", Caller{Role: RoleAnonymous}, "POST", "/v1/usage/reports", rep, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			serveAs(a, tc.c).ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body)))
			if w.Code != tc.want {
				t.Errorf("status %d, want %d: %s", w.Code, tc.want, w.Body)
			}
		})
	}
}
