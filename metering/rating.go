package metering

import (
	"bytes"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"

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

// PriceList is a dated price list: the PriceList objects of the controller's store, or (the
// fallback before the first of those) the file GOVCLOUD_PRICES names in the format of
// deploy/examples/prices.yaml, or the built-in list.
type PriceList struct {
	APIVersion string `json:"apiVersion,omitempty" yaml:"apiVersion"`
	Kind       string `json:"kind,omitempty" yaml:"kind"`
	// Name is the PriceList object's name, "GOVCLOUD_PRICES" or "built-in".
	Name     string `json:"name" yaml:"-"`
	Currency string `json:"currency" yaml:"currency"`
	// EffectiveFrom is the first day (YYYY-MM-DD, from 00:00 UTC) the list rates; "" for the
	// fallback (every day before the first dated list).
	EffectiveFrom string  `json:"effectiveFrom,omitempty" yaml:"-"`
	Prices        []Price `json:"prices" yaml:"prices"`
}

// price returns the price of resource.
func (p *PriceList) price(resource string) (Price, bool) {
	for _, x := range p.Prices {
		if x.Resource == resource {
			return x, true
		}
	}
	return Price{}, false
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
		if !slices.ContainsFunc(billable, func(r ResourceInfo) bool { return r.Name == x.Resource }) {
			return nil, fmt.Errorf("price list: price %d: resource %q is not billed (billed: %s)", i, x.Resource, strings.Join(billableNames(), ", "))
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
	for _, r := range billable {
		if !seen[r.Name] {
			return nil, fmt.Errorf("price list: resource %q has no price (\"0\" is one)", r.Name)
		}
	}
	p.Name = "file"
	return &p, nil
}

func billableNames() []string {
	out := make([]string, len(billable))
	for i, r := range billable {
		out[i] = r.Name
	}
	return out
}

// defaultPrices is deploy/examples/prices.yaml (a test keeps them equal): the controller's
// price list when none is configured.
const defaultPrices = `apiVersion: govcloud/v1
kind: PriceList
currency: AUD
prices:
  - {resource: network_tx_bytes,     unit: GiB,        unitSize: 1073741824, price: "0.05"}
  - {resource: network_vip_in_bytes, unit: GiB,        unitSize: 1073741824, price: "0.02"}
  - {resource: vcpu_seconds,         unit: vCPU-hour,  unitSize: 3600,       price: "0.04"}
  - {resource: memory_mib_seconds,   unit: GiB-hour,   unitSize: 3686400,    price: "0.005"}
  - {resource: volume_gib_seconds,   unit: GiB-month,  unitSize: 2592000,    price: "0.10"}
`

// DefaultPrices returns the built-in price list (deploy/examples/prices.yaml).
func DefaultPrices() *PriceList {
	p, err := ParsePrices([]byte(defaultPrices))
	if err != nil {
		panic(err)
	}
	p.Name = "built-in"
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
	p.Name = path
	return p, nil
}
