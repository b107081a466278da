package config

import (
	"strconv"
	"strings"
	"testing"
)

// Issue 22: messages that point at the fix.

func TestTabInYAMLSaysTab(t *testing.T) {
	for _, tc := range []struct {
		desc, yaml string
		line, col  int
	}{
		{"tab indents a spec field", "apiVersion: govcloud/v1\nkind: Department\nmetadata: {name: x}\nspec:\n\tdisplayName: X\n", 5, 1},
		{"tab after spaces", "apiVersion: govcloud/v1\nkind: Department\nmetadata: {name: x}\nspec:\n  displayName: X\n  \tcostCentre: C\n", 6, 3},
		{"tab in a list", "apiVersion: govcloud/v1\nkind: AddressPool\nmetadata: {name: p}\nspec:\n  cidrs:\n  - 198.19.0.0/24\n\t- 198.19.1.0/24\n", 7, 1},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := Parse("in.yaml", []byte(tc.yaml))
			es := AsErrors(err)
			if len(es) != 1 {
				t.Fatalf("want one error, got %v", err)
			}
			if es[0].Line != tc.line || !strings.Contains(es[0].Msg, "a tab at column "+strconv.Itoa(tc.col)) || !strings.Contains(es[0].Msg, "spaces only") {
				t.Fatalf("error %q (line %d): want line %d naming the tab at column %d", es[0], es[0].Line, tc.line, tc.col)
			}
		})
	}
	// A tab inside a value is no syntax error and stays one.
	if _, err := Parse("in.yaml", []byte("apiVersion: govcloud/v1\nkind: Department\nmetadata: {name: x}\nspec: {displayName: \"a\tb\"}\n")); err != nil {
		t.Fatalf("tab inside a quoted value refused: %v", err)
	}
}

func TestPoolForEveryDepartment(t *testing.T) {
	doc := func(kind, name, spec string) string {
		return "---\napiVersion: govcloud/v1\nkind: " + kind + "\nmetadata: {name: " + name + "}\nspec: " + spec + "\n"
	}
	all := doc("AddressPool", "shared", `{cidrs: [203.0.113.0/28], departments: ["*"]}`)
	// A department added later draws from it with no edit of the pool.
	y := base + all + doc("Department", "finance", "{}") + doc("Service", "finance-www", "{department: finance, vip: 203.0.113.5, ports: [{port: 80}]}")
	if err := parseValidate(t, y); err != nil {
		t.Fatalf("a pool for every department refused a new department's VIP: %v", err)
	}
	objs, err := Parse("in.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	st := NewState()
	for _, o := range objs {
		st.Objects[o.Key()] = o
	}
	if deps := Dependents(st, st.Get(KindDepartment, "finance")); len(deps) != 1 || deps[0] != (Key{KindService, "finance-www"}) {
		t.Fatalf("finance's dependents = %v: a \"*\" pool must not hold every department", deps)
	}
	for _, tc := range []struct{ desc, yaml, want string }{
		{"no departments", base + doc("AddressPool", "p", "{cidrs: [203.0.113.0/28]}"), `spec.departments: list the departments that may draw from this pool, or ["*"] for every department`},
		{"star with names", base + doc("AddressPool", "p", `{cidrs: [203.0.113.0/28], departments: [lands, "*"]}`), `spec.departments[1] "*": "*" already means every department`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if err := parseValidate(t, tc.yaml); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v: want %q", err, tc.want)
			}
		})
	}
}

// stored parses y as what the controller already holds: objects without a source.
func stored(t *testing.T, y string) *State {
	t.Helper()
	objs, err := Parse("stored.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	st := NewState()
	for _, o := range objs {
		o.Source = nil
		st.Objects[o.Key()] = o
	}
	return st
}

func TestStrandedErrorsNameTheInputDocument(t *testing.T) {
	doc := func(kind, name, spec string) string {
		return "---\napiVersion: govcloud/v1\nkind: " + kind + "\nmetadata: {name: " + name + "}\nspec: " + spec + "\n"
	}
	for _, tc := range []struct {
		desc, stored, input string
		want                []string // substrings, the first the input's file:line and document
	}{
		{"pool no longer serves a stored service's pool", base + doc("Service", "web", "{department: lands, pool: lands-public, ports: [{port: 80}]}"),
			doc("AddressPool", "lands-public", "{cidrs: [198.19.0.0/24], departments: [health]}"),
			[]string{"in.yaml:5: document 1: AddressPool \"lands-public\": spec.departments: strands Service \"web\" (stored, not in this input): spec.pool \"lands-public\": pool does not serve department \"lands\""}},
		{"pool shrinks past a stored static VIP", base + doc("Service", "web", "{department: lands, vip: 198.19.0.200, ports: [{port: 80}]}"),
			doc("AddressPool", "lands-public", "{cidrs: [198.19.0.0/25], departments: [lands]}"),
			[]string{"in.yaml:5: document 1: AddressPool \"lands-public\": spec.cidrs: strands Service \"web\"", `spec.vip "198.19.0.200": VIP is outside every address pool`}},
		{"pool drops the department of a stored static VIP", base + doc("Service", "web", "{department: lands, vip: 198.19.0.7, ports: [{port: 80}]}"),
			doc("AddressPool", "lands-public", "{cidrs: [198.19.0.0/24], departments: [health]}"),
			[]string{"in.yaml:5: document 1: AddressPool \"lands-public\": spec.departments: strands Service \"web\"", `which does not serve department "lands"`}},
		{"segment shrinks past a stored VM's address", base + doc("VM", "v1", "{department: lands, vcpus: 1, memoryMiB: 64, networks: [{segment: lands-web, ipv4: 198.18.20.200}]}"),
			doc("Segment", "lands-web", "{department: lands, vlan: 120, ipv4: 198.18.20.0/25, gateway: 198.18.20.1}"),
			[]string{"in.yaml:5: document 1: Segment \"lands-web\": spec.ipv4: strands VM \"v1\"", `spec.networks[0].ipv4 "198.18.20.200": outside segment`}},
		{"segment moves to another department", base + doc("VM", "v1", "{department: lands, vcpus: 1, memoryMiB: 64, networks: [{segment: lands-web}]}"),
			doc("Segment", "lands-web", "{department: health, vlan: 120, ipv4: 198.18.21.0/24}"),
			[]string{"in.yaml:5: document 1: Segment \"lands-web\": spec.department: strands VM \"v1\"", "segment belongs to department"}},
		{"volume moves to another department", base + doc("Volume", "vol", "{department: lands, sizeGiB: 1}") + doc("VM", "v1", "{department: lands, vcpus: 1, memoryMiB: 64, volumes: [vol], networks: [{segment: lands-web}]}"),
			doc("Volume", "vol", "{department: health, sizeGiB: 1}"),
			[]string{"in.yaml:5: document 1: Volume \"vol\": spec.department: strands VM \"v1\"", "volume belongs to department"}},
		{"backend VM moves to another department", base + doc("VM", "v1", "{department: lands, vcpus: 1, memoryMiB: 64, networks: [{segment: lands-web}]}") + doc("Service", "web", "{department: lands, ports: [{port: 80}], backends: [{vm: v1}]}"),
			doc("VM", "v1", "{department: health, vcpus: 1, memoryMiB: 64, networks: [{segment: health-web}]}"),
			[]string{"in.yaml:5: document 1: VM \"v1\": spec.department: strands Service \"web\"", "backend VM belongs to department"}},
		{"segment no longer holds a stored backend address", base + doc("Service", "web", "{department: lands, ports: [{port: 80}], backends: [{address: 198.18.20.200}]}"),
			doc("Segment", "lands-web", "{department: lands, vlan: 120, ipv4: 198.18.20.0/25, gateway: 198.18.20.1}"),
			[]string{"in.yaml:5: document 1: Segment \"lands-web\": spec.ipv4: strands Service \"web\"", "backend address is not in any segment"}},
		{"quota lowered below stored VMs", base + doc("VM", "v1", "{department: lands, vcpus: 2, memoryMiB: 64, networks: [{segment: lands-web}]}"),
			doc("Department", "lands", "{quotas: {vcpus: 1}}"),
			[]string{"in.yaml:5: document 1: Department \"lands\": spec.quotas.vcpus: strands VM \"v1\"", "quota exceeded"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			st := stored(t, tc.stored)
			in, err := Parse("in.yaml", []byte(tc.input))
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range in {
				st.Objects[o.Key()] = o
			}
			err = Validate(st).Err()
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// An internal pool's VIPs are dsr only (issue 17 §2): nat is refused naming the service, the
// field and the pool, whichever way the service reaches the pool; dsr and no mode pass.
func TestInternalPoolModes(t *testing.T) {
	doc := func(kind, name, spec string) string {
		return "---\napiVersion: govcloud/v1\nkind: " + kind + "\nmetadata: {name: " + name + "}\nspec: " + spec + "\n"
	}
	pool := doc("AddressPool", "lands-internal", `{cidrs: [198.19.250.0/28], departments: [lands], scope: internal}`) // base has the public pool lands-public
	for _, tc := range []struct{ desc, spec, want string }{
		{"named pool, nat", "{department: lands, pool: lands-internal, mode: nat, ports: [{port: 80}]}", `Service "api": spec.mode "nat": pool "lands-internal" is internal`},
		{"static VIP in the pool, nat", "{department: lands, vip: 198.19.250.5, mode: nat, ports: [{port: 80}]}", `spec.mode "nat": pool "lands-internal" is internal`},
		{"public pool, nat", "{department: lands, pool: lands-public, mode: nat, ports: [{port: 80}]}", ""},
		{"named pool, dsr", "{department: lands, pool: lands-internal, mode: dsr, ports: [{port: 80}]}", ""},
		{"named pool, no mode", "{department: lands, pool: lands-internal, ports: [{port: 80}]}", ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			err := parseValidate(t, base+pool+doc("Service", "api", tc.spec))
			if tc.want == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("error %v: want %q", err, tc.want)
			}
		})
	}
}

// A static VIP is never an address a department holds for egress or a VM as its floating IP
// (issue 17 §4: it would take another department's public address): refused naming the
// holder; a free address of the same pool passes.
func TestStaticVIPNotAHeldPublicAddress(t *testing.T) {
	for _, tc := range []struct{ desc, vip, want string }{
		{"another department's egress address", "198.19.0.5", `spec.vip "198.19.0.5": address is department "health"'s egress address on host "h1"`},
		{"a VM's floating IP", "198.19.0.6", `spec.vip "198.19.0.6": address is VM "v1"'s floating IP`},
		{"its own department's egress address", "198.19.0.7", `department "lands"'s egress address on host "h2"`},
		{"a free address", "198.19.0.9", ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			objs, err := Parse("in.yaml", []byte(base+"---\napiVersion: govcloud/v1\nkind: Service\nmetadata: {name: web}\nspec: {department: lands, vip: "+tc.vip+", ports: [{port: 80}]}\n"))
			if err != nil {
				t.Fatal(err)
			}
			st := NewState()
			for _, o := range objs {
				st.Objects[o.Key()] = o
			}
			st.Get(KindDepartment, "health").Status.Egress = map[string]string{"h1": "198.19.0.5"}
			st.Get(KindDepartment, "lands").Status.Egress = map[string]string{"h2": "198.19.0.7"}
			vm := &Object{APIVersion: "govcloud/v1", Kind: KindVM, Metadata: Metadata{Name: "v1"}, Spec: &VMSpec{Department: "health"}}
			vm.Status.FloatingIP = "198.19.0.6"
			st.Objects[vm.Key()] = vm
			err = Validate(st).Err()
			if tc.want == "" {
				if err != nil && strings.Contains(err.Error(), "spec.vip") {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// Segment prefixes too small for a gateway and a guest are refused, IPv4 and IPv6 alike.
func TestSegmentPrefixTooSmall(t *testing.T) {
	seg := func(spec string) string {
		return "---\napiVersion: govcloud/v1\nkind: Segment\nmetadata: {name: tiny}\nspec: " + spec + "\n"
	}
	for _, tc := range []struct{ desc, spec, want string }{
		{"IPv4 /31", "{department: lands, ipv4: 198.18.90.0/31}", `spec.ipv4 "198.18.90.0/31": prefix too small`},
		{"IPv6 /128", `{department: lands, ipv4: 198.18.90.0/24, ipv6: "2001:db8:90::/128"}`, `spec.ipv6 "2001:db8:90::/128": prefix too small`},
		{"IPv6 /127", `{department: lands, ipv4: 198.18.90.0/24, ipv6: "2001:db8:90::/127"}`, `spec.ipv6 "2001:db8:90::/127": prefix too small`},
		{"IPv6 /126", `{department: lands, ipv4: 198.18.90.0/24, ipv6: "2001:db8:90::/126"}`, ""},
		{"IPv6 /64", `{department: lands, ipv4: 198.18.90.0/24, ipv6: "2001:db8:90::/64"}`, ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			err := parseValidate(t, base+seg(tc.spec))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// A pool never overlaps a segment of a department it serves (its VIPs would be gateways' and
// guests' addresses there); the error lands on the document of the input.
func TestPoolOverlapsServedSegment(t *testing.T) {
	d := func(kind, name, spec string) string {
		return "---\napiVersion: govcloud/v1\nkind: " + kind + "\nmetadata: {name: " + name + "}\nspec: " + spec + "\n"
	}
	for _, tc := range []struct{ desc, yaml, want string }{
		{"internal pool inside lands' segment", base + d("AddressPool", "in", `{cidrs: [198.18.20.0/28], departments: [lands], scope: internal}`),
			`AddressPool "in": spec.cidrs "198.18.20.0/28": overlaps 198.18.20.0/24 of segment "lands-web" of department "lands"`},
		{"pool for every department over health's segment", base + d("AddressPool", "all", `{cidrs: [198.18.30.128/25], departments: ["*"]}`),
			`spec.cidrs "198.18.30.128/25": overlaps 198.18.30.0/24 of segment "health-web"`},
		{"IPv6 pool inside a segment's IPv6 prefix", base + d("Segment", "lands-v6", `{department: lands, ipv4: 198.18.91.0/24, ipv6: "2001:db8:91::/64"}`) + d("AddressPool", "v6", `{cidrs: ["2001:db8:91::/120"], departments: [lands]}`),
			`overlaps 2001:db8:91::/64 of segment "lands-v6"`},
		{"pool over a segment of a department it does not serve", base + d("AddressPool", "other", `{cidrs: [198.18.30.0/28], departments: [lands]}`), ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			err := parseValidate(t, tc.yaml)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
