package alloc

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/govcloud/govcloud/controlplane/config"
)

func state(t *testing.T, y string) *config.State {
	t.Helper()
	objs, err := config.Parse("t.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	st := config.NewState()
	for _, o := range objs {
		st.Objects[o.Key()] = o
	}
	if err := config.Validate(st).Err(); err != nil {
		t.Fatal(err)
	}
	return st
}

func doc(kind, name, spec string) string {
	return "---\napiVersion: govcloud/v1\nkind: " + kind + "\nmetadata: {name: " + name + "}\nspec: " + spec + "\n"
}

const depts = "apiVersion: govcloud/v1\nkind: Department\nmetadata: {name: a}\nspec: {}\n" +
	"---\napiVersion: govcloud/v1\nkind: Department\nmetadata: {name: b}\nspec: {}\n"

func TestVLANsTablesKeptAndUnique(t *testing.T) {
	st := state(t, depts+
		doc("Segment", "s1", "{department: a, ipv4: 198.18.1.0/24}")+
		doc("Segment", "s2", "{department: a, vlan: 100, ipv4: 198.18.2.0/24}")+
		doc("Segment", "s3", "{department: b, ipv4: 198.18.3.0/24}")+
		doc("Segment", "s4", "{department: b, fabric: dc2, ipv4: 198.18.4.0/24}"))
	c := DefaultConfig()
	c.VLANs["dc2"] = Range{2000, 2001}
	if es := Allocate(st, c); len(es) > 0 {
		t.Fatal(es)
	}
	got := map[string]int{}
	for _, o := range st.List(config.KindSegment) {
		got[o.Metadata.Name] = o.Status.VLAN
	}
	// 100 is given to s2, so s1 and s3 get 101 and 102; dc2 has its own range.
	if got["s1"] != 101 || got["s2"] != 100 || got["s3"] != 102 || got["s4"] != 2000 {
		t.Errorf("VLANs %v", got)
	}
	a, b := st.Get(config.KindDepartment, "a").Status, st.Get(config.KindDepartment, "b").Status
	if a.TableID != 1000 || b.TableID != 1001 {
		t.Errorf("tables %+v %+v", a, b)
	}
	// Deleting s1 and adding s5: s5 must not take s3's VLAN, and s3 keeps 102.
	delete(st.Objects, config.Key{Kind: config.KindSegment, Name: "s1"})
	st2 := state(t, depts+doc("Segment", "s5", "{department: a, ipv4: 198.18.5.0/24}"))
	for k, o := range st.Objects {
		if _, ok := st2.Objects[k]; !ok {
			st2.Objects[k] = o
		}
	}
	st2.Get(config.KindDepartment, "a").Status = a
	st2.Get(config.KindDepartment, "b").Status = b
	if es := Allocate(st2, c); len(es) > 0 {
		t.Fatal(es)
	}
	if v := st2.Get(config.KindSegment, "s3").Status.VLAN; v != 102 {
		t.Errorf("s3 moved to VLAN %d", v)
	}
	if v := st2.Get(config.KindSegment, "s5").Status.VLAN; v != 101 {
		t.Errorf("s5 got VLAN %d, want the freed 101", v)
	}
	// Exhaustion names the segment and the range.
	st3 := state(t, depts+doc("Segment", "x1", "{department: a, fabric: dc2, ipv4: 198.18.1.0/24}")+
		doc("Segment", "x2", "{department: a, fabric: dc2, ipv4: 198.18.2.0/24}")+
		doc("Segment", "x3", "{department: a, fabric: dc2, ipv4: 198.18.3.0/24}"))
	es := Allocate(st3, c)
	if len(es) != 1 || !strings.Contains(es[0].Error(), `Segment "x3"`) || !strings.Contains(es[0].Error(), "2000-2001") {
		t.Errorf("exhaustion error %v", es)
	}
}

func TestVIPsFromTheDepartmentsPools(t *testing.T) {
	st := state(t, depts+
		doc("AddressPool", "pa", "{cidrs: [198.19.0.0/30], departments: [a]}")+
		doc("AddressPool", "pb", "{cidrs: [198.19.1.0/24, \"2001:db8::/126\"], departments: [b], scope: internal}")+
		doc("Service", "a1", "{department: a, ports: [{port: 80}]}")+
		doc("Service", "a2", "{department: a, ports: [{port: 80}]}")+
		doc("Service", "b6", "{department: b, ipFamily: ipv6, ports: [{port: 80}]}")+
		doc("Service", "b1", "{department: b, vip: 198.19.1.1, ports: [{port: 80}]}")+
		doc("Service", "b2", "{department: b, ports: [{port: 80}]}"))
	if es := Allocate(st, DefaultConfig()); len(es) > 0 {
		t.Fatal(es)
	}
	want := map[string]string{"a1": "198.19.0.1", "a2": "198.19.0.2", "b6": "2001:db8::1", "b1": "198.19.1.1", "b2": "198.19.1.2"}
	for n, w := range want {
		if got := st.Get(config.KindService, n).Status.VIP; got != w {
			t.Errorf("service %s VIP %s, want %s", n, got, w)
		}
	}
	// A /30 has two usable addresses: a third service in department a gets a clear error.
	st.Objects[config.Key{Kind: config.KindService, Name: "a3"}] = state(t, depts+doc("Service", "a3", "{department: a, ports: [{port: 80}]}")).Get(config.KindService, "a3")
	es := Allocate(st, DefaultConfig())
	if len(es) != 1 || !strings.Contains(es[0].Error(), `Service "a3"`) || !strings.Contains(es[0].Error(), "pa") {
		t.Errorf("exhaustion: %v", es)
	}
}

func TestVMPlacementAndAddresses(t *testing.T) {
	st := state(t, depts+
		doc("Segment", "s1", "{department: a, ipv4: 198.18.1.0/29, gateway: 198.18.1.2}")+
		doc("Host", "h1", "{uplink: eth0, address: 198.18.0.1, labels: {rack: r1}}")+
		doc("Host", "h2", "{uplink: eth0, address: 198.18.0.2, labels: {rack: r2}}")+
		doc("VM", "v1", "{department: a, vcpus: 1, memoryMiB: 64, networks: [{segment: s1}], hostSelector: {rack: r2}}")+
		doc("VM", "v2", "{department: a, vcpus: 1, memoryMiB: 64, networks: [{segment: s1, ipv4: 198.18.1.3}]}")+
		doc("VM", "v3", "{department: a, vcpus: 1, memoryMiB: 64, networks: [{segment: s1}]}"))
	if es := Allocate(st, DefaultConfig()); len(es) > 0 {
		t.Fatal(es)
	}
	v1, v2, v3 := st.Get(config.KindVM, "v1").Status, st.Get(config.KindVM, "v2").Status, st.Get(config.KindVM, "v3").Status
	if v1.Host != "h2" || v1.Networks[0].IPv4 != "198.18.1.1" {
		t.Errorf("v1 %+v", v1)
	}
	// .2 is the gateway and .3 is v2's static address.
	if v2.Networks[0].IPv4 != "198.18.1.3" || v3.Networks[0].IPv4 != "198.18.1.4" || v3.Host != "h1" {
		t.Errorf("v2 %+v v3 %+v", v2, v3)
	}
	if v1.Networks[0].MAC == v3.Networks[0].MAC || !strings.HasPrefix(v1.Networks[0].MAC, "02:") {
		t.Errorf("MACs %s %s", v1.Networks[0].MAC, v3.Networks[0].MAC)
	}
}

// TestPlacement: VMs go only where their vCPUs, memory and disk fit (capacity × overcommit);
// pending VMs are placed in name order on the matching host with the fewest VMs, ties to the
// lowest name; what fits nowhere stays pending with a reason naming the VM, the resource, the
// counts and the selector; a placed VM is never moved because capacity shrank, only reported.
func TestPlacement(t *testing.T) {
	base := doc("Segment", "s1", "{department: a, ipv4: 198.18.1.0/24}") +
		doc("Volume", "d20", "{department: a, sizeGiB: 20}") +
		doc("Volume", "d5", "{department: a, sizeGiB: 5}")
	host := func(name, labels, capacity string) string {
		return doc("Host", name, "{uplink: eth0, address: 198.18.0."+name[1:]+", labels: {"+labels+"}, capacity: "+capacity+"}")
	}
	two := host("h1", "rack: r1", "{vcpus: 4, memoryMiB: 4096, diskGiB: 10}") +
		host("h2", "rack: r2", "{vcpus: 4, memoryMiB: 2048, diskGiB: 10}")
	vm := func(name string, vcpus int, extra string) string {
		return doc("VM", name, fmt.Sprintf("{department: a, vcpus: %d, memoryMiB: 1024, networks: [{segment: s1}]%s}", vcpus, extra))
	}
	for _, tc := range []struct {
		name    string
		objs    string
		placed  map[string]string // VMs already on a host: stored (not in the input) unless "+NAME" is listed too
		want    map[string]string // VM -> host ("" = pending)
		reasons map[string]string // VM -> exact reason
		wantErr string            // "" = none
	}{
		{"fits", two + vm("v1", 2, ""), nil,
			map[string]string{"v1": "h1"}, map[string]string{"v1": ""}, ""},
		{"too many vCPUs for any host", two + vm("huge", 16, ""), nil,
			map[string]string{"huge": ""},
			map[string]string{"huge": `no host with 16 free vCPUs for VM "huge" among 2 hosts (h1: 4 vCPUs free; h2: 4 vCPUs free)`}, ""},
		{"too much memory for the hosts the selector picks", two + doc("VM", "m", "{department: a, vcpus: 1, memoryMiB: 3072, hostSelector: {rack: r2}, networks: [{segment: s1}]}"), nil,
			map[string]string{"m": ""},
			map[string]string{"m": `no host with 3072 MiB free memory for VM "m" among 1 host matching rack=r2 (h2: 2048 MiB memory free)`}, ""},
		{"too much disk: volumes plus root overlay", two + vm("d", 1, ", volumes: [d5, d5b]") + doc("Volume", "d5b", "{department: a, sizeGiB: 5}"), nil,
			map[string]string{"d": ""},
			map[string]string{"d": `no host with 10304 MiB free disk for VM "d" among 2 hosts (h1: 10240 MiB disk free; h2: 10240 MiB disk free)`}, ""},
		{"selector matches no host", two + vm("x", 1, ", hostSelector: {rack: r9, zone: z1}"), nil,
			map[string]string{"x": ""},
			map[string]string{"x": `no host for VM "x": none of 2 hosts matches hostSelector rack=r9,zone=z1`}, ""},
		{"no hosts at all", vm("x", 1, ""), nil,
			map[string]string{"x": ""}, map[string]string{"x": `no host for VM "x": no Host objects exist`}, ""},
		{"capacity exhausted by earlier VMs", two + vm("v1", 2, "") + vm("v2", 2, "") + vm("v3", 2, "") + vm("v4", 2, "") + vm("v5", 2, ""), nil,
			map[string]string{"v1": "h1", "v2": "h2", "v3": "h1", "v4": "h2", "v5": ""},
			map[string]string{"v5": `no host with 2 free vCPUs and 1024 MiB free memory for VM "v5" among 2 hosts (h1: 0 vCPUs free; h2: 0 vCPUs free, 0 MiB memory free)`}, ""},
		{"several resources short, each host its own", two + doc("VM", "w", "{department: a, vcpus: 5, memoryMiB: 3000, networks: [{segment: s1}]}"), nil,
			map[string]string{"w": ""},
			map[string]string{"w": `no host with 5 free vCPUs and 3000 MiB free memory for VM "w" among 2 hosts (h1: 4 vCPUs free; h2: 4 vCPUs free, 2048 MiB memory free)`}, ""},
		{"vCPU overcommit 2: four 2-vCPU VMs on one 4-vCPU host", host("h1", "", "{vcpus: 4, memoryMiB: 8192, overcommit: {vcpus: 2}}") +
			vm("v1", 2, "") + vm("v2", 2, "") + vm("v3", 2, "") + vm("v4", 2, "") + vm("v5", 2, ""), nil,
			map[string]string{"v1": "h1", "v2": "h1", "v3": "h1", "v4": "h1", "v5": ""},
			map[string]string{"v4": "", "v5": `no host with 2 free vCPUs for VM "v5" among 1 host (h1: 0 vCPUs free)`}, ""},
		{"memory overcommit 1.5 rounds down", host("h1", "", "{vcpus: 8, memoryMiB: 1001, overcommit: {memory: 1.5}}") +
			doc("VM", "a1", "{department: a, vcpus: 1, memoryMiB: 1486, networks: [{segment: s1}]}") +
			doc("VM", "a2", "{department: a, vcpus: 1, memoryMiB: 16, networks: [{segment: s1}]}"), nil,
			map[string]string{"a1": "h1", "a2": ""},
			map[string]string{"a2": `no host with 16 MiB free memory for VM "a2" among 1 host (h1: 15 MiB memory free)`}, ""},
		{"three VMs on two hosts: spread, ties to the lowest name", two + vm("a", 1, "") + vm("b", 1, "") + vm("c", 1, ""), nil,
			map[string]string{"a": "h1", "b": "h2", "c": "h1"}, nil, ""},
		{"three VMs on two hosts: the third skips the host without room", two + vm("a", 3, "") + vm("b", 1, "") + vm("c", 2, ""), nil,
			map[string]string{"a": "h1", "b": "h2", "c": "h2"}, nil, ""},
		{"three VMs on two hosts: a stored VM counts", two + vm("a", 1, "") + vm("b", 1, "") + vm("old", 1, ""), map[string]string{"old": "h1"},
			map[string]string{"old": "h1", "a": "h2", "b": "h1"}, nil, ""},
		{"placed VMs stay when their host's capacity shrinks", host("h1", "", "{vcpus: 2, memoryMiB: 4096}") + host("h2", "", "{vcpus: 8, memoryMiB: 4096}") +
			vm("p1", 2, "") + vm("p2", 2, ""), map[string]string{"p1": "h1", "p2": "h1"},
			map[string]string{"p1": "h1", "p2": "h1"},
			map[string]string{"p1": "host h1 over capacity: its VMs take 4 vCPUs of 2 (capacity × overcommit); kept there, not moved",
				"p2": "host h1 over capacity: its VMs take 4 vCPUs of 2 (capacity × overcommit); kept there, not moved"}, ""},
		{"a VM this input pins beyond capacity is refused", two + vm("v1", 2, ", host: h2") + vm("v2", 2, ", host: h2") + vm("v3", 2, ", host: h2"), nil,
			nil, nil, `VM "v3": spec.host "h2": host capacity exceeded: host h2 over capacity: its VMs take 6 vCPUs of 4`},
		{"a re-applied VM pinned to a host that shrank stays, reported", host("h1", "", "{vcpus: 2, memoryMiB: 4096}") +
			vm("p1", 2, ", host: h1") + vm("p2", 2, ", host: h1"), map[string]string{"p1": "h1", "p2": "h1", "+p1": "", "+p2": ""},
			map[string]string{"p1": "h1", "p2": "h1"},
			map[string]string{"p2": "host h1 over capacity: its VMs take 4 vCPUs of 2 (capacity × overcommit); kept there, not moved"}, ""},
		{"a VM this input newly pins to a host already full is refused", host("h1", "", "{vcpus: 2, memoryMiB: 4096}") +
			vm("p1", 2, ", host: h1") + vm("p2", 2, ", host: h1"), map[string]string{"p1": "h1"},
			nil, nil, `VM "p2": spec.host "h1": host capacity exceeded`},
		{"hosts without capacity take anything", doc("Host", "h1", "{uplink: eth0, address: 198.18.0.1}") + vm("big", 512, ", volumes: [d20]"), nil,
			map[string]string{"big": "h1"}, map[string]string{"big": ""}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run := func() *config.State {
				st := state(t, depts+base+tc.objs)
				for name, h := range tc.placed {
					if o := st.Get(config.KindVM, name); o != nil {
						o.Status.Host = h
						if _, in := tc.placed["+"+name]; !in {
							o.Source = nil
						}
					}
				}
				es := Allocate(st, DefaultConfig())
				if tc.wantErr != "" {
					if err := es.Err(); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
					}
					return nil
				}
				if len(es) > 0 {
					t.Fatal(es)
				}
				return st
			}
			st := run()
			if st == nil {
				return
			}
			for name, h := range tc.want {
				if got := st.Get(config.KindVM, name).Status.Host; got != h {
					t.Errorf("VM %s on %q, want %q", name, got, h)
				}
			}
			for name, r := range tc.reasons {
				if got := st.Get(config.KindVM, name).Status.Reason; got != r {
					t.Errorf("VM %s reason\n got %q\nwant %q", name, got, r)
				}
			}
			// Deterministic: a fresh run gives the same statuses; a second pass keeps them.
			again := run()
			for _, o := range st.List(config.KindVM) {
				if g := again.Get(config.KindVM, o.Metadata.Name).Status; !reflect.DeepEqual(g, o.Status) {
					t.Errorf("VM %s: second run %+v, first %+v", o.Metadata.Name, g, o.Status)
				}
			}
			before := map[string]config.Status{}
			for _, o := range st.List(config.KindVM) {
				before[o.Metadata.Name] = o.Status
			}
			if es := Allocate(st, DefaultConfig()); len(es) > 0 {
				t.Fatal(es)
			}
			for _, o := range st.List(config.KindVM) {
				if !reflect.DeepEqual(before[o.Metadata.Name], o.Status) {
					t.Errorf("VM %s: reallocation changed %+v to %+v", o.Metadata.Name, before[o.Metadata.Name], o.Status)
				}
			}
		})
	}
}

// TestReservedAddresses: the addresses of a prefix no VIP or guest gets, per family.
func TestReservedAddresses(t *testing.T) {
	for _, c := range []struct {
		prefix, addr string
		want         bool
	}{
		{"198.19.0.0/24", "198.19.0.0", true},   // IPv4 network
		{"198.19.0.0/24", "198.19.0.255", true}, // IPv4 broadcast
		{"198.19.0.0/24", "198.19.0.1", false},
		{"198.19.0.0/31", "198.19.0.0", false}, // RFC 3021 point-to-point
		{"198.19.0.7/32", "198.19.0.7", false},
		{"2001:db8:ffff::/120", "2001:db8:ffff::", true}, // Subnet-Router anycast (RFC 4291)
		{"2001:db8:ffff::/120", "2001:db8:ffff::1", false},
		{"2001:db8:ffff::/120", "2001:db8:ffff::ff", false}, // IPv6 has no broadcast
		{"2001:db8::/64", "2001:db8::", true},
		{"2001:db8::/64", "2001:db8::fdff:ffff:ffff:ff80", true}, // RFC 2526 subnet anycast
		{"2001:db8::/64", "2001:db8::fdff:ffff:ffff:ffff", true},
		{"2001:db8::/64", "2001:db8::fdff:ffff:ffff:ff7f", false},
		{"2001:db8::/127", "2001:db8::", false}, // RFC 6164 point-to-point
		{"2001:db8::5/128", "2001:db8::5", false},
	} {
		if got := Reserved(netip.MustParsePrefix(c.prefix), netip.MustParseAddr(c.addr)); got != c.want {
			t.Errorf("Reserved(%s, %s) = %v, want %v", c.prefix, c.addr, got, c.want)
		}
	}
}

// TestVIPFamilyFromThePool: a service naming a single-family pool gets a VIP of that family
// without ipFamily; a VIP stored as a pool's Subnet-Router anycast address is replaced; an
// explicit reserved VIP is refused with the pool named.
func TestVIPFamilyFromThePool(t *testing.T) {
	st := state(t, depts+
		doc("AddressPool", "v6only", "{cidrs: [\"2001:db8:ffff::/120\"], departments: [a]}")+
		doc("AddressPool", "v4only", "{cidrs: [198.19.3.0/24], departments: [a]}")+
		doc("AddressPool", "dual", "{cidrs: [198.19.4.0/24, \"2001:db8:4::/120\"], departments: [a]}")+
		doc("Service", "six", "{department: a, pool: v6only, ports: [{port: 80}]}")+
		doc("Service", "four", "{department: a, pool: v4only, ports: [{port: 80}]}")+
		doc("Service", "both", "{department: a, pool: dual, ports: [{port: 80}]}")+
		doc("Service", "old", "{department: a, pool: v6only, ports: [{port: 443}]}"))
	st.Get(config.KindService, "old").Status.VIP = "2001:db8:ffff::" // allocated by an older controller
	if es := Allocate(st, DefaultConfig()); len(es) > 0 {
		t.Fatal(es)
	}
	want := map[string]string{"old": "2001:db8:ffff::1", "six": "2001:db8:ffff::2", "four": "198.19.3.1", "both": "198.19.4.1"} // allocated in name order
	for name, vip := range want {
		if got := st.Get(config.KindService, name).Status.VIP; got != vip {
			t.Errorf("service %s: VIP %q, want %q", name, got, vip)
		}
	}
	for _, c := range []struct{ pool, vip string }{{"v6only", "2001:db8:ffff::"}, {"v4only", "198.19.3.255"}, {"v4only", "198.19.3.0"}} {
		st := state(t, depts+
			doc("AddressPool", c.pool, "{cidrs: [\"2001:db8:ffff::/120\", 198.19.3.0/24], departments: [a]}")+
			doc("Service", "x", "{department: a, vip: \""+c.vip+"\", ports: [{port: 80}]}"))
		es := Allocate(st, DefaultConfig())
		if len(es) != 1 || !strings.Contains(es.Error(), c.vip) || !strings.Contains(es.Error(), "reserved address of pool") {
			t.Errorf("explicit VIP %s: errors %v, want one naming it as reserved", c.vip, es)
		}
	}
}

// TestVIPsPerPrefixLength: the VIPs a pool of one prefix hands out, in order, until it is
// exhausted: never an IPv4 network or broadcast address below /31, never an IPv6 pool's
// Subnet-Router anycast address below /127 (the issue 17 bug: 2001:db8:ffff:: was the first
// IPv6 VIP) nor its RFC 2526 anycast IDs in a /64; /31, /32, /127 and /128 use every address.
// The service names no ipFamily: the single-family pool it names decides.
func TestVIPsPerPrefixLength(t *testing.T) {
	for _, c := range []struct {
		cidr string
		want []string // VIPs of services s0, s1, ... in order; one more service finds none
	}{
		{"2001:db8:ffff::/64", []string{"2001:db8:ffff::1", "2001:db8:ffff::2", "2001:db8:ffff::3"}},
		{"2001:db8:ffff::/126", []string{"2001:db8:ffff::1", "2001:db8:ffff::2", "2001:db8:ffff::3"}},
		{"2001:db8:ffff::/120", []string{"2001:db8:ffff::1", "2001:db8:ffff::2"}},
		{"2001:db8:ffff::/127", []string{"2001:db8:ffff::", "2001:db8:ffff::1"}},
		{"2001:db8:ffff::7/128", []string{"2001:db8:ffff::7"}},
		{"198.19.3.0/24", []string{"198.19.3.1", "198.19.3.2"}},
		{"198.19.3.0/30", []string{"198.19.3.1", "198.19.3.2"}},
		{"198.19.3.0/31", []string{"198.19.3.0", "198.19.3.1"}},
		{"198.19.3.7/32", []string{"198.19.3.7"}},
	} {
		t.Run(c.cidr, func(t *testing.T) {
			y := depts + doc("AddressPool", "p", "{cidrs: [\""+c.cidr+"\"], departments: [a]}")
			// Exhaustion is checked where the prefix holds few addresses.
			exhaust := !strings.HasSuffix(c.cidr, "/64") && !strings.HasSuffix(c.cidr, "/120") && !strings.HasSuffix(c.cidr, "/24")
			n := len(c.want)
			if exhaust {
				n++
			}
			for i := range n {
				y += doc("Service", "s"+string(rune('0'+i)), "{department: a, pool: p, ports: [{port: 80}]}")
			}
			st := state(t, y)
			es := Allocate(st, DefaultConfig())
			for i, w := range c.want {
				if got := st.Get(config.KindService, "s"+string(rune('0'+i))).Status.VIP; got != w {
					t.Errorf("service s%d: VIP %q, want %s", i, got, w)
				}
			}
			if exhaust {
				last := "s" + string(rune('0'+len(c.want)))
				if len(es) != 1 || !strings.Contains(es.Error(), last) || !strings.Contains(es.Error(), "no free") {
					t.Errorf("pool exhausted: errors %v, want one for %s", es, last)
				}
			} else if len(es) > 0 {
				t.Fatal(es)
			}
		})
	}
}

// TestVIPFamilyAgainstThePool: a service whose ipFamily its named pool cannot give is told so,
// naming the pool and what to change, for each family and a dual-stack pool that has both.
func TestVIPFamilyAgainstThePool(t *testing.T) {
	for _, c := range []struct {
		cidrs, family, wantVIP, wantErr string
	}{
		{`["2001:db8:ffff::/120"]`, "ipv4", "", `pool "p" has no IPv4 prefix (spec.ipFamily is ipv4); leave ipFamily out`},
		{`[198.19.3.0/24]`, "ipv6", "", `pool "p" has no IPv6 prefix (spec.ipFamily is ipv6); leave ipFamily out`},
		{`[198.19.3.0/24, "2001:db8:ffff::/120"]`, "ipv6", "2001:db8:ffff::1", ""},
	} {
		st := state(t, depts+doc("AddressPool", "p", "{cidrs: "+c.cidrs+", departments: [a]}")+
			doc("Service", "s", "{department: a, pool: p, ipFamily: "+c.family+", ports: [{port: 80}]}"))
		es := Allocate(st, DefaultConfig())
		if got := st.Get(config.KindService, "s").Status.VIP; got != c.wantVIP {
			t.Errorf("pool %s, ipFamily %s: VIP %q, want %q", c.cidrs, c.family, got, c.wantVIP)
		}
		if (c.wantErr == "") != (len(es) == 0) || (c.wantErr != "" && !strings.Contains(es.Error(), c.wantErr)) {
			t.Errorf("pool %s, ipFamily %s: errors %v, want %q", c.cidrs, c.family, es, c.wantErr)
		}
	}
}

// A service naming no pool draws from the public pools that serve its department before the
// internal ones (whatever their names), and never from an internal one in mode nat (internal
// VIPs are dsr only): rows of pools, the service's mode, and the VIP or error wanted.
func TestNoPoolServicesPreferPublicPools(t *testing.T) {
	internal := doc("AddressPool", "aaa-int", "{cidrs: [198.19.2.0/30], departments: [\"*\"], scope: internal}")
	public := doc("AddressPool", "zzz-pub", "{cidrs: [198.19.3.0/30], departments: [a]}")
	for _, tc := range []struct {
		name, pools, mode, want, wantErr string
	}{
		{"public pool named after an internal one", internal + public, "", "198.19.3.1", ""},
		{"public pool, mode nat", internal + public, "nat", "198.19.3.1", ""},
		{"only an internal pool, no mode (dsr)", internal, "", "198.19.2.1", ""},
		{"only an internal pool, mode dsr", internal, "dsr", "198.19.2.1", ""},
		{"only an internal pool, mode nat", internal, "nat", "", "no free IPv4 VIP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mode := ""
			if tc.mode != "" {
				mode = ", mode: " + tc.mode
			}
			st := state(t, depts+tc.pools+doc("Service", "s", "{department: a, ports: [{port: 80}]"+mode+"}"))
			es := Allocate(st, DefaultConfig())
			if tc.wantErr != "" {
				if len(es) == 0 || !strings.Contains(es.Err().Error(), tc.wantErr) {
					t.Fatalf("errors %v, want %q", es, tc.wantErr)
				}
				return
			}
			if len(es) > 0 {
				t.Fatal(es)
			}
			if got := st.Get(config.KindService, "s").Status.VIP; got != tc.want {
				t.Fatalf("VIP %s, want %s", got, tc.want)
			}
		})
	}
}
