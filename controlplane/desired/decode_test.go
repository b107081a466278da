package desired

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func fullState() *State {
	a, p := netip.MustParseAddr, netip.MustParsePrefix
	return &State{
		Host: "h1", Revision: 9, Uplink: "eth0", Address: a("198.18.0.11"),
		Departments: []Department{{Name: "lands", TableID: 1001}},
		Segments: []Segment{{Name: "lands-web", Department: "lands", VLAN: 120, Prefix4: p("198.18.20.0/24"), Gateway4: a("198.18.20.1"),
			Prefix6: p("2001:db8:20::/64"), Gateway6: a("2001:db8:20::1"), TableID: 1001}},
		Services: []Service{{Name: "lands-www", Department: "lands", VIP: a("198.19.255.2"), Scope: "public", Mode: "dsr",
			Ports:    []Port{{Port: 80, Protocol: "tcp", TargetPort: 80}},
			Backends: []Backend{{Address: a("198.18.20.2"), Weight: 1, VM: "lands-web-1", Host: "h1", Segment: "lands-web"}}}},
		BGP: &BGP{ASN: 65001, RouterID: a("198.18.0.11"), Peers: []Peer{{Address: a("198.18.0.1"), ASN: 65000}}},
		VMs: []VM{{Name: "lands-web-1", Department: "lands", Interfaces: []Interface{{Segment: "lands-web", VLAN: 120,
			MAC: "02:00:00:00:20:02", Prefix4: p("198.18.20.2/24"), Prefix6: p("2001:db8:20::2/64"), Gateway4: a("198.18.20.1")}}}},
		Volumes:      []Volume{},
		Hosts:        map[string]netip.Addr{"h1": a("198.18.0.11"), "h2": a("2001:db8::12")},
		RemoteGuests: []RemoteGuest{{VM: "lands-web-2", Host: "h2", Segment: "lands-web", MAC: "02:00:00:00:20:03", Addr4: a("198.18.20.3")}},
	}
}

// TestStateJSON: the typed state round-trips through its JSON form, addresses and prefixes
// in their text form, an interface's address with its length unmasked, unset optional ones
// left out.
func TestStateJSON(t *testing.T) {
	full := fullState()
	minimal := &State{Host: "h2", Departments: []Department{}, Segments: []Segment{}, Services: []Service{}, VMs: []VM{}, Volumes: []Volume{}}
	for _, tc := range []struct {
		name    string
		st      *State
		want    []string // substrings of the encoding
		wantNot []string
	}{
		{"full", full, []string{`"address":"198.18.0.11"`, `"prefix4":"198.18.20.0/24"`, `"gateway4":"198.18.20.1"`,
			`"prefix6":"2001:db8:20::/64"`, `"vip":"198.19.255.2"`, `"routerID":"198.18.0.11"`, `"prefix4":"198.18.20.2/24"`,
			`"hosts":{"h1":"198.18.0.11","h2":"2001:db8::12"}`, `"addr4":"198.18.20.3"`}, []string{`"addr6"`}},
		{"unset addresses left out", minimal, nil, []string{`"address"`, `"hosts"`, `"routerID"`, "invalid"}},
	} {
		b, err := json.Marshal(tc.st)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s: %s lacks %s", tc.name, b, w)
			}
		}
		for _, w := range tc.wantNot {
			if strings.Contains(string(b), w) {
				t.Errorf("%s: %s has %s", tc.name, b, w)
			}
		}
		back, err := Decode(b)
		if err != nil || !reflect.DeepEqual(back, tc.st) {
			t.Errorf("%s: round trip\n got %+v %v\nwant %+v", tc.name, back, err, tc.st)
		}
	}
}

// TestDecodeNamesTheField: a malformed address or prefix fails the decode naming its field.
func TestDecodeNamesTheField(t *testing.T) {
	good, _ := json.Marshal(fullState())
	for _, tc := range []struct {
		name, from, to, want string
	}{
		{"host address", `"address":"198.18.0.11"`, `"address":"198.18.0.300"`, `address: ParseAddr("198.18.0.300")`},
		{"segment prefix", `"prefix4":"198.18.20.0/24"`, `"prefix4":"198.18.20.0/33"`, `segments[0].prefix4: netip.ParsePrefix("198.18.20.0/33")`},
		{"segment gateway given as a prefix", `"gateway4":"198.18.20.1"`, `"gateway4":"198.18.20.1/24"`, `segments[0].gateway4: ParseAddr("198.18.20.1/24")`},
		{"VIP", `"vip":"198.19.255.2"`, `"vip":"lands"`, `services[0].vip: ParseAddr("lands")`},
		{"backend", `"address":"198.18.20.2"`, `"address":"198.18.20.2/32"`, `services[0].backends[0].address: ParseAddr("198.18.20.2/32")`},
		{"router ID", `"routerID":"198.18.0.11"`, `"routerID":"x"`, `bgp.routerID: ParseAddr("x")`},
		{"peer", `"address":"198.18.0.1"`, `"address":"198.18.0.1.1"`, `bgp.peers[0].address: ParseAddr("198.18.0.1.1")`},
		{"interface address without its length", `"prefix4":"198.18.20.2/24"`, `"prefix4":"198.18.20.2"`, `vms[0].interfaces[0].prefix4: netip.ParsePrefix("198.18.20.2")`},
		{"host map", `"h2":"2001:db8::12"`, `"h2":"2001:db8::12::"`, `hosts["h2"]: ParseAddr("2001:db8::12::")`},
		{"remote guest", `"addr4":"198.18.20.3"`, `"addr4":"198.18.20.3/24"`, `remoteGuests[0].addr4: ParseAddr("198.18.20.3/24")`},
		{"not an address at all", `"vip":"198.19.255.2"`, `"vip":7`, `services.vip of type netip.Addr`},
	} {
		in := strings.Replace(string(good), tc.from, tc.to, 1)
		if in == string(good) {
			t.Fatalf("%s: %s not in %s", tc.name, tc.from, good)
		}
		_, err := Decode([]byte(in))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "desired state: ") {
			t.Errorf("%s: %v, want an error containing %s", tc.name, err, tc.want)
		}
	}
}
