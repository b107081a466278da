package metering

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"os"
	"strings"
	"text/tabwriter"

	"gopkg.in/yaml.v3"
)

// Price is the price of one resource: Price per Unit, where a Unit is UnitSize base units
// (e.g. network_tx_bytes priced per GiB: unitSize 1073741824).
type Price struct {
	Resource string `json:"resource" yaml:"resource"`
	Unit     string `json:"unit" yaml:"unit"`
	UnitSize uint64 `json:"unitSize" yaml:"unitSize"`
	Price    string `json:"price" yaml:"price"` // decimal, e.g. "0.05"
}

// PriceList is deploy/examples/prices.yaml.
type PriceList struct {
	APIVersion string  `json:"apiVersion" yaml:"apiVersion"`
	Kind       string  `json:"kind" yaml:"kind"`
	Currency   string  `json:"currency" yaml:"currency"`
	Prices     []Price `json:"prices" yaml:"prices"`
}

// ParsePrices reads and checks a price list.
func ParsePrices(b []byte) (*PriceList, error) {
	var p PriceList
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true) // a misspelt field is an error, not a free resource
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("price list: %w", err)
	}
	if p.Kind != "" && p.Kind != "PriceList" {
		return nil, fmt.Errorf("price list: kind %q, want PriceList", p.Kind)
	}
	if p.Currency == "" {
		return nil, fmt.Errorf("price list: no currency")
	}
	seen := map[string]bool{}
	for i, x := range p.Prices {
		if x.Resource == "" {
			return nil, fmt.Errorf("price list: price %d has no resource", i)
		}
		if seen[x.Resource] {
			return nil, fmt.Errorf("price list: resource %q priced twice", x.Resource)
		}
		seen[x.Resource] = true
		if x.UnitSize == 0 {
			return nil, fmt.Errorf("price list: resource %q: unitSize 0", x.Resource)
		}
		if r, ok := new(big.Rat).SetString(x.Price); !ok || r.Sign() < 0 {
			return nil, fmt.Errorf("price list: resource %q: price %q is not a non-negative decimal", x.Resource, x.Price)
		}
	}
	return &p, nil
}

// defaultPrices is deploy/examples/prices.yaml (a test keeps them equal): the controller's
// price list when none is configured.
const defaultPrices = `apiVersion: govcloud/v1
kind: PriceList
currency: AUD
prices:
  - {resource: network_rx_bytes,   unit: GiB,        unitSize: 1073741824, price: "0.01"}
  - {resource: network_tx_bytes,   unit: GiB,        unitSize: 1073741824, price: "0.05"}
  - {resource: vcpu_seconds,       unit: vCPU-hour,  unitSize: 3600,       price: "0.04"}
  - {resource: memory_mib_seconds, unit: GiB-hour,   unitSize: 3686400,    price: "0.005"}
  - {resource: volume_gib_seconds, unit: GiB-month,  unitSize: 2592000,    price: "0.10"}
`

// DefaultPrices returns the built-in price list (deploy/examples/prices.yaml).
func DefaultPrices() *PriceList {
	p, err := ParsePrices([]byte(defaultPrices))
	if err != nil {
		panic(err)
	}
	return p
}

// LoadPrices reads a price list file.
func LoadPrices(path string) (*PriceList, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := ParsePrices(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// Line is one department's use of one resource in a month.
type Line struct {
	Department string `json:"department" yaml:"department"`
	Resource   string `json:"resource" yaml:"resource"`
	Quantity   uint64 `json:"quantity" yaml:"quantity"` // base units
	Units      string `json:"units" yaml:"units"`       // quantity in priced units, 6 decimals
	Unit       string `json:"unit" yaml:"unit"`
	UnitPrice  string `json:"unitPrice" yaml:"unitPrice"`
	Charge     string `json:"charge" yaml:"charge"` // rounded to cents
}

// DepartmentTotal is one department's total charge.
type DepartmentTotal struct {
	Department string `json:"department" yaml:"department"`
	Charge     string `json:"charge" yaml:"charge"`
}

// Bill is a month's chargeback report.
type Bill struct {
	Month       string            `json:"month" yaml:"month"`
	Currency    string            `json:"currency" yaml:"currency"`
	Lines       []Line            `json:"lines" yaml:"lines"`
	Departments []DepartmentTotal `json:"departments" yaml:"departments"`
	Total       string            `json:"total" yaml:"total"`
}

// Rate prices a month's usage. Each line's charge is rounded to cents (half away from zero)
// and totals are sums of the rounded lines, so a bill adds up. Resources without a price are
// listed at 0. dept "" means every department.
func Rate(month string, u Usage, p *PriceList, dept string) Bill {
	prices := map[string]Price{}
	for _, x := range p.Prices {
		prices[x.Resource] = x
	}
	b := Bill{Month: month, Currency: p.Currency, Lines: []Line{}, Departments: []DepartmentTotal{}}
	total := new(big.Rat)
	for _, d := range sortedKeys(u) {
		if dept != "" && d != dept {
			continue
		}
		dt := new(big.Rat)
		for _, res := range sortedKeys(u[d]) {
			q := u[d][res]
			pr, ok := prices[res]
			if !ok {
				pr = Price{Resource: res, Unit: "unit", UnitSize: 1, Price: "0"}
			}
			unitPrice, _ := new(big.Rat).SetString(pr.Price)
			units := new(big.Rat).SetFrac(new(big.Int).SetUint64(q), new(big.Int).SetUint64(pr.UnitSize))
			charge := roundCents(new(big.Rat).Mul(units, unitPrice))
			dt.Add(dt, charge)
			b.Lines = append(b.Lines, Line{Department: d, Resource: res, Quantity: q, Units: units.FloatString(6), Unit: pr.Unit,
				UnitPrice: pr.Price, Charge: charge.FloatString(2)})
		}
		total.Add(total, dt)
		b.Departments = append(b.Departments, DepartmentTotal{Department: d, Charge: dt.FloatString(2)})
	}
	b.Total = total.FloatString(2)
	return b
}

func roundCents(r *big.Rat) *big.Rat {
	c := new(big.Rat).Mul(r, big.NewRat(100, 1))
	n := new(big.Int).Mul(c.Num(), big.NewInt(2))
	n.Add(n, c.Denom())
	n.Quo(n, new(big.Int).Mul(c.Denom(), big.NewInt(2))) // floor(c + 1/2) for c >= 0
	return new(big.Rat).SetFrac(n, big.NewInt(100))
}

// Write prints a bill as csv, json or table.
func (b Bill) Write(w io.Writer, format string) error {
	switch format {
	case "json":
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		return e.Encode(b)
	case "csv":
		cw := csv.NewWriter(w)
		_ = cw.Write([]string{"month", "department", "resource", "quantity", "units", "unit", "unit_price", "charge", "currency"})
		for _, l := range b.Lines {
			_ = cw.Write([]string{b.Month, l.Department, l.Resource, fmt.Sprint(l.Quantity), l.Units, l.Unit, l.UnitPrice, l.Charge, b.Currency})
		}
		for _, d := range b.Departments {
			_ = cw.Write([]string{b.Month, d.Department, "TOTAL", "", "", "", "", d.Charge, b.Currency})
		}
		_ = cw.Write([]string{b.Month, "ALL", "TOTAL", "", "", "", "", b.Total, b.Currency})
		cw.Flush()
		return cw.Error()
	case "table", "":
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "DEPARTMENT\tRESOURCE\tQUANTITY\tUNITS\tUNIT PRICE\tCHARGE (%s)\n", b.Currency)
		for _, l := range b.Lines {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s %s\t%s\t%s\n", l.Department, l.Resource, l.Quantity, l.Units, l.Unit, l.UnitPrice, l.Charge)
		}
		for _, d := range b.Departments {
			fmt.Fprintf(tw, "%s\tTOTAL\t\t\t\t%s\n", d.Department, d.Charge)
		}
		fmt.Fprintf(tw, "ALL\tTOTAL\t\t\t\t%s\n", b.Total)
		return tw.Flush()
	}
	return fmt.Errorf("output format %q: want csv, json or table", strings.TrimSpace(format))
}
