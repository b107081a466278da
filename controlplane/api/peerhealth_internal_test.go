package api

import (
	"encoding/json"
	"maps"
	"net/netip"
	"testing"

	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
)

// TestDownCacheFollowsReports: the cached peer health is PeerHealth's at every step of a
// sequence of stored reports: a report decoded once is not served after it changed, and a host
// whose report is gone is forgotten.
func TestDownCacheFollowsReports(t *testing.T) {
	a1, a2 := netip.MustParseAddr("198.18.20.2"), netip.MustParseAddr("198.18.30.2")
	self := &desired.State{Host: "h1", Services: []desired.Service{
		{Name: "web", Backends: []desired.Backend{{Address: a1, Host: "h2"}, {Address: a2, Host: "h3"}}},
	}}
	report := func(host string, down ...netip.Addr) json.RawMessage {
		bs := hoststatus.Backends{}
		for _, a := range []netip.Addr{a1, a2} {
			bs[hoststatus.BackendKey{Service: "web", Addr: a}] = hoststatus.Health{Up: true}
		}
		for _, a := range down {
			bs[hoststatus.BackendKey{Service: "web", Addr: a}] = hoststatus.Health{Reason: "connection refused"}
		}
		b, err := json.Marshal(hoststatus.Report{Host: host, Status: hoststatus.Status{Host: host, Backends: bs}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	steps := []struct {
		name    string
		reports map[string]json.RawMessage
		down    int // hosts with a backend down in the answer
	}{
		{"all up", map[string]json.RawMessage{"h2": report("h2"), "h3": report("h3")}, 0},
		{"h2's backend down", map[string]json.RawMessage{"h2": report("h2", a1), "h3": report("h3")}, 1},
		{"the same reports again", map[string]json.RawMessage{"h2": report("h2", a1), "h3": report("h3")}, 1},
		{"h3 claims h2's backend too", map[string]json.RawMessage{"h2": report("h2", a1), "h3": report("h3", a1)}, 1},
		{"both down", map[string]json.RawMessage{"h2": report("h2", a1), "h3": report("h3", a2)}, 2},
		{"h2 up again", map[string]json.RawMessage{"h2": report("h2"), "h3": report("h3", a2)}, 1},
		{"h3's report gone", map[string]json.RawMessage{"h2": report("h2")}, 0},
		{"h3 back, down", map[string]json.RawMessage{"h2": report("h2"), "h3": report("h3", a2)}, 1},
		{"not JSON", map[string]json.RawMessage{"h2": json.RawMessage(`{`), "h3": report("h3", a2)}, 1},
	}
	var c downCache
	for _, st := range steps {
		want := PeerHealth(st.reports, self)
		got := c.PeerHealth(st.reports, self)
		if len(want) != st.down || !maps.EqualFunc(got, want, func(a, b hoststatus.Backends) bool { return maps.Equal(a, b) }) {
			t.Fatalf("%s: cached %v, PeerHealth %v (want %d hosts)", st.name, got, want, st.down)
		}
	}
	if len(c.m) != 2 {
		t.Errorf("cache holds %d hosts, want 2", len(c.m))
	}
}
