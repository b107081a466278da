package config

import (
	"fmt"
	"regexp"
	"slices"
	"time"
)

// DefaultCurrency is a price list's currency when it names none: the platform serves
// Australian government departments (ISO 4217 code).
const DefaultCurrency = "AUD"

// DateLayout is the layout of PriceListSpec.EffectiveFrom: a date, meaning 00:00 UTC that day.
const DateLayout = "2006-01-02"

// BillableResources are the ledger resources a price list prices (metering's names; a test in
// controlplane/usageapi keeps the two lists equal), each in base units:
//
//	network_tx_bytes      bytes a department's segments sent to another host over the trunk
//	network_vip_in_bytes  bytes from the fabric to a department's public VIPs
//	vcpu_seconds          vCPU time of its VMs
//	memory_mib_seconds    memory allocated to its VMs x time
//	volume_gib_seconds    storage allocated to its VMs x time
var BillableResources = []string{"network_tx_bytes", "network_vip_in_bytes", "vcpu_seconds", "memory_mib_seconds", "volume_gib_seconds"}

// unbilledResources are resources the ledger counts that a price list must not price, and why.
var unbilledResources = map[string]string{
	"network_rx_bytes": "it is network_tx_bytes counted again at the receiving host (a frame that crosses two hosts is billed once, as network_tx_bytes)",
}

// PriceListSpec is a dated price list: from EffectiveFrom (00:00 UTC) until the next list's
// EffectiveFrom, every department's usage is rated with Prices in Currency.
type PriceListSpec struct {
	Currency      string      `yaml:"currency" json:"currency,omitempty"` // ISO 4217; empty: DefaultCurrency
	EffectiveFrom string      `yaml:"effectiveFrom" json:"effectiveFrom"` // YYYY-MM-DD
	Prices        []PriceSpec `yaml:"prices" json:"prices"`
}

// PriceSpec is the price of one resource: Price (a decimal in the list's currency) per Unit,
// where one Unit is UnitSize base units (network_tx_bytes per GiB: unit GiB, unitSize
// 1073741824).
type PriceSpec struct {
	Resource string `yaml:"resource" json:"resource"`
	Unit     string `yaml:"unit" json:"unit"`
	UnitSize int    `yaml:"unitSize" json:"unitSize"`
	Price    string `yaml:"price" json:"price"`
}

func (*PriceListSpec) kind() string { return KindPriceList }

// CurrencyCode is the list's currency, DefaultCurrency when it names none.
func (s *PriceListSpec) CurrencyCode() string {
	if s.Currency == "" {
		return DefaultCurrency
	}
	return s.Currency
}

// From is the time the list takes effect (zero when EffectiveFrom is invalid).
func (s *PriceListSpec) From() time.Time {
	t, _ := time.Parse(DateLayout, s.EffectiveFrom)
	return t
}

var (
	currencyRE = regexp.MustCompile(`^[A-Z]{3}$`)
	decimalRE  = regexp.MustCompile(`^[0-9]{1,12}(\.[0-9]{1,9})?$`)
)

func (c *objectCheck) priceList(s *PriceListSpec) {
	if s.Currency != "" && !currencyRE.MatchString(s.Currency) {
		c.bad("spec.currency", s.Currency, "want an ISO 4217 code of three capital letters, e.g. AUD (the default)")
	}
	if c.need("spec.effectiveFrom", s.EffectiveFrom) {
		if _, err := time.Parse(DateLayout, s.EffectiveFrom); err != nil {
			c.bad("spec.effectiveFrom", s.EffectiveFrom, "want a date YYYY-MM-DD (prices change at 00:00 UTC that day)")
		}
	}
	seen := map[string]int{}
	for i, p := range s.Prices {
		f := fmt.Sprintf("spec.prices[%d]", i)
		switch {
		case p.Resource == "":
			c.bad(f+".resource", "", "required (one of %v)", BillableResources)
		case unbilledResources[p.Resource] != "":
			c.bad(f+".resource", p.Resource, "is not billed: %s", unbilledResources[p.Resource])
		case !slices.Contains(BillableResources, p.Resource):
			c.bad(f+".resource", p.Resource, "unknown resource (want one of %v)", BillableResources)
		default:
			if j, dup := seen[p.Resource]; dup {
				c.bad(f+".resource", p.Resource, "priced twice (first in spec.prices[%d])", j)
			}
			seen[p.Resource] = i
		}
		c.need(f+".unit", p.Unit)
		if p.UnitSize <= 0 {
			c.bad(f+".unitSize", fmt.Sprint(p.UnitSize), "want the number of base units in one unit (e.g. 1073741824 bytes in a GiB)")
		}
		if !decimalRE.MatchString(p.Price) {
			c.bad(f+".price", p.Price, `want a non-negative decimal with at most 9 places, quoted (e.g. "0.05")`)
		}
	}
	for _, r := range BillableResources {
		if _, ok := seen[r]; !ok {
			c.bad("spec.prices", r, "resource not priced; every billable resource needs a price (\"0\" is one)")
		}
	}
}

// priceLists: one list per effective date; the currency changes only at the start of a
// month (a month's bill has one currency).
func (c *stateCheck) priceLists() {
	lists := c.st.List(KindPriceList)
	slices.SortStableFunc(lists, func(a, b *Object) int {
		return a.Spec.(*PriceListSpec).From().Compare(b.Spec.(*PriceListSpec).From())
	})
	for i := 1; i < len(lists); i++ {
		prev, cur := lists[i-1].Spec.(*PriceListSpec), lists[i].Spec.(*PriceListSpec)
		if prev.From().IsZero() || cur.From().IsZero() {
			continue // already an object error
		}
		if prev.EffectiveFrom == cur.EffectiveFrom {
			here, other := blame(lists[i-1], lists[i])
			c.add(here, "spec.effectiveFrom", cur.EffectiveFrom, "PriceList %q takes effect the same day; one list per date", other.Metadata.Name)
			continue
		}
		if prev.CurrencyCode() != cur.CurrencyCode() && cur.From().Day() != 1 {
			c.add(lists[i], "spec.currency", cur.CurrencyCode(), "differs from %s of PriceList %q before it; a currency changes only on the 1st of a month (one currency per monthly bill)", prev.CurrencyCode(), lists[i-1].Metadata.Name)
		}
	}
}
