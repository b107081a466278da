package config

import (
	"strings"
	"testing"
	"time"
)

// priceDoc is a PriceList document with every billable resource priced, plus extra lines.
func priceDoc(name, head string, prices ...string) string {
	all := map[string]string{
		"network_tx_bytes":     `{resource: network_tx_bytes, unit: GiB, unitSize: 1073741824, price: "0.05"}`,
		"network_vip_in_bytes": `{resource: network_vip_in_bytes, unit: GiB, unitSize: 1073741824, price: "0.02"}`,
		"vcpu_seconds":         `{resource: vcpu_seconds, unit: vCPU-hour, unitSize: 3600, price: "0.04"}`,
		"memory_mib_seconds":   `{resource: memory_mib_seconds, unit: GiB-hour, unitSize: 3686400, price: "0.005"}`,
		"volume_gib_seconds":   `{resource: volume_gib_seconds, unit: GiB-month, unitSize: 2592000, price: "0.10"}`,
	}
	var ps []string
	for _, r := range BillableResources {
		ps = append(ps, all[r])
	}
	if prices != nil {
		ps = prices
	}
	return "---\napiVersion: govcloud/v1\nkind: PriceList\nmetadata: {name: " + name + "}\nspec:\n  " + head + "\n  prices: [" + strings.Join(ps, ", ") + "]\n"
}

func TestPriceListValid(t *testing.T) {
	y := base + priceDoc("p1", "effectiveFrom: 2026-11-01") + priceDoc("p2", "currency: AUD\n  effectiveFrom: 2026-11-15") + priceDoc("p3", "currency: NZD\n  effectiveFrom: 2027-01-01")
	if err := parseValidate(t, y); err != nil {
		t.Fatalf("valid price lists refused: %v", err)
	}
	objs, _ := Parse("p.yaml", []byte(priceDoc("p1", "effectiveFrom: 2026-11-01")))
	s := objs[0].Spec.(*PriceListSpec)
	if s.CurrencyCode() != "AUD" || !s.From().Equal(mustDate(t, "2026-11-01")) || len(s.Prices) != len(BillableResources) {
		t.Fatalf("parsed %+v", s)
	}
}

func TestPriceListBad(t *testing.T) {
	tx := `{resource: network_tx_bytes, unit: GiB, unitSize: 1073741824, price: "0.05"}`
	rest := []string{
		`{resource: network_vip_in_bytes, unit: GiB, unitSize: 1073741824, price: "0.02"}`,
		`{resource: vcpu_seconds, unit: vCPU-hour, unitSize: 3600, price: "0.04"}`,
		`{resource: memory_mib_seconds, unit: GiB-hour, unitSize: 3686400, price: "0.005"}`,
		`{resource: volume_gib_seconds, unit: GiB-month, unitSize: 2592000, price: "0.10"}`,
	}
	with := func(first string) []string { return append([]string{first}, rest...) }
	for _, tc := range []struct {
		desc, yaml string
		want       []string
	}{
		{"no effectiveFrom", priceDoc("p", "currency: AUD"), []string{`PriceList "p"`, "spec.effectiveFrom", "required"}},
		{"effectiveFrom with a time", priceDoc("p", "effectiveFrom: 2026-11-15T12:00:00Z"), []string{`spec.effectiveFrom "2026-11-15T12:00:00Z"`, "YYYY-MM-DD"}},
		{"effectiveFrom not a date", priceDoc("p", "effectiveFrom: 2026-02-30"), []string{`spec.effectiveFrom "2026-02-30"`}},
		{"currency lower case", priceDoc("p", "currency: aud\n  effectiveFrom: 2026-11-01"), []string{`spec.currency "aud"`, "ISO 4217"}},
		{"currency a symbol", priceDoc("p", "currency: $\n  effectiveFrom: 2026-11-01"), []string{`spec.currency "$"`}},
		{"unknown resource", priceDoc("p", "effectiveFrom: 2026-11-01", append(with(tx), `{resource: gpu_seconds, unit: h, unitSize: 3600, price: "1"}`)...), []string{`spec.prices[5].resource "gpu_seconds"`, "unknown resource"}},
		{"rx priced: a frame billed twice", priceDoc("p", "effectiveFrom: 2026-11-01", append(with(tx), `{resource: network_rx_bytes, unit: GiB, unitSize: 1073741824, price: "0.01"}`)...), []string{`spec.prices[5].resource "network_rx_bytes"`, "not billed", "billed once"}},
		{"resource priced twice", priceDoc("p", "effectiveFrom: 2026-11-01", append(with(tx), tx)...), []string{`spec.prices[5].resource "network_tx_bytes"`, "priced twice", "spec.prices[0]"}},
		{"resource missing", priceDoc("p", "effectiveFrom: 2026-11-01", rest...), []string{`spec.prices "network_tx_bytes"`, "not priced"}},
		{"no resource", priceDoc("p", "effectiveFrom: 2026-11-01", with(`{unit: GiB, unitSize: 1, price: "1"}`)...), []string{"spec.prices[0].resource", "required"}},
		{"no unit", priceDoc("p", "effectiveFrom: 2026-11-01", with(`{resource: network_tx_bytes, unitSize: 1, price: "1"}`)...), []string{"spec.prices[0].unit", "required"}},
		{"unit size 0", priceDoc("p", "effectiveFrom: 2026-11-01", with(`{resource: network_tx_bytes, unit: GiB, price: "1"}`)...), []string{`spec.prices[0].unitSize "0"`}},
		{"negative price", priceDoc("p", "effectiveFrom: 2026-11-01", with(`{resource: network_tx_bytes, unit: GiB, unitSize: 1, price: "-1"}`)...), []string{`spec.prices[0].price "-1"`, "non-negative decimal"}},
		{"fraction price", priceDoc("p", "effectiveFrom: 2026-11-01", with(`{resource: network_tx_bytes, unit: GiB, unitSize: 1, price: "1/3"}`)...), []string{`spec.prices[0].price "1/3"`}},
		{"exponent price", priceDoc("p", "effectiveFrom: 2026-11-01", with(`{resource: network_tx_bytes, unit: GiB, unitSize: 1, price: "1e3"}`)...), []string{`spec.prices[0].price "1e3"`}},
		{"unit size negative", priceDoc("p", "effectiveFrom: 2026-11-01", with(`{resource: network_tx_bytes, unit: GiB, unitSize: -1, price: "1"}`)...), []string{"spec.prices[0].unitSize", "-1"}},
		{"misspelt field", priceDoc("p", "effectiveFrom: 2026-11-01", with(`{resource: network_tx_bytes, unit: GiB, unitSize: 1, prise: "1"}`)...), []string{"prise", "unknown field"}},
		{"two lists one date", priceDoc("p", "effectiveFrom: 2026-11-01") + priceDoc("q", "effectiveFrom: 2026-11-01"), []string{`PriceList "q"`, `spec.effectiveFrom "2026-11-01"`, `"p"`, "same day"}},
		{"currency change mid-month", priceDoc("p", "effectiveFrom: 2026-11-01") + priceDoc("q", "currency: NZD\n  effectiveFrom: 2026-11-15"), []string{`PriceList "q"`, `spec.currency "NZD"`, "AUD", "1st of a month"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			err := parseValidate(t, base+tc.yaml)
			if err == nil {
				t.Fatalf("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func mustDate(t *testing.T, s string) (d time.Time) {
	t.Helper()
	d, err := time.Parse(DateLayout, s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
