package metering

import (
	"bytes"
	"context"
	"encoding/csv"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// priceList is the example list with tx at txPrice, effective from day ("" for a fallback).
func priceList(t *testing.T, name, day, txPrice string) *PriceList {
	p := examplePrices(t)
	p.Name, p.EffectiveFrom = name, day
	for i := range p.Prices {
		if p.Prices[i].Resource == ResNetTxBytes {
			p.Prices[i].Price = txPrice
		}
	}
	return p
}

// billEnv is an API over a memory ledger with a settable clock, price lists and departments,
// read over HTTP with the client the CLI uses.
type billEnv struct {
	api   *API
	clock time.Time
	lists []*PriceList
	depts []Department
	c     *Client
	seq   uint64
	tx    map[string]uint64 // segment -> trunk total
}

func newBillEnv(t *testing.T, start time.Time) *billEnv {
	e := &billEnv{clock: start, tx: map[string]uint64{},
		depts: []Department{{Name: "lands", DisplayName: "Department of Lands", CostCentre: "CC-1001"}, {Name: "health", DisplayName: "Department of Health", CostCentre: "CC-2002"}, {Name: "treasury", DisplayName: "Treasury", CostCentre: "CC-1001"}}}
	e.api = &API{Ledger: NewLedger(NewMemKV()), Prices: examplePrices(t),
		PriceLists:  func(context.Context) ([]*PriceList, error) { return e.lists, nil },
		Departments: func(context.Context) ([]Department, error) { return e.depts, nil }}
	e.api.Ledger.Now = func() time.Time { return e.clock }
	srv := httptest.NewServer(serveAs(e.api, Caller{Name: "test", Role: RoleAdmin}))
	t.Cleanup(srv.Close)
	e.c = &Client{Base: srv.URL}
	return e
}

// report sends host1's network totals at the clock, after adding bytes to segment seg.
func (e *billEnv) report(t *testing.T, seg string, bytes uint64) {
	t.Helper()
	e.tx[seg] += bytes
	var ss []Sample
	for s, v := range e.tx {
		ss = append(ss, Sample{Department: strings.Split(s, "-")[0], Resource: ResNetTxBytes, Item: s, Total: v})
	}
	e.seq++
	if _, err := e.c.Report(context.Background(), Report{Host: "host1", Source: SourceNetwork, Epoch: "e", Seq: e.seq, PrevSeq: e.seq - 1, Time: e.clock, Samples: ss}); err != nil {
		t.Fatal(err)
	}
}

func (e *billEnv) invoice(t *testing.T, month, format string, opt BillOptions) (string, error) {
	t.Helper()
	b, err := e.c.Invoice(context.Background(), month, opt)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	if err := b.Write(&buf, format); err != nil {
		t.Fatal(err)
	}
	return buf.String(), nil
}

// TestPriceChangeMidMonth: a list effective on the 15th rates the 15th on; the days before
// keep the list before it. Each half is its own line, with its own price.
func TestPriceChangeMidMonth(t *testing.T) {
	e := newBillEnv(t, time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC))
	e.lists = []*PriceList{priceList(t, "nov", "2026-11-01", "0.05"), priceList(t, "mid-nov", "2026-11-15", "0.10")}
	e.report(t, "lands-web", 0) // baseline
	e.clock = e.clock.Add(time.Minute)
	e.report(t, "lands-web", 2<<30) // the 10th: 2 GiB at 0.05
	e.clock = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	e.report(t, "lands-web", 0) // the gap: nothing new, so the 20th's bytes are only what follows
	e.clock = e.clock.Add(time.Minute)
	e.report(t, "lands-web", 3<<30) // the 20th: 3 GiB at 0.10
	b, err := e.c.Bill(context.Background(), "2026-11", "lands")
	if err != nil {
		t.Fatal(err)
	}
	var tx []Line
	for _, l := range b.Lines {
		if l.Resource == ResNetTxBytes {
			tx = append(tx, l)
		}
	}
	want := []Line{
		{From: "2026-11-01", To: "2026-11-14", Quantity: "2.000000", PricePerUnit: "0.05", Charge: "0.10", PriceList: "nov", BaseQuantity: 2 << 30},
		{From: "2026-11-15", To: "2026-11-30", Quantity: "3.000000", PricePerUnit: "0.10", Charge: "0.30", PriceList: "mid-nov", BaseQuantity: 3 << 30},
	}
	if len(tx) != 2 {
		t.Fatalf("tx lines %+v, want two halves", tx)
	}
	for i, w := range want {
		g := tx[i]
		if g.From != w.From || g.To != w.To || g.Quantity != w.Quantity || g.PricePerUnit != w.PricePerUnit || g.Charge != w.Charge || g.PriceList != w.PriceList || g.BaseQuantity != w.BaseQuantity {
			t.Errorf("half %d: %+v, want %+v", i, g, w)
		}
	}
	if b.Total != "0.40" {
		t.Errorf("total %s, want 0.40", b.Total)
	}
	// Memory levels held across the change are split at midnight: each side its own price.
	in := &BillInput{Month: "2026-11", Prices: PriceSchedule{Fallback: examplePrices(t), Lists: e.lists}}
	l := NewLedger(NewMemKV())
	l.Now = func() time.Time { return time.Date(2026, 11, 15, 0, 0, 0, 0, time.UTC) }
	l.Limits.ClockSkew = 2 * time.Hour
	rep := func(seq uint64, at time.Time) Report {
		return Report{Host: "h", Source: SourceCompute, Epoch: "e", Seq: seq, PrevSeq: seq - 1, Time: at,
			Samples: []Sample{{Department: "lands", Resource: ResMemoryMiBSeconds, Item: "vm1", Gauge: true, Level: 1024}}}
	}
	mustRecord(t, l, rep(1, time.Date(2026, 11, 14, 23, 0, 0, 0, time.UTC)))
	mustRecord(t, l, rep(2, time.Date(2026, 11, 15, 1, 0, 0, 0, time.UTC)))
	if in.Usage, err = l.Dated(context.Background(), "2026-11"); err != nil {
		t.Fatal(err)
	}
	if len(in.Usage) != 2 || in.Usage[0].Day != "2026-11-14" || in.Usage[0].Amount != 1024*3600 || in.Usage[1].Day != "2026-11-15" || in.Usage[1].Amount != 1024*3600 {
		t.Fatalf("memory across midnight: %+v, want an hour on each day", in.Usage)
	}
}

// TestInvoiceFrozen: once a month closes (grace included) its invoice is frozen: the same
// bytes in every format after a price list, a department's name and more usage change.
func TestInvoiceFrozen(t *testing.T) {
	e := newBillEnv(t, time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC))
	e.report(t, "lands-web", 0)
	e.clock = e.clock.Add(time.Minute)
	e.tx["health-web"] = 7 << 30
	e.report(t, "lands-web", 5<<30)
	if _, err := e.invoice(t, "2026-11", "csv", BillOptions{}); err == nil || !strings.Contains(err.Error(), "month 2026-11 is open until 2026-12-01T01:00:00Z") {
		t.Fatalf("invoice of an open month: %v", err)
	}
	e.clock = time.Date(2026, 12, 1, 0, 59, 0, 0, time.UTC) // in the grace hour: still open
	e.report(t, "lands-web", 0)
	if _, err := e.invoice(t, "2026-11", "csv", BillOptions{}); err == nil {
		t.Fatal("invoice in the grace period")
	}
	e.clock = time.Date(2026, 12, 1, 1, 0, 30, 0, time.UTC)
	if err := e.api.FreezeClosed(context.Background()); err != nil {
		t.Fatal(err)
	}
	opts := []BillOptions{{}, {By: "segment"}, {Department: "lands"}, {CostCentre: "CC-1001"}}
	before := map[string]string{}
	for _, f := range Formats {
		for _, o := range opts {
			s, err := e.invoice(t, "2026-11", f, o)
			if err != nil {
				t.Fatal(err)
			}
			before[f+"/"+o.By+o.Department+o.CostCentre] = s
		}
	}
	if !strings.Contains(before["csv/"], "line,2026-11,CC-1001,lands,Department of Lands,network_tx_bytes,,2026-11-01,2026-11-30,5.000000,GiB,0.05,0.25,AUD") {
		t.Fatalf("invoice:\n%s", before["csv/"])
	}
	// A new price list reaching back into November, a renamed department, and a report dated
	// in November, refused.
	e.lists = []*PriceList{priceList(t, "dearer", "2026-11-01", "9.99")}
	e.depts[0].DisplayName, e.depts[0].CostCentre = "Lands and Titles", "CC-9999"
	e.clock = e.clock.Add(time.Minute)
	e.report(t, "lands-web", 1<<30) // dated December
	for _, f := range Formats {
		for _, o := range opts {
			s, err := e.invoice(t, "2026-11", f, o)
			if err != nil {
				t.Fatal(err)
			}
			if k := f + "/" + o.By + o.Department + o.CostCentre; s != before[k] {
				t.Errorf("invoice %s changed:\n%s\nwas:\n%s", k, s, before[k])
			}
		}
	}
	// The usage verb's bill of a closed month is the invoice; December's follows the change.
	b, err := e.c.Bill(context.Background(), "2026-11", "")
	if err != nil || b.Status != "closed" || b.Total != "0.60" {
		t.Fatalf("november's bill after the change: %+v %v", b, err)
	}
	dec, err := e.c.Bill(context.Background(), "2026-12", "lands")
	if err != nil || dec.Total != "9.99" || dec.Departments[0].CostCentre != "CC-9999" {
		t.Fatalf("december's bill: %+v %v", dec, err)
	}
}

// TestBillDepartmentsAndBreakdowns: every department is listed, usage or not; an unknown one
// is an error; --by breaks the resource of that kind down by item, and the CSV per cost
// centre holds only that cost centre's departments.
func TestBillDepartmentsAndBreakdowns(t *testing.T) {
	in := &BillInput{Month: "2026-11", Prices: PriceSchedule{Fallback: examplePrices(t)},
		Departments: []Department{{Name: "lands", CostCentre: "CC-1001"}, {Name: "health", CostCentre: "CC-2002"}, {Name: "treasury", CostCentre: "CC-1001"}},
		Usage: []DatedAmount{
			{Day: "2026-11-02", Department: "lands", Resource: ResNetTxBytes, Item: "lands-web", Amount: 1 << 30},
			{Day: "2026-11-02", Department: "lands", Resource: ResNetTxBytes, Item: "lands-db", Amount: 2 << 30},
			{Day: "2026-11-02", Department: "lands", Resource: ResNetVIPInBytes, Item: "lands-www", Amount: 4 << 30},
			{Day: "2026-11-03", Department: "lands", Resource: ResVCPUSeconds, Item: "vm1", Amount: 3600},
			{Day: "2026-11-04", Department: "lands", Resource: ResVCPUSeconds, Item: "vm2", Amount: 7200},
			{Day: "2026-11-04", Department: "gone", Resource: ResVCPUSeconds, Item: "vm9", Amount: 3600},
		}}
	b, err := in.Rate(BillOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range b.Departments {
		got = append(got, d.CostCentre+"/"+d.Department+"="+d.Charge)
	}
	if w := "/gone=0.04 CC-1001/lands=0.35 CC-1001/treasury=0.00 CC-2002/health=0.00"; strings.Join(got, " ") != w {
		t.Errorf("departments %v, want %s (a deleted department with usage stays)", got, w)
	}
	if _, err := in.Rate(BillOptions{Department: "nosuch"}); err == nil || err.Error() != `department "nosuch" does not exist (departments: gone, health, lands, treasury)` {
		t.Errorf("unknown department: %v", err)
	}
	if _, err := in.Rate(BillOptions{By: "colour"}); err == nil || !strings.Contains(err.Error(), `breakdown "colour": want one of vm, service, segment`) {
		t.Errorf("unknown breakdown: %v", err)
	}
	for _, tc := range []struct {
		by, res string
		want    []string // item=charge
	}{
		{"segment", ResNetTxBytes, []string{"lands-db=0.10", "lands-web=0.05"}},
		{"service", ResNetVIPInBytes, []string{"lands-www=0.08"}},
		{"vm", ResVCPUSeconds, []string{"vm1=0.04", "vm2=0.08"}},
	} {
		b, err := in.Rate(BillOptions{Department: "lands", By: tc.by})
		if err != nil {
			t.Fatal(err)
		}
		var items []string
		for _, l := range b.Lines {
			if l.Resource == tc.res {
				items = append(items, l.Item+"="+l.Charge)
			} else if l.Item != "" {
				t.Errorf("--by %s broke down %s: %+v", tc.by, l.Resource, l)
			}
		}
		if strings.Join(items, " ") != strings.Join(tc.want, " ") || b.Total != "0.35" {
			t.Errorf("--by %s: %v total %s, want %v total 0.35", tc.by, items, b.Total, tc.want)
		}
	}
	cc, err := in.Rate(BillOptions{CostCentre: "CC-1001"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := cc.Write(&buf, "csv"); err != nil {
		t.Fatal(err)
	}
	rows, _ := csv.NewReader(&buf).ReadAll()
	for _, r := range rows[1:] {
		if r[0] != "total" && r[2] != "CC-1001" {
			t.Errorf("CSV of cost centre CC-1001 holds %v", r)
		}
	}
	if last := rows[len(rows)-1]; last[12] != "0.35" {
		t.Errorf("CC-1001 total %v", last)
	}
	if _, err := in.Rate(BillOptions{CostCentre: "CC-0000"}); err == nil {
		t.Error("unknown cost centre accepted")
	}
}

// TestPerSegmentUpgrade: an agent that reported per-department totals, upgraded to report per
// segment, adds only what grew since: nothing counted before is counted again.
func TestPerSegmentUpgrade(t *testing.T) {
	l := NewLedger(NewMemKV())
	at := time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
	l.Now = func() time.Time { return at }
	rep := func(seq uint64, ss ...Sample) Report {
		return Report{Host: "h", Source: SourceNetwork, Epoch: "e", Seq: seq, PrevSeq: seq - 1, Time: at.Add(time.Duration(seq) * time.Minute), Samples: ss}
	}
	mustRecord(t, l, rep(1, Sample{Department: "lands", Resource: ResNetTxBytes, Total: 1000}))
	mustRecord(t, l, rep(2, Sample{Department: "lands", Resource: ResNetTxBytes, Total: 1500})) // +500
	at = at.Add(3 * time.Minute)
	// Upgraded: the same counters per segment, 100 more bytes on lands-web since.
	mustRecord(t, l, rep(3, Sample{Department: "lands", Resource: ResNetTxBytes, Item: "lands-db", Total: 400}, Sample{Department: "lands", Resource: ResNetTxBytes, Item: "lands-web", Total: 1200}))
	mustRecord(t, l, rep(4, Sample{Department: "lands", Resource: ResNetTxBytes, Item: "lands-db", Total: 450}, Sample{Department: "lands", Resource: ResNetTxBytes, Item: "lands-web", Total: 1200}))
	u, _ := l.Usage(context.Background(), "2026-11")
	if got := u["lands"][ResNetTxBytes]; got != 500+100+50 {
		t.Fatalf("tx %d, want 650 (500 before the upgrade, 100 across it, 50 after)", got)
	}
}

// TestVIPSamples: only public VIPs of known services are billed (an internal VIP's frames
// crossed the trunk already, as network_tx_bytes).
func TestVIPSamples(t *testing.T) {
	got := VIPSamples([]ServiceCounter{
		{Department: "lands", Service: "lands-www", Public: true, Bytes: 100},
		{Department: "lands", Service: "lands-int", Public: false, Bytes: 200},
		{Service: "198.19.255.9", Public: true, Bytes: 300}, // no service of the desired state
	})
	if len(got) != 1 || got[0] != (Sample{Department: "lands", Resource: ResNetVIPInBytes, Item: "lands-www", Total: 100}) {
		t.Fatalf("VIP samples %+v", got)
	}
}
