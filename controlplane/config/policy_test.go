package config

import (
	"slices"
	"strings"
	"testing"
)

// policyBase is base with a second lands segment and a policy guarding lands' db tier.
const policyBase = base + `---
apiVersion: govcloud/v1
kind: Segment
metadata: {name: lands-app}
spec: {department: lands, vlan: 121, ipv4: 198.18.21.0/24, gateway: 198.18.21.1}
---
apiVersion: govcloud/v1
kind: VM
metadata: {name: db-1, labels: {tier: db}}
spec: {department: lands, vcpus: 1, memoryMiB: 64, networks: [{segment: lands-web}]}
`

func policyDoc(spec string) string {
	return "---\napiVersion: govcloud/v1\nkind: SecurityPolicy\nmetadata: {name: db-only-app}\nspec: " + spec + "\n"
}

func TestSecurityPolicyValid(t *testing.T) {
	for name, spec := range map[string]string{
		"app tier to the db port": `{department: lands, selector: {tier: db}, allow: [{from: [{vmLabels: {tier: app}}], protocol: tcp, ports: [{port: 5432}]}]}`,
		"segment, CIDR, range":    `{department: lands, selector: {tier: db}, allow: [{from: [{segment: lands-app}, {cidr: 198.18.20.0/28}, {cidr: "2001:db8::/64"}], protocol: udp, ports: [{port: 8000, endPort: 8080}]}]}`,
		"from anywhere, icmp":     `{department: lands, selector: {tier: db}, allow: [{protocol: icmp}]}`,
		"no rule: deny all":       `{department: lands, selector: {tier: db}}`,
		"any protocol, no ports":  `{department: lands, selector: {tier: db, env: prod}, allow: [{from: [{segment: lands-web}], protocol: any}]}`,
	} {
		if err := parseValidate(t, policyBase+policyDoc(spec)); err != nil {
			t.Errorf("%s: refused: %v", name, err)
		}
	}
	objs, err := Parse("p.yaml", []byte(policyDoc(`{department: lands, selector: {tier: db}}`)))
	if err != nil {
		t.Fatal(err)
	}
	if objs[0].Department() != "lands" {
		t.Errorf("department %q", objs[0].Department())
	}
	for _, alias := range []string{"securitypolicies", "SecurityPolicy", "policy", "policies"} {
		if NormalizeKind(alias) != KindSecurityPolicy {
			t.Errorf("alias %q: %q", alias, NormalizeKind(alias))
		}
	}
	if Plural(KindSecurityPolicy) != "securitypolicies" || Plural(KindVM) != "vms" {
		t.Errorf("plurals %q %q", Plural(KindSecurityPolicy), Plural(KindVM))
	}
}

// TestSecurityPolicyInvalid: every bad input names the object, the field and the value; for
// each class, the given case and two more.
func TestSecurityPolicyInvalid(t *testing.T) {
	allow := func(rule string) string { return `{department: lands, selector: {tier: db}, allow: [` + rule + `]}` }
	for _, tc := range []struct {
		desc, spec string
		want       []string
	}{
		{"too many rules", allow(strings.Repeat(`{protocol: icmp}, `, MaxPolicyRules) + `{protocol: icmp}`), []string{`spec.allow "257 rules"`, "at most 256 rules"}},
		{"too many sources", allow(`{from: [` + strings.Repeat(`{cidr: 198.18.20.0/24}, `, MaxPolicySources) + `{cidr: 198.18.20.0/24}]}`), []string{`spec.allow[0].from "257 sources"`, "at most 256 sources"}},
		{"too many ports", allow(`{protocol: tcp, ports: [` + strings.Repeat(`{port: 80}, `, MaxPolicyPorts) + `{port: 81}]}`), []string{`spec.allow[0].ports "65 ports"`, "at most 64 ports", "endPort"}},
		{"unknown segment", allow(`{from: [{segment: lands-db}]}`), []string{`SecurityPolicy "db-only-app"`, `spec.allow[0].from[0].segment "lands-db"`, "unknown segment"}},
		{"segment of another department", allow(`{from: [{segment: health-web}]}`), []string{`spec.allow[0].from[0].segment "health-web"`, `department "health"`}},
		{"unknown segment in a later rule", allow(`{protocol: icmp}, {from: [{cidr: 198.18.20.0/24}, {segment: nosuch}]}`), []string{`spec.allow[1].from[1].segment "nosuch"`, "unknown segment"}},
		{"CIDR not a prefix", allow(`{from: [{cidr: not-a-cidr}]}`), []string{`spec.allow[0].from[0].cidr "not-a-cidr"`, "not a CIDR"}},
		{"CIDR with host bits", allow(`{from: [{cidr: 198.18.20.5/24}]}`), []string{`spec.allow[0].from[0].cidr "198.18.20.5/24"`, "host bits", "198.18.20.0/24"}},
		{"CIDR prefix too long", allow(`{from: [{cidr: 198.18.20.0/33}]}`), []string{`spec.allow[0].from[0].cidr "198.18.20.0/33"`}},
		{"CIDR an address", allow(`{from: [{cidr: 198.18.20.7}]}`), []string{`spec.allow[0].from[0].cidr "198.18.20.7"`}},
		{"protocol sctp", allow(`{protocol: sctp}`), []string{`spec.allow[0].protocol "sctp"`, "tcp, udp, icmp, any"}},
		{"protocol upper-case", allow(`{protocol: TCP}`), []string{`spec.allow[0].protocol "TCP"`}},
		{"protocol a number", allow(`{protocol: "6"}`), []string{`spec.allow[0].protocol "6"`}},
		{"port 0", allow(`{protocol: tcp, ports: [{port: 0}]}`), []string{`spec.allow[0].ports[0].port "0"`, "1 to 65535"}},
		{"port 65536", allow(`{protocol: tcp, ports: [{port: 65536}]}`), []string{`spec.allow[0].ports[0].port "65536"`}},
		{"port negative", allow(`{protocol: udp, ports: [{port: 80}, {port: -1}]}`), []string{`spec.allow[0].ports[1].port "-1"`}},
		{"range reversed", allow(`{protocol: tcp, ports: [{port: 8080, endPort: 8000}]}`), []string{`spec.allow[0].ports[0].endPort "8000"`, "from port (8080)"}},
		{"range past 65535", allow(`{protocol: tcp, ports: [{port: 8080, endPort: 70000}]}`), []string{`spec.allow[0].ports[0].endPort "70000"`}},
		{"range negative end", allow(`{protocol: udp, ports: [{port: 53, endPort: -53}]}`), []string{`spec.allow[0].ports[0].endPort "-53"`}},
		{"ports with icmp", allow(`{protocol: icmp, ports: [{port: 8}]}`), []string{`spec.allow[0].ports`, "need protocol tcp or udp, not icmp"}},
		{"ports with any protocol", allow(`{ports: [{port: 80}]}`), []string{`spec.allow[0].ports`, "not any"}},
		{"ports with explicit any", allow(`{protocol: any, ports: [{port: 80}]}`), []string{`spec.allow[0].ports`, "not any"}},
		{"selector missing", `{department: lands, allow: [{protocol: tcp}]}`, []string{`SecurityPolicy "db-only-app"`, "spec.selector", "required"}},
		{"selector empty", `{department: lands, selector: {}}`, []string{"spec.selector", "required"}},
		{"selector null", `{department: lands, selector: null}`, []string{"spec.selector", "required"}},
		{"source empty", allow(`{from: [{}]}`), []string{"spec.allow[0].from[0]", "exactly one of segment, cidr or vmLabels"}},
		{"source with two kinds", allow(`{from: [{segment: lands-app, cidr: 198.18.21.0/24}]}`), []string{"spec.allow[0].from[0]", "exactly one"}},
		{"source vmLabels empty", allow(`{from: [{vmLabels: {}}]}`), []string{"spec.allow[0].from[0].vmLabels", "at least one label"}},
		{"unknown department", `{department: finance, selector: {tier: db}}`, []string{`spec.department "finance"`, "unknown department"}},
		{"no department", `{selector: {tier: db}}`, []string{"spec.department", "required"}},
		{"unknown field", `{department: lands, selector: {tier: db}, deny: []}`, []string{"spec.deny", "unknown field"}},
	} {
		t.Run(tc.desc, func(t *testing.T) { wantRefused(t, policyBase+policyDoc(tc.spec), tc.want...) })
	}
}

func TestSecurityPolicySelectsAndDependents(t *testing.T) {
	for _, tc := range []struct {
		sel, labels map[string]string
		want        bool
	}{
		{map[string]string{"tier": "db"}, map[string]string{"tier": "db", "env": "prod"}, true},
		{map[string]string{"tier": "db", "env": "prod"}, map[string]string{"tier": "db"}, false},
		{map[string]string{"tier": "db"}, map[string]string{"tier": "app"}, false},
		{map[string]string{"tier": "db"}, nil, false},
		{nil, map[string]string{"tier": "db"}, false},
	} {
		if got := Selects(tc.sel, tc.labels); got != tc.want {
			t.Errorf("Selects(%v, %v) = %v", tc.sel, tc.labels, got)
		}
	}
	objs, err := Parse("p.yaml", []byte(policyBase+policyDoc(`{department: lands, selector: {tier: db}, allow: [{from: [{segment: lands-app}]}]}`)))
	if err != nil {
		t.Fatal(err)
	}
	st := NewState()
	for _, o := range objs {
		st.Objects[o.Key()] = o
	}
	pol := Key{KindSecurityPolicy, "db-only-app"}
	if d := Dependents(st, st.Get(KindSegment, "lands-app")); !slices.Contains(d, pol) {
		t.Errorf("segment lands-app's dependents %v lack the policy naming it", d)
	}
	if d := Dependents(st, st.Get(KindDepartment, "lands")); !slices.Contains(d, pol) {
		t.Errorf("department lands' dependents %v lack its policy", d)
	}
	if d := Dependents(st, st.Get(KindSegment, "lands-web")); slices.Contains(d, pol) {
		t.Errorf("segment lands-web's dependents %v have a policy that does not name it", d)
	}
}
