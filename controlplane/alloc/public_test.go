package alloc

import (
	"strings"
	"testing"

	"github.com/govcloud/govcloud/controlplane/config"
)

// egressBase: departments a and b draw egress from pool pub (a /29: .1-.6 usable), which also
// holds a service VIP (.1), on two hosts; VM v1 of a asks for a floating IP.
func egressBase(pubCIDR string) string {
	return "apiVersion: govcloud/v1\nkind: Department\nmetadata: {name: a}\nspec: {egress: pub}\n" +
		"---\napiVersion: govcloud/v1\nkind: Department\nmetadata: {name: b}\nspec: {egress: pub}\n" +
		doc("AddressPool", "pub", "{cidrs: ["+pubCIDR+"], departments: ['*']}") +
		doc("Segment", "s1", "{department: a, ipv4: 198.18.1.0/24}") +
		doc("Segment", "s2", "{department: b, ipv4: 198.18.1.0/24}") +
		doc("Host", "h1", "{uplink: eth0, address: 198.18.0.1}") +
		doc("Host", "h2", "{uplink: eth0, address: 198.18.0.2}") +
		doc("Service", "www", "{department: a, vip: 203.0.113.1, ports: [{port: 80}], backends: [{address: 198.18.1.9}]}") +
		doc("VM", "v1", "{department: a, vcpus: 1, memoryMiB: 64, networks: [{segment: s1}], host: h1, floatingIP: pub}")
}

// TestEgressPerDepartmentPerHost: one address per department per host and one per floating
// IP, all distinct, none a VIP or a reserved address; held ones are kept when others go.
func TestEgressPerDepartmentPerHost(t *testing.T) {
	st := state(t, egressBase("203.0.113.0/29"))
	if es := Allocate(st, DefaultConfig()); len(es) > 0 {
		t.Fatal(es)
	}
	a, b := st.Get(config.KindDepartment, "a").Status.Egress, st.Get(config.KindDepartment, "b").Status.Egress
	fip := st.Get(config.KindVM, "v1").Status.FloatingIP
	// .0 is the network address, .1 the VIP: a takes .2 (h1) .3 (h2), b .4 .5, v1 .6.
	want := [][2]string{{a["h1"], "203.0.113.2"}, {a["h2"], "203.0.113.3"}, {b["h1"], "203.0.113.4"}, {b["h2"], "203.0.113.5"}, {fip, "203.0.113.6"}}
	for i, w := range want {
		if w[0] != w[1] {
			t.Errorf("address %d: got %q, want %s (a %v b %v fip %q)", i, w[0], w[1], a, b, fip)
		}
	}
	// b stops egressing and h1 goes: a keeps its h2 address, v1 its floating IP.
	st.Get(config.KindDepartment, "b").Spec.(*config.DepartmentSpec).Egress = ""
	delete(st.Objects, config.Key{Kind: config.KindHost, Name: "h1"})
	if es := Allocate(st, DefaultConfig()); len(es) > 0 {
		t.Fatal(es)
	}
	a, b = st.Get(config.KindDepartment, "a").Status.Egress, st.Get(config.KindDepartment, "b").Status.Egress
	if len(a) != 1 || a["h2"] != "203.0.113.3" || b != nil || st.Get(config.KindVM, "v1").Status.FloatingIP != "203.0.113.6" {
		t.Errorf("after b and h1 went: a %v b %v fip %q", a, b, st.Get(config.KindVM, "v1").Status.FloatingIP)
	}
}

// TestEgressPoolExhausted: too small a pool is an error naming the department or VM and the
// pool, never a shared or missing address.
func TestEgressPoolExhausted(t *testing.T) {
	for _, tc := range []struct{ cidr, want string }{
		{"203.0.113.0/30", `department "a"'s egress on host "h2"`}, // .1 VIP, .2 a/h1, then nothing
		{"203.0.113.0/29", ""},                  // fits exactly
		{"203.0.113.0/29, 198.51.100.0/30", ""}, // second prefix unused
		{"203.0.113.0/28, 198.51.100.0/32", ""},
	} {
		st := state(t, egressBase(tc.cidr))
		err := Allocate(st, DefaultConfig()).Err()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("pool %s: %v", tc.cidr, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("pool %s: error %v, want one saying %s", tc.cidr, err, tc.want)
		}
	}
}

// TestEgressPoolChecks: the pool must exist, be public and serve the department.
func TestEgressPoolChecks(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown pool", "apiVersion: govcloud/v1\nkind: Department\nmetadata: {name: a}\nspec: {egress: nope}\n", `spec.egress "nope": unknown address pool`},
		{"internal pool", "apiVersion: govcloud/v1\nkind: Department\nmetadata: {name: a}\nspec: {egress: in}\n" +
			doc("AddressPool", "in", "{cidrs: [203.0.113.0/29], departments: [a], scope: internal}"), "need a public pool"},
		{"pool of another department", "apiVersion: govcloud/v1\nkind: Department\nmetadata: {name: a}\nspec: {}\n" +
			doc("Department", "b", "{}") + doc("AddressPool", "pb", "{cidrs: [203.0.113.0/29], departments: [b]}") +
			doc("Segment", "s1", "{department: a, ipv4: 198.18.1.0/24}") +
			doc("VM", "v1", "{department: a, vcpus: 1, memoryMiB: 64, networks: [{segment: s1}], floatingIP: pb}"), `does not serve department "a"`},
	} {
		objs, err := config.Parse("t.yaml", []byte(tc.yaml))
		if err != nil {
			t.Fatal(err)
		}
		st := config.NewState()
		for _, o := range objs {
			st.Objects[o.Key()] = o
		}
		if err := config.Validate(st).Err(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestVIPsSkipEgressAddresses: a service added later to the pool the egress addresses came
// from gets a free address, never one a department or VM holds.
func TestVIPsSkipEgressAddresses(t *testing.T) {
	st := state(t, egressBase("203.0.113.0/28"))
	if es := Allocate(st, DefaultConfig()); len(es) > 0 {
		t.Fatal(es)
	}
	more := state(t, egressBase("203.0.113.0/28")+
		doc("Service", "www2", "{department: a, pool: pub, ports: [{port: 80}], backends: [{address: 198.18.1.9}]}")+
		doc("Service", "www3", "{department: b, ports: [{port: 80}], backends: [{address: 198.18.1.9}]}"))
	for k, o := range more.Objects {
		if old := st.Objects[k]; old != nil {
			o.Status = old.Status // what the store holds
		}
	}
	if es := Allocate(more, DefaultConfig()); len(es) > 0 {
		t.Fatal(es)
	}
	held := map[string]string{}
	for _, d := range []string{"a", "b"} {
		for h, a := range more.Get(config.KindDepartment, d).Status.Egress {
			held[a] = d + "@" + h
		}
	}
	held[more.Get(config.KindVM, "v1").Status.FloatingIP] = "v1"
	for _, s := range []string{"www2", "www3"} {
		vip := more.Get(config.KindService, s).Status.VIP
		if who, ok := held[vip]; ok || vip == "" {
			t.Errorf("service %s got VIP %q, held by %s", s, vip, who)
		}
	}
	if a := more.Get(config.KindDepartment, "a").Status.Egress["h1"]; a != "203.0.113.2" {
		t.Errorf("a's egress on h1 moved to %s", a)
	}
}
