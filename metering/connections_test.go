package metering

import (
	"strings"
	"testing"
)

// connService is a ServiceSource that also counts connections.
type connService struct {
	FakeService
	conns []BackendConnections
}

func (c *connService) Connections() ([]BackendConnections, error) { return c.conns, nil }

// Issue 22, a drain you can watch: govcloud_backend_active_connections per service and
// target, zeros included (a drained backend with none left shows 0, not nothing).
func TestCollectorActiveConnections(t *testing.T) {
	src := &connService{conns: []BackendConnections{
		{Department: "lands", Service: "lands-www", Target: "198.18.0.11", Active: 4},
		{Department: "lands", Service: "lands-www", Target: "198.18.0.12", Active: 0},
	}}
	out := scrape(t, NewCollector(Sources{Host: "gc-host1", Service: src}, nil))
	for _, want := range []string{
		`govcloud_backend_active_connections{backend="198.18.0.11",department="lands",host="gc-host1",service="lands-www"} 4`,
		`govcloud_backend_active_connections{backend="198.18.0.12",department="lands",host="gc-host1",service="lands-www"} 0`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("scrape lacks %s:\n%s", want, out)
		}
	}
	// A source without a connection table: no such series.
	if out := scrape(t, NewCollector(Sources{Host: "h", Service: &FakeService{}}, nil)); strings.Contains(out, "govcloud_backend_active_connections{") {
		t.Errorf("series without a connection source:\n%s", out)
	}
}
