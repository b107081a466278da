package config

import (
	"strings"
	"testing"

	"github.com/govcloud/govcloud/controlplane/config/configtest"
)

const base = configtest.LandsHealth

// wantRefused fails t unless y is refused with an error containing each of want.
func wantRefused(t *testing.T, y string, want ...string) {
	t.Helper()
	err := parseValidate(t, y)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

func parseValidate(t testing.TB, y string) error {
	objs, err := Parse("test.yaml", []byte(y))
	if err != nil {
		return err
	}
	st := NewState()
	for _, o := range objs {
		st.Objects[o.Key()] = o
	}
	return Validate(st).Err()
}

func TestValid(t *testing.T) {
	if err := parseValidate(t, base); err != nil {
		t.Fatalf("valid input refused: %v", err)
	}
	objs, _ := Parse("x.yaml", []byte(base))
	if len(objs) != 6 || *objs[4].Spec.(*SegmentSpec).VLAN != 120 {
		t.Fatalf("parsed %d objects, first segment %+v", len(objs), objs[4].Spec)
	}
}

func TestBadInput(t *testing.T) {
	doc := func(kind, name, spec string) string {
		return "---\napiVersion: govcloud/v1\nkind: " + kind + "\nmetadata: {name: " + name + "}\nspec: " + spec + "\n"
	}
	for _, tc := range []struct {
		desc, yaml string
		want       []string // substrings of the error
	}{
		{"invalid YAML", base + "---\nkind: [unclosed\n", []string{"test.yaml:", "document 7", "invalid YAML"}},
		{"unknown kind", base + doc("Router", "r1", "{}"), []string{"document 7", `"Router"`, "unknown kind"}},
		{"unknown field", base + doc("Segment", "s1", "{department: lands, ipv4: 198.18.21.0/24, colour: red}"), []string{"test.yaml:34:", `Segment "s1"`, "spec.colour", "unknown field"}},
		{"VLAN 0", base + doc("Segment", "s1", "{department: lands, vlan: 0, ipv4: 198.18.21.0/24}"), []string{`Segment "s1"`, `spec.vlan "0"`, "1 to 4094"}},
		{"VLAN 4095", base + doc("Segment", "s1", "{department: lands, vlan: 4095, ipv4: 198.18.21.0/24}"), []string{`spec.vlan "4095"`}},
		{"VLAN not a number", base + doc("Segment", "s1", "{department: lands, vlan: ten, ipv4: 198.18.21.0/24}"), []string{`spec.vlan "ten"`, "integer"}},
		{"duplicate VLAN", base + doc("Segment", "s1", "{department: health, vlan: 120, ipv4: 198.18.21.0/24}"), []string{`Segment "s1"`, "duplicate VLAN", `"lands-web"`}},
		{"CIDR overlap in one department", base + doc("Segment", "s1", "{department: lands, ipv4: 198.18.20.128/25}"), []string{`Segment "s1"`, `spec.ipv4 "198.18.20.128/25"`, "overlaps", `"lands-web"`}},
		{"gateway outside segment", base + doc("Segment", "s1", "{department: lands, ipv4: 198.18.21.0/24, gateway: 198.18.22.1}"), []string{`spec.gateway "198.18.22.1"`, "outside the segment"}},
		{"host bits set", base + doc("Segment", "s1", "{department: lands, ipv4: 198.18.21.5/24}"), []string{`spec.ipv4 "198.18.21.5/24"`, "host bits"}},
		{"VIP outside every pool", base + doc("Service", "web", "{department: lands, vip: 203.0.113.10, ports: [{port: 80}]}"), []string{`Service "web"`, `spec.vip "203.0.113.10"`, "outside every address pool"}},
		{"VIP in another department's pool", base + doc("Service", "web", "{department: lands, vip: 198.19.1.5, ports: [{port: 80}]}"), []string{`spec.vip "198.19.1.5"`, `"health-public"`, "does not serve"}},
		{"backend in another department", base + doc("Service", "web", "{department: lands, ports: [{port: 80}], backends: [{address: 198.18.30.5}]}"), []string{`spec.backends[0].address "198.18.30.5"`, `department "health"`}},
		{"unknown department", base + doc("Segment", "s1", "{department: nosuch, ipv4: 198.18.21.0/24}"), []string{`spec.department "nosuch"`, "unknown department"}},
		{"quota exceeded", base + doc("Volume", "v1", "{department: lands, sizeGiB: 11}"), []string{`Volume "v1"`, "quota exceeded", "10 GiB"}},
		{"volume restored from a path", base + doc("Volume", "v1", "{department: lands, sizeGiB: 1, restoreFrom: /etc/shadow}"), []string{`Volume "v1"`, `spec.restoreFrom "/etc/shadow"`, "volume backup id"}},
		{"volume restored from a hidden file", base + doc("Volume", "v1", "{department: lands, sizeGiB: 1, restoreFrom: ..}"), []string{`spec.restoreFrom ".."`, "volume backup id"}},
		{"volume restored from a name with a space", base + doc("Volume", "v1", "{department: lands, sizeGiB: 1, restoreFrom: 'data 1'}"), []string{`spec.restoreFrom "data 1"`}},
		{"volume from a backup and an image", base + doc("Volume", "v1", "{department: lands, sizeGiB: 1, image: tiny, restoreFrom: v0-20261205T101500Z}"), []string{`spec.restoreFrom "v0-20261205T101500Z"`, `image "tiny"`, "not both"}},
		{"BFD interval too short", base + doc("Host", "h1", "{uplink: eth0, address: 198.18.0.1, asn: 65001, bgpPeers: [{address: 198.18.0.254, asn: 65000, bfd: {minTxMs: 5}}]}"), []string{`Host "h1"`, `spec.bgpPeers[0].bfd.minTxMs "5"`}},
		{"BFD multiplier too large", base + doc("Host", "h1", "{uplink: eth0, address: 198.18.0.1, asn: 65001, bgpPeers: [{address: 198.18.0.254, asn: 65000, bfd: {multiplier: 300}}]}"), []string{`spec.bgpPeers[0].bfd.multiplier "300"`}},
		{"BFD over multihop", base + doc("Host", "h1", "{uplink: eth0, address: 198.18.0.1, asn: 65001, bgpPeers: [{address: 198.18.0.254, asn: 65000, multihop: 3, bfd: {}}]}"), []string{`spec.bgpPeers[0].bfd`, "single hop"}},
		{"hold-down initial above max", base + doc("Host", "h1", "{uplink: eth0, address: 198.18.0.1, asn: 65001, bgpHoldDown: {initialMs: 5000, maxMs: 1000}}"), []string{`spec.bgpHoldDown.initialMs "5000"`}},
		{"AS_TRANS peer", base + doc("Host", "h1", "{uplink: eth0, address: 198.18.0.1, asn: 65001, bgpPeers: [{address: 198.18.0.254, asn: 23456}]}"), []string{`spec.bgpPeers[0].asn "23456"`}},
		{"BGP hold time too short", base + doc("Host", "h1", "{uplink: eth0, address: 198.18.0.1, asn: 65001, bgpPeers: [{address: 198.18.0.254, asn: 65000, holdTime: 2}]}"), []string{`Host "h1"`, `spec.bgpPeers[0].holdTime "2"`}},
		{"negative local preference", base + doc("Service", "web", "{department: lands, ports: [{port: 80}], bgp: {localPref: -1}}"), []string{`Service "web"`, `spec.bgp.localPref "-1"`}},
		{"overcommit below 1", base + doc("Host", "h1", "{uplink: eth0, address: 198.18.0.1, capacity: {vcpus: 4, overcommit: {vcpus: 0.5}}}"), []string{`Host "h1"`, `spec.capacity.overcommit.vcpus "0.5"`, "1 to 64"}},
		{"overcommit above 64", base + doc("Host", "h1", "{uplink: eth0, address: 198.18.0.1, capacity: {memoryMiB: 4096, overcommit: {memory: 65}}}"), []string{`spec.capacity.overcommit.memory "65"`}},
		{"overcommit not a number", base + doc("Host", "h1", "{uplink: eth0, address: 198.18.0.1, capacity: {diskGiB: 10, overcommit: {disk: lots}}}"), []string{`spec.capacity.overcommit.disk "lots"`, "want a number"}},
		{"overcommit infinite", base + doc("Host", "h1", "{uplink: eth0, address: 198.18.0.1, capacity: {vcpus: 4, overcommit: {vcpus: .inf}}}"), []string{`spec.capacity.overcommit.vcpus ".inf"`, "finite"}},
		{"negative disk capacity", base + doc("Host", "h1", "{uplink: eth0, address: 198.18.0.1, capacity: {diskGiB: -1}}"), []string{`spec.capacity.diskGiB "-1"`}},
		{"two hosts with one address", base + doc("Host", "h1", "{uplink: eth0, address: 198.18.0.1}") + doc("Host", "h2", "{uplink: eth0, address: 198.18.0.1}"), []string{`Host "h2"`, `spec.address "198.18.0.1"`, `"h1"`}},
		{"static VM address taken", base + doc("VM", "v1", "{department: lands, vcpus: 1, memoryMiB: 64, networks: [{segment: lands-web, ipv4: 198.18.20.9}]}") + doc("VM", "v2", "{department: lands, vcpus: 1, memoryMiB: 64, networks: [{segment: lands-web, ipv4: 198.18.20.9}]}"), []string{`VM "v2"`, `spec.networks[0].ipv4 "198.18.20.9"`, `"v1"`}},
		{"status given", base + "---\napiVersion: govcloud/v1\nkind: Department\nmetadata: {name: x}\nspec: {}\nstatus: {}\n", []string{"status is written by the controller"}},
		{"bad name", base + doc("Department", "Bad_Name", "{}"), []string{`metadata.name "Bad_Name"`}},
		{"object twice", base + doc("Department", "lands", "{}"), []string{`Department "lands"`, "given twice"}},
		{"pool overlaps an earlier pool", base + doc("AddressPool", "p2", "{cidrs: [198.19.0.8/29], departments: [lands]}"), []string{`AddressPool "p2"`, `spec.cidrs "198.19.0.8/29"`, `address pool "lands-public"`}},
		{"pool overlap in one pool", base + doc("AddressPool", "p2", "{cidrs: [203.0.113.0/24, 203.0.113.0/25], departments: [lands]}"), []string{`AddressPool "p2"`, `spec.cidrs[1] "203.0.113.0/25"`, "same pool"}},
		{"backend VM of another department", base + doc("VM", "hv", "{department: health, vcpus: 1, memoryMiB: 64, networks: [{segment: health-web}]}") + doc("Service", "web", "{department: lands, ports: [{port: 80}], backends: [{vm: hv}]}"), []string{`Service "web"`, `spec.backends[0].vm "hv"`, `department "health"`}},
		{"volume of another department", base + doc("Volume", "hvol", "{department: health, sizeGiB: 1}") + doc("VM", "lv", "{department: lands, vcpus: 1, memoryMiB: 64, volumes: [hvol], networks: [{segment: lands-web}]}"), []string{`VM "lv"`, `spec.volumes[0] "hvol"`, `department "health"`}},
		{"wrong apiVersion", strings.Replace(base, "govcloud/v1", "govcloud/v2", 1), []string{`apiVersion "govcloud/v2"`}},
	} {
		t.Run(tc.desc, func(t *testing.T) { wantRefused(t, tc.yaml, tc.want...) })
	}
}

func TestVolumeRestoreFromValid(t *testing.T) {
	doc := "---\napiVersion: govcloud/v1\nkind: Volume\nmetadata: {name: v1}\nspec: {department: lands, sizeGiB: 1, restoreFrom: lands-data-20261205T101500Z}\n"
	if err := parseValidate(t, base+doc); err != nil {
		t.Fatalf("volume restored from a backup id refused: %v", err)
	}
}

func TestOverlapAcrossDepartmentsAllowed(t *testing.T) {
	y := base + "---\napiVersion: govcloud/v1\nkind: Segment\nmetadata: {name: h2}\nspec: {department: health, ipv4: 198.18.20.0/24}\n"
	if err := parseValidate(t, y); err != nil {
		t.Fatalf("overlap across departments refused: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(base)
	f.Add("kind: Segment\nmetadata: {name: a}\nspec: {vlan: 4095}")
	f.Add("---\n- a\n- b\n")
	f.Add("apiVersion: govcloud/v1\nkind: Service\nmetadata: {name: s}\nspec: {department: d, ports: [{port: 99999}], backends: [{vm: x, address: y}], healthCheck: {type: http, interval: -1s}}")
	f.Add("apiVersion: govcloud/v1\nkind: VM\nmetadata: {name: v}\nspec: {department: d, networks: [{segment: s, ipv4: 1.2.3.4}], volumes: [a, a]}")
	f.Add("a: &x [*x]")
	f.Fuzz(func(t *testing.T, y string) {
		err := parseValidate(t, y)
		if err == nil {
			return
		}
		es := AsErrors(err)
		if len(es) == 0 {
			t.Fatalf("error without structure: %v", err)
		}
		for _, e := range es {
			if e.Doc == 0 && e.Name == "" && e.Kind == "" {
				t.Fatalf("error names no object or document: %v", e)
			}
		}
	})
}
