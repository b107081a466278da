package agent

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/govcloud/govcloud/controlplane/desired"
)

// TestPeersDownOnlyForTheirOwnBackends: a peer's report takes a backend out only when the
// controller placed that backend on the peer; host1 cannot take down host2's backends, nor
// plain-address backends (every host checks those itself), nor its own ones.
func TestPeersDownOnlyForTheirOwnBackends(t *testing.T) {
	st := &desired.State{Host: "host3", Services: []desired.Service{{Name: "lands-web", Backends: []desired.Backend{
		{Address: "198.18.20.11", VM: "lands-web-1", Host: "host1"},
		{Address: "198.18.20.12", VM: "lands-web-2", Host: "host2"},
		{Address: "198.18.20.13", VM: "lands-web-3", Host: "host3"},
		{Address: "198.18.20.50"}, // a plain address
	}}}}
	report := func(backends map[string]string) json.RawMessage {
		b, _ := json.Marshal(map[string]any{"host": "x", "status": Status{Backends: backends}})
		return b
	}
	key := func(a string) backendKey { return backendKey{Service: "lands-web", Addr: netip.MustParseAddr(a)} }
	for _, tc := range []struct {
		name  string
		hosts map[string]json.RawMessage
		want  []backendKey
	}{
		{"host1 reports its own backend down", map[string]json.RawMessage{"host1": report(map[string]string{"lands-web/198.18.20.11": "down: refused"})}, []backendKey{key("198.18.20.11")}},
		{"host1 reports host2's backend down", map[string]json.RawMessage{"host1": report(map[string]string{"lands-web/198.18.20.12": "down: refused"})}, nil},
		{"host1 reports this host's backend down", map[string]json.RawMessage{"host1": report(map[string]string{"lands-web/198.18.20.13": "down: refused"})}, nil},
		{"host1 reports a plain-address backend down", map[string]json.RawMessage{"host1": report(map[string]string{"lands-web/198.18.20.50": "down: refused"})}, nil},
		{"host1 reports a backend that does not exist", map[string]json.RawMessage{"host1": report(map[string]string{"other/198.18.20.11": "down: x", "lands-web/203.0.113.9": "down: x"})}, nil},
		{"host2 reports its own backend, host1 everything", map[string]json.RawMessage{
			"host1": report(map[string]string{"lands-web/198.18.20.12": "down", "lands-web/198.18.20.11": "up"}),
			"host2": report(map[string]string{"lands-web/198.18.20.12": "down: timeout"})}, []backendKey{key("198.18.20.12")}},
		{"garbage report", map[string]json.RawMessage{"host1": json.RawMessage(`"x"`)}, nil},
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
