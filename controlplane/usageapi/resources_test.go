package usageapi

import (
	"slices"
	"testing"

	"github.com/govcloud/govcloud/controlplane/config"
	"github.com/govcloud/govcloud/metering"
)

// TestBillableResources: the PriceList kind prices exactly what a bill rates, in its order.
func TestBillableResources(t *testing.T) {
	var got []string
	for _, r := range metering.BillableResources() {
		got = append(got, r.Name)
	}
	if !slices.Equal(got, config.BillableResources) {
		t.Fatalf("metering bills %v, config.PriceList prices %v", got, config.BillableResources)
	}
}
