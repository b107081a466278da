package agent

import (
	"net/netip"
	"testing"

	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
)

// TestPeersDownOnlyForTheirOwnBackends: a peer's report takes a backend out only when the
// controller placed that backend on the peer; host1 cannot take down host2's backends, nor
// plain-address backends (every host checks those itself), nor its own ones.
func TestPeersDownOnlyForTheirOwnBackends(t *testing.T) {
	st := &desired.State{Host: "host3", Services: []desired.Service{{Name: "lands-web", Backends: []desired.Backend{
		{Address: netip.MustParseAddr("198.18.20.11"), VM: "lands-web-1", Host: "host1"},
		{Address: netip.MustParseAddr("198.18.20.12"), VM: "lands-web-2", Host: "host2"},
		{Address: netip.MustParseAddr("198.18.20.13"), VM: "lands-web-3", Host: "host3"},
		{Address: netip.MustParseAddr("198.18.20.50")}, // a plain address
	}}}}
	web := func(a string) hoststatus.BackendKey { return key("lands-web", a) }
	for _, tc := range []struct {
		name  string
		hosts map[string]hoststatus.Backends
		want  []hoststatus.BackendKey
	}{
		{"host1 reports its own backend down", map[string]hoststatus.Backends{"host1": hoststatus.Backends{key("lands-web", "198.18.20.11"): {Reason: "refused"}}}, []hoststatus.BackendKey{web("198.18.20.11")}},
		{"host1 reports host2's backend down", map[string]hoststatus.Backends{"host1": hoststatus.Backends{key("lands-web", "198.18.20.12"): {Reason: "refused"}}}, nil},
		{"host1 reports this host's backend down", map[string]hoststatus.Backends{"host1": hoststatus.Backends{key("lands-web", "198.18.20.13"): {Reason: "refused"}}}, nil},
		{"host1 reports a plain-address backend down", map[string]hoststatus.Backends{"host1": hoststatus.Backends{key("lands-web", "198.18.20.50"): {Reason: "refused"}}}, nil},
		{"host1 reports a backend that does not exist", map[string]hoststatus.Backends{"host1": hoststatus.Backends{key("other", "198.18.20.11"): {Reason: "x"}, key("lands-web", "203.0.113.9"): {Reason: "x"}}}, nil},
		{"host2 reports its own backend, host1 everything", map[string]hoststatus.Backends{
			"host1": hoststatus.Backends{key("lands-web", "198.18.20.12"): {}, key("lands-web", "198.18.20.11"): {Up: true}},
			"host2": hoststatus.Backends{key("lands-web", "198.18.20.12"): {Reason: "timeout"}}}, []hoststatus.BackendKey{web("198.18.20.12")}},
		{"no reports", nil, nil},
	} {
		got := peersDown(tc.hosts, "host3", placedBackends(st))
		if len(got) != len(tc.want) {
			t.Errorf("%s: down %v, want %v", tc.name, got, tc.want)
			continue
		}
		for _, k := range tc.want {
			if !got[k] {
				t.Errorf("%s: down %v, want %v", tc.name, got, tc.want)
			}
		}
	}
}
