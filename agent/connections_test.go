package agent

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/hoststatus"
	"github.com/govcloud/govcloud/dataplane/lbmap"
	"github.com/govcloud/govcloud/lb"
)

// countingLB is the fake load balancer with a connection table to count.
type countingLB struct {
	*lbmap.Fake
	counts map[lbmap.ActiveKey]int
}

func (c countingLB) ActiveConnections(time.Duration) (map[lbmap.ActiveKey]int, error) {
	return c.counts, nil
}

// Issue 22, a drain you can watch: the report carries the load balancer's active connections
// per service and target, every target listed (0 when none), a target no longer in the plan
// included while it has connections.
func TestReportCarriesActiveConnections(t *testing.T) {
	r := newRig(t, "h1", false)
	vip := func(port uint16) lb.VIP {
		return lb.VIP{Addr: netip.MustParseAddr("198.19.255.2"), Port: port, Proto: lb.TCP}
	}
	r.a.lb = countingLB{Fake: r.lb, counts: map[lbmap.ActiveKey]int{
		{VIP: vip(80), Backend: "198.18.0.12:0"}:  3,
		{VIP: vip(443), Backend: "198.18.0.12:0"}: 2, // a port the service does not have: left out
		{VIP: vip(80), Backend: "198.18.0.99:0"}:  7, // a target outside the plan: kept, it still has connections
	}}
	st := labState()
	got := r.pass(t, st).Connections
	want := []hoststatus.Connections{
		{Service: "lands-www", Target: netip.MustParseAddr("198.18.0.11"), Active: 0},
		{Service: "lands-www", Target: netip.MustParseAddr("198.18.0.12"), Active: 3},
		{Service: "lands-www", Target: netip.MustParseAddr("198.18.0.99"), Active: 7},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("connections %+v, want %+v", got, want)
	}
	// A load balancer that cannot count reports none (not zeros).
	r2 := newRig(t, "h1", false)
	if c := r2.pass(t, labState()).Connections; c != nil {
		t.Fatalf("fake without a connection table reported %+v", c)
	}
}
