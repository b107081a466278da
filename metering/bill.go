package metering

import (
	"cmp"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// ResourceInfo says what a billable resource is, for the people reading a bill.
type ResourceInfo struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	BaseUnit    string `json:"baseUnit"` // the unit the ledger counts in
	ItemKind    string `json:"itemKind"` // what --by breaks it down by: segment, service or vm
}

// billable are the resources a bill rates, in the order bills list them (the PriceList kind's
// resources: controlplane/config.BillableResources). network_rx_bytes is counted, not
// billed: it is network_tx_bytes again, at the receiving host.
var billable = []ResourceInfo{
	{ResNetTxBytes, "east-west: bytes the department's segments sent to other hosts over the trunk, counted once at the sending host", "bytes", "segment"},
	{ResNetVIPInBytes, "north-south: bytes from the fabric to the department's public VIPs, counted once by the host that balanced them", "bytes", "service"},
	{ResVCPUSeconds, "vCPU time of the department's VMs", "vCPU-seconds", "vm"},
	{ResMemoryMiBSeconds, "memory allocated to the department's VMs, over time", "MiB-seconds", "vm"},
	{ResVolumeGiBSeconds, "disk allocated to the department's VMs (volumes and root disks), over time", "GiB-seconds", "vm"},
}

// BillableResources lists what a bill rates, in bill order.
func BillableResources() []ResourceInfo { return slices.Clone(billable) }

// Breakdowns are the values of BillOptions.By.
var Breakdowns = []string{"vm", "service", "segment"}

// Department is a department as its bill names it.
type Department struct {
	Name        string `json:"name"`
	DisplayName string `json:"displayName,omitempty"`
	CostCentre  string `json:"costCentre,omitempty"`
}

// PriceSchedule is the price lists over time: each list from its EffectiveFrom until the next
// one's; Fallback (GOVCLOUD_PRICES or the built-in list) before the first.
type PriceSchedule struct {
	Lists    []*PriceList `json:"lists,omitempty"`
	Fallback *PriceList   `json:"fallback"`
}

// at returns the list in effect on day ("YYYY-MM-DD").
func (s PriceSchedule) at(day string) *PriceList {
	p := s.Fallback
	for _, l := range s.Lists {
		if l.EffectiveFrom <= day {
			p = l
		}
	}
	return p
}

// period is the part of a month one price list rates: days From to To, inclusive.
type period struct {
	From, To string
	Prices   *PriceList
}

// periods cuts a month at the days a price list takes effect.
func (s PriceSchedule) periods(month string) []period {
	start, _ := time.Parse("2006-01", month)
	end := start.AddDate(0, 1, -1)
	var out []period
	for d := start; !d.After(end); d = d.AddDate(0, 0, 1) {
		day := Day(d)
		p := s.at(day)
		if len(out) == 0 || out[len(out)-1].Prices != p {
			out = append(out, period{From: day, To: day, Prices: p})
			continue
		}
		out[len(out)-1].To = day
	}
	return out
}

// BillInput is everything a month's bill is computed from. A closed month's input is frozen
// in the ledger (its invoice): the bill, in every format and breakdown, is then a function of
// stored data only and never changes again.
type BillInput struct {
	Month       string        `json:"month"`
	Usage       []DatedAmount `json:"usage"`
	Prices      PriceSchedule `json:"prices"`
	Departments []Department  `json:"departments"`
	Reports     []LastReport  `json:"reports"`            // each reporter's last counted report
	ClosesAt    time.Time     `json:"closesAt"`           // when the month closes (grace included)
	FrozenAt    *time.Time    `json:"frozenAt,omitempty"` // set: the month is closed, this is its invoice
}

// BillOptions select and break down a bill.
type BillOptions struct {
	Department string // "" every department
	CostCentre string // "" every cost centre
	By         string // "" totals per resource; vm, service or segment: per item of that kind
}

// Line is one department's use of one resource (of one item, with By) in one price period.
type Line struct {
	CostCentre   string `json:"costCentre"`
	Department   string `json:"department"`
	DisplayName  string `json:"displayName"`
	Resource     string `json:"resource"`
	Item         string `json:"item,omitempty"`
	From         string `json:"from"` // first day of the period (UTC)
	To           string `json:"to"`   // last day, inclusive
	Quantity     string `json:"quantity"`
	Unit         string `json:"unit"`
	PricePerUnit string `json:"pricePerUnit"`
	Charge       string `json:"charge"`
	PriceList    string `json:"priceList"`
	BaseQuantity uint64 `json:"baseQuantity"` // what the ledger counted, in BaseUnit
	BaseUnit     string `json:"baseUnit"`
}

// DepartmentTotal is one department's charge for the month.
type DepartmentTotal struct {
	CostCentre  string `json:"costCentre"`
	Department  string `json:"department"`
	DisplayName string `json:"displayName"`
	Charge      string `json:"charge"`
}

// CostCentreTotal is one cost centre's charge for the month.
type CostCentreTotal struct {
	CostCentre string `json:"costCentre"`
	Charge     string `json:"charge"`
}

// Bill is a month's chargeback report. Charges are rounded to cents per line (half away from
// zero) and totals are sums of rounded lines, so a bill adds up.
type Bill struct {
	Month       string            `json:"month"`
	Currency    string            `json:"currency"`
	Status      string            `json:"status"` // open | closed
	ClosesAt    time.Time         `json:"closesAt"`
	FrozenAt    *time.Time        `json:"frozenAt,omitempty"`
	By          string            `json:"by,omitempty"`
	Lines       []Line            `json:"lines"`
	Departments []DepartmentTotal `json:"departments"`
	CostCentres []CostCentreTotal `json:"costCentres"`
	Total       string            `json:"total"`
	// MeteredUpTo is each reporter's last counted report: usage after it is not in the bill yet.
	MeteredUpTo []LastReport   `json:"meteredUpTo"`
	Resources   []ResourceInfo `json:"resources"`
}

// UnknownDepartmentError is a bill asked for a department that does not exist.
type UnknownDepartmentError struct {
	Department string
	Known      []string
}

func (e *UnknownDepartmentError) Error() string {
	return fmt.Sprintf("department %q does not exist (departments: %s)", e.Department, strings.Join(e.Known, ", "))
}

// Rate prices the input's month. Every department of the input is listed, those without
// usage too (at 0), and departments no longer configured that have usage. Each price period
// of the month (cut at the days price lists take effect) is rated with its own list.
func (in *BillInput) Rate(opt BillOptions) (Bill, error) {
	if opt.By != "" && !slices.Contains(Breakdowns, opt.By) {
		return Bill{}, fmt.Errorf("breakdown %q: want one of %s", opt.By, strings.Join(Breakdowns, ", "))
	}
	if in.Prices.Fallback == nil {
		return Bill{}, fmt.Errorf("bill %s: no price list", in.Month)
	}
	depts := map[string]Department{}
	for _, d := range in.Departments {
		depts[d.Name] = d
	}
	for _, a := range in.Usage {
		if _, ok := depts[a.Department]; !ok {
			depts[a.Department] = Department{Name: a.Department, DisplayName: "(department deleted)"}
		}
	}
	if opt.Department != "" {
		d, ok := depts[opt.Department]
		if !ok {
			known := make([]string, 0, len(depts))
			for n := range depts {
				known = append(known, n)
			}
			slices.Sort(known)
			return Bill{}, &UnknownDepartmentError{opt.Department, known}
		}
		depts = map[string]Department{d.Name: d}
	}
	if opt.CostCentre != "" {
		for n, d := range depts {
			if d.CostCentre != opt.CostCentre {
				delete(depts, n)
			}
		}
		if len(depts) == 0 {
			return Bill{}, fmt.Errorf("cost centre %q: no department has it", opt.CostCentre)
		}
	}
	periods := in.Prices.periods(in.Month)
	cur := periods[0].Prices.Currency
	for _, p := range periods {
		if p.Prices.Currency != cur {
			return Bill{}, fmt.Errorf("bill %s: price list %q (%s) and %q (%s) rate one month in two currencies", in.Month, periods[0].Prices.Name, cur, p.Prices.Name, p.Prices.Currency)
		}
	}
	// quantity: department -> resource -> period index -> item -> amount.
	type key struct {
		dept, res string
		period    int
		item      string
	}
	q := map[key]*big.Int{}
	broken := func(res string) bool {
		i := slices.IndexFunc(billable, func(r ResourceInfo) bool { return r.Name == res })
		return opt.By != "" && billable[i].ItemKind == opt.By
	}
	for _, a := range in.Usage {
		if _, ok := depts[a.Department]; !ok || !slices.ContainsFunc(billable, func(r ResourceInfo) bool { return r.Name == a.Resource }) {
			continue
		}
		day := a.Day
		if day == "" {
			day = in.Month + "-01" // undated: from before usage was dated by day
		}
		pi := slices.IndexFunc(periods, func(p period) bool { return p.From <= day && day <= p.To })
		item := ""
		if broken(a.Resource) {
			item = a.Item
		}
		k := key{a.Department, a.Resource, pi, item}
		if q[k] == nil {
			q[k] = new(big.Int)
		}
		q[k].Add(q[k], new(big.Int).SetUint64(a.Amount))
	}
	names := make([]string, 0, len(depts))
	for n := range depts {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(depts[a].CostCentre, depts[b].CostCentre), cmp.Compare(a, b))
	})
	b := Bill{Month: in.Month, Currency: cur, Status: "open", ClosesAt: in.ClosesAt, FrozenAt: in.FrozenAt, By: opt.By,
		Lines: []Line{}, Departments: []DepartmentTotal{}, CostCentres: []CostCentreTotal{}, MeteredUpTo: in.Reports, Resources: BillableResources()}
	if in.FrozenAt != nil {
		b.Status = "closed"
	}
	if b.MeteredUpTo == nil {
		b.MeteredUpTo = []LastReport{}
	}
	total := new(big.Rat)
	ccTotals := map[string]*big.Rat{}
	var ccOrder []string
	for _, n := range names {
		d := depts[n]
		dt := new(big.Rat)
		for _, r := range billable {
			for pi, p := range periods {
				var items []string
				for k := range q {
					if k.dept == n && k.res == r.Name && k.period == pi {
						items = append(items, k.item)
					}
				}
				if len(items) == 0 {
					items = []string{""} // no usage: listed at 0
				}
				slices.Sort(items)
				for _, item := range items {
					amount := q[key{n, r.Name, pi, item}]
					if amount == nil {
						amount = new(big.Int)
					}
					l, charge := rateLine(p, r, amount)
					l.CostCentre, l.Department, l.DisplayName, l.Item = d.CostCentre, n, d.DisplayName, item
					dt.Add(dt, charge)
					b.Lines = append(b.Lines, l)
				}
			}
		}
		total.Add(total, dt)
		if ccTotals[d.CostCentre] == nil {
			ccTotals[d.CostCentre] = new(big.Rat)
			ccOrder = append(ccOrder, d.CostCentre)
		}
		ccTotals[d.CostCentre].Add(ccTotals[d.CostCentre], dt)
		b.Departments = append(b.Departments, DepartmentTotal{CostCentre: d.CostCentre, Department: n, DisplayName: d.DisplayName, Charge: dt.FloatString(2)})
	}
	for _, cc := range ccOrder {
		b.CostCentres = append(b.CostCentres, CostCentreTotal{CostCentre: cc, Charge: ccTotals[cc].FloatString(2)})
	}
	b.Total = total.FloatString(2)
	return b, nil
}

// rateLine prices amount base units of r in period p.
func rateLine(p period, r ResourceInfo, amount *big.Int) (Line, *big.Rat) {
	pr, ok := p.Prices.price(r.Name)
	if !ok {
		pr = Price{Resource: r.Name, Unit: r.BaseUnit, UnitSize: 1, Price: "0"}
	}
	unitPrice, _ := new(big.Rat).SetString(pr.Price)
	units := new(big.Rat).SetFrac(amount, new(big.Int).SetUint64(pr.UnitSize))
	charge := roundCents(new(big.Rat).Mul(units, unitPrice))
	return Line{Resource: r.Name, From: p.From, To: p.To, Quantity: units.FloatString(6), Unit: pr.Unit,
		PricePerUnit: pr.Price, Charge: charge.FloatString(2), PriceList: p.Prices.Name,
		BaseQuantity: satUint64(amount), BaseUnit: r.BaseUnit}, charge
}

func satUint64(x *big.Int) uint64 {
	if x.IsUint64() {
		return x.Uint64()
	}
	return ^uint64(0)
}

func roundCents(r *big.Rat) *big.Rat {
	c := new(big.Rat).Mul(r, big.NewRat(100, 1))
	n := new(big.Int).Mul(c.Num(), big.NewInt(2))
	n.Add(n, c.Denom())
	n.Quo(n, new(big.Int).Mul(c.Denom(), big.NewInt(2))) // floor(c + 1/2) for c >= 0
	return new(big.Rat).SetFrac(n, big.NewInt(100))
}

// Formats are the output formats of Bill.Write.
var Formats = []string{"table", "csv", "json"}

// CSVHeader is the first row of a bill as CSV: one row per line, then the totals (record says
// which). quantity is in unit, price_per_unit is per one unit, charge and totals in currency;
// base_quantity is what the ledger counted, in base_unit.
var CSVHeader = []string{"record", "month", "cost_centre", "department", "department_name", "resource", "item",
	"period_first_day", "period_last_day", "quantity", "unit", "price_per_unit", "charge", "currency",
	"base_quantity", "base_unit", "price_list"}

// Write prints a bill as csv, json or table.
func (b Bill) Write(w io.Writer, format string) error {
	switch format {
	case "json":
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		return e.Encode(b)
	case "csv":
		cw := csv.NewWriter(w)
		_ = cw.Write(CSVHeader)
		for _, l := range b.Lines {
			_ = cw.Write([]string{"line", b.Month, l.CostCentre, l.Department, l.DisplayName, l.Resource, l.Item, l.From, l.To,
				l.Quantity, l.Unit, l.PricePerUnit, l.Charge, b.Currency, fmt.Sprint(l.BaseQuantity), l.BaseUnit, l.PriceList})
		}
		for _, d := range b.Departments {
			_ = cw.Write([]string{"department_total", b.Month, d.CostCentre, d.Department, d.DisplayName, "", "", "", "", "", "", "", d.Charge, b.Currency, "", "", ""})
		}
		for _, c := range b.CostCentres {
			_ = cw.Write([]string{"cost_centre_total", b.Month, c.CostCentre, "", "", "", "", "", "", "", "", "", c.Charge, b.Currency, "", "", ""})
		}
		_ = cw.Write([]string{"total", b.Month, "", "", "", "", "", "", "", "", "", "", b.Total, b.Currency, "", "", ""})
		cw.Flush()
		return cw.Error()
	case "table", "":
		if b.Status == "closed" {
			fmt.Fprintf(w, "Bill for %s in %s: closed, invoice frozen %s (it never changes again).\n", b.Month, b.Currency, b.FrozenAt.UTC().Format(time.RFC3339))
		} else {
			fmt.Fprintf(w, "Bill for %s in %s: open, closes %s; usage is counted when agents report (every minute):\n", b.Month, b.Currency, b.ClosesAt.UTC().Format(time.RFC3339))
		}
		if len(b.MeteredUpTo) == 0 {
			fmt.Fprintln(w, "  no host has reported usage yet")
		}
		for _, r := range b.MeteredUpTo {
			fmt.Fprintf(w, "  %s (%s) metered up to %s\n", r.Host, r.Source, r.Time.UTC().Format(time.RFC3339))
		}
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		item := ""
		if b.By != "" {
			item = "\t" + strings.ToUpper(b.By)
		}
		fmt.Fprintf(tw, "COST CENTRE\tDEPARTMENT\tRESOURCE%s\tPERIOD\tQUANTITY\tPRICE (%s)\tCHARGE (%s)\n", item, b.Currency, b.Currency)
		for _, l := range b.Lines {
			it := ""
			if b.By != "" {
				it = "\t" + cmp.Or(l.Item, "-")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s%s\t%s..%s\t%s %s\t%s per %s\t%s\n", cmp.Or(l.CostCentre, "-"), l.Department, l.Resource, it, l.From[5:], l.To[5:], l.Quantity, l.Unit, l.PricePerUnit, l.Unit, l.Charge)
		}
		pad := ""
		if b.By != "" {
			pad = "\t"
		}
		for _, d := range b.Departments {
			fmt.Fprintf(tw, "%s\t%s\tTOTAL (%s)%s\t\t\t\t%s\n", cmp.Or(d.CostCentre, "-"), d.Department, cmp.Or(d.DisplayName, d.Department), pad, d.Charge)
		}
		for _, c := range b.CostCentres {
			fmt.Fprintf(tw, "%s\tALL\tTOTAL%s\t\t\t\t%s\n", cmp.Or(c.CostCentre, "-"), pad, c.Charge)
		}
		fmt.Fprintf(tw, "ALL\tALL\tTOTAL%s\t\t\t\t%s\n", pad, b.Total)
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)
		for _, r := range b.Resources {
			fmt.Fprintf(w, "%s: %s.\n", r.Name, r.Description)
		}
		return nil
	}
	return fmt.Errorf("output format %q: want %s", strings.TrimSpace(format), strings.Join(Formats, ", "))
}
