package hoststatus

import (
	"encoding/json"
	"maps"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/bgp"
)

func key(svc, addr string) BackendKey {
	return BackendKey{Service: svc, Addr: netip.MustParseAddr(addr)}
}

// TestBackendsJSON: backend health round-trips through its readable list form, sorted by
// service then address, and every malformed entry is an error naming it.
func TestBackendsJSON(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Backends
		want string
	}{
		{"nil", nil, `null`},
		{"empty", Backends{}, `[]`},
		{"one up", Backends{key("lands-www", "198.18.20.2"): {Up: true}},
			`[{"service":"lands-www","address":"198.18.20.2","up":true}]`},
		{"sorted by service, then address; v6 after v4", Backends{
			key("lands-www", "198.18.20.10"):  {Reason: "connection refused"},
			key("health-api", "2001:db8::5"):  {Up: true},
			key("lands-www", "198.18.20.9"):   {Up: true},
			key("health-api", "198.18.30.20"): {Reason: "timeout"},
		}, `[{"service":"health-api","address":"198.18.30.20","up":false,"reason":"timeout"},` +
			`{"service":"health-api","address":"2001:db8::5","up":true},` +
			`{"service":"lands-www","address":"198.18.20.9","up":true},` +
			`{"service":"lands-www","address":"198.18.20.10","up":false,"reason":"connection refused"}]`},
	} {
		b, err := json.Marshal(tc.in)
		if err != nil || string(b) != tc.want {
			t.Errorf("%s: marshal %s %v, want %s", tc.name, b, err, tc.want)
			continue
		}
		var back Backends
		if err := json.Unmarshal(b, &back); err != nil || !maps.Equal(back, tc.in) || (back == nil) != (tc.in == nil) {
			t.Errorf("%s: round trip %v %v, want %v", tc.name, back, err, tc.in)
		}
	}
}

func TestBackendsJSONErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"old string map", `{"lands-www/198.18.20.2":"up"}`, "want a list of {service, address, up, reason}"},
		{"not a list", `7`, "want a list"},
		{"no service", `[{"address":"198.18.20.2","up":true}]`, "backends[0].service: empty"},
		{"address with a prefix length", `[{"service":"a","address":"198.18.20.2","up":true},{"service":"b","address":"198.18.20.0/24"}]`,
			`backends[1].address of service "b": ParseAddr("198.18.20.0/24")`},
		{"no address", `[{"service":"a"}]`, `backends[0].address of service "a": ParseAddr("")`},
		{"bad address", `[{"service":"a","address":"198.18.20.300"}]`, `backends[0].address of service "a"`},
		{"up not a bool", `[{"service":"a","address":"198.18.20.2","up":"yes"}]`, "want a list"},
		{"repeated backend", `[{"service":"a","address":"198.18.20.2","up":true},{"service":"a","address":"198.18.20.2"}]`,
			"backends[1]: a/198.18.20.2 repeated"},
	} {
		var b Backends
		err := json.Unmarshal([]byte(tc.in), &b)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

// TestReportJSON: a whole stored report round-trips, and a malformed backend in it fails the
// decode naming the field.
func TestReportJSON(t *testing.T) {
	r := Report{Host: "host1", Time: time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC), Status: Status{
		Host: "host1", Revision: 42, Ready: false, Error: "load balancer: boom", Uplink: "eth0", XDP: "attached to eth0",
		Segments:  map[string]string{"lands-web": "ready"},
		Services:  map[string]string{"lands-www": "not ready: boom"},
		Backends:  Backends{key("lands-www", "198.18.20.2"): {Reason: "connection refused"}, key("lands-www", "198.18.20.3"): {Up: true}},
		Advertise: []string{"198.19.255.2/32"},
		BGP:       []bgp.PeerStatus{{Address: netip.MustParseAddr("198.18.0.1"), ASN: 64512, State: "established", Established: true, Advertised: 1}},
	}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"backends":[{"service":"lands-www","address":"198.18.20.2","up":false,"reason":"connection refused"},`) {
		t.Errorf("backends not in their list form: %s", b)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, r) {
		t.Errorf("round trip:\n got %+v %v\nwant %+v", back, err, r)
	}
	bad := strings.Replace(string(b), `"198.18.20.3"`, `"198.18.20.3/32"`, 1)
	if err := json.Unmarshal([]byte(bad), &back); err == nil || !strings.Contains(err.Error(), `backends[1].address of service "lands-www"`) {
		t.Errorf("a prefix as a backend address: %v", err)
	}
}

func TestDownAndKeys(t *testing.T) {
	b := Backends{key("b", "198.18.20.2"): {Reason: "x"}, key("a", "198.18.20.3"): {Up: true}, key("a", "198.18.20.1"): {Reason: "y"}}
	if got, want := b.Down(), (Backends{key("b", "198.18.20.2"): {Reason: "x"}, key("a", "198.18.20.1"): {Reason: "y"}}); !maps.Equal(got, want) {
		t.Errorf("Down = %v, want %v", got, want)
	}
	if got := (Backends{key("a", "198.18.20.3"): {Up: true}}).Down(); got != nil {
		t.Errorf("Down of all up = %v, want nil", got)
	}
	if got, want := b.Keys(), []BackendKey{key("a", "198.18.20.1"), key("a", "198.18.20.3"), key("b", "198.18.20.2")}; !reflect.DeepEqual(got, want) {
		t.Errorf("Keys = %v, want %v", got, want)
	}
}
