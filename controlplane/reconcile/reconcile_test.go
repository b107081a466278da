package reconcile

import (
	"fmt"
	"net/netip"
	"os"
	"testing"

	"github.com/govcloud/govcloud/controlplane/alloc"
	"github.com/govcloud/govcloud/controlplane/config"
)

func TestExampleDesiredState(t *testing.T) {
	b, err := os.ReadFile("../../deploy/examples/departments.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := config.Parse("departments.yaml", b)
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
	if err := alloc.Allocate(st, alloc.DefaultConfig()).Err(); err != nil {
		t.Fatal(err)
	}
	if ForHost(st, "nosuch", 1) != nil {
		t.Error("desired state for an unknown host")
	}
	d := ForHost(st, "host1", 7)
	if d.Revision != 7 || d.BGP == nil || d.BGP.RouterID != netip.MustParseAddr("198.18.0.11") || d.BGP.ASN != 65001 || len(d.BGP.Peers) != 1 || !d.BGP.Peers[0].GracefulRestart {
		t.Errorf("bgp %+v", d.BGP)
	}
	if d.BGP.Peers[0].HoldTime != 9 || d.BGP.Peers[0].Keepalive != 3 {
		t.Errorf("peer timers %+v", d.BGP.Peers[0])
	}
	for _, s := range d.Services {
		if (s.Name == "lands-www") != (s.LocalPref != nil && *s.LocalPref == 200) {
			t.Errorf("service %s local-pref %v", s.Name, s.LocalPref)
		}
	}
	if len(d.Segments) != 2 || len(d.Departments) != 2 || len(d.Services) != 2 {
		t.Fatalf("segments %d departments %d services %d", len(d.Segments), len(d.Departments), len(d.Services))
	}
	table := map[string]int{}
	for _, dep := range d.Departments {
		table[dep.Name] = dep.TableID
	}
	for _, s := range d.Segments {
		if s.TableID != table[s.Department] || s.TableID == 0 || s.VLAN == 0 {
			t.Errorf("segment %+v", s)
		}
	}
	for _, s := range d.Services {
		if s.Scope != "public" || s.Mode != "nat" || len(s.Backends) != 2 || s.Ports[0].TargetPort != 80 || s.Ports[0].Protocol != "tcp" {
			t.Errorf("service %+v", s)
		}
		hosts := map[string]bool{}
		for _, be := range s.Backends {
			hosts[be.Host] = true
			if !be.Address.IsValid() || be.Segment == "" {
				t.Errorf("backend %+v of %s unresolved", be, s.Name)
			}
		}
		if !hosts["host1"] || !hosts["host2"] {
			t.Errorf("service %s backends not on both hosts: %+v", s.Name, s.Backends)
		}
		if s.Name == "health-www" && (s.VIP != netip.MustParseAddr("198.19.255.10") || s.Backends[0].Weight != 2 || s.HealthCheck.IntervalMs != 2000) {
			t.Errorf("health-www %+v", s)
		}
	}
	if len(d.VMs) != 2 {
		t.Fatalf("host1 VMs %+v", d.VMs)
	}
	for _, vm := range d.VMs {
		if len(vm.Interfaces) != 1 || !vm.Interfaces[0].Prefix4.IsValid() || vm.Interfaces[0].VLAN == 0 || !vm.Interfaces[0].Gateway4.IsValid() {
			t.Errorf("vm %+v", vm)
		}
	}
}

// TestInterfaceIPv6AndGateway6: a VM's interface on a dual-stack segment carries its IPv6
// address with the segment's length and the segment's gateway6 (given, or the first address),
// and one on an IPv4-only segment neither.
func TestInterfaceIPv6AndGateway6(t *testing.T) {
	y := "apiVersion: govcloud/v1\nkind: Department\nmetadata: {name: a}\nspec: {}\n"
	doc := func(kind, name, spec string) string {
		return "---\napiVersion: govcloud/v1\nkind: " + kind + "\nmetadata: {name: " + name + "}\nspec: " + spec + "\n"
	}
	y += doc("Host", "h1", "{uplink: eth0, address: 198.18.0.11}") +
		doc("Segment", "s64", `{department: a, ipv4: 198.18.60.0/24, ipv6: "2001:db8:60::/64"}`) +
		doc("Segment", "s120", `{department: a, ipv4: 198.18.61.0/24, ipv6: "2001:db8:61::/120", gateway6: "2001:db8:61::fe"}`) +
		doc("Segment", "s4", `{department: a, ipv4: 198.18.62.0/24}`) +
		doc("VM", "v", `{department: a, vcpus: 1, memoryMiB: 64, image: tiny, host: h1, networks: [{segment: s64}, {segment: s120}, {segment: s4}]}`)
	st := validState(t, y)
	if err := alloc.Allocate(st, alloc.DefaultConfig()).Err(); err != nil {
		t.Fatal(err)
	}
	d := ForHost(st, "h1", 1)
	if len(d.VMs) != 1 || len(d.VMs[0].Interfaces) != 3 {
		t.Fatalf("VMs %+v", d.VMs)
	}
	want := map[string][2]string{ // segment -> prefix6, gateway6
		"s64":  {"2001:db8:60::2/64", "2001:db8:60::1"},
		"s120": {"2001:db8:61::1/120", "2001:db8:61::fe"},
		"s4":   {"invalid Prefix", "invalid IP"},
	}
	for _, ifc := range d.VMs[0].Interfaces {
		if got := [2]string{ifc.Prefix6.String(), ifc.Gateway6.String()}; got != want[ifc.Segment] {
			t.Errorf("interface on %s: prefix6, gateway6 %v, want %v", ifc.Segment, got, want[ifc.Segment])
		}
	}
}

// Issue 23: a pending VM (no host matches its selector, or none has room) has addresses but
// runs nowhere: no host gets it as a VM, nor as a remote guest on another host ("" host).
func TestPendingVMIsNowhere(t *testing.T) {
	y := "apiVersion: govcloud/v1\nkind: Department\nmetadata: {name: a}\nspec: {}\n"
	doc := func(kind, name, spec string) string {
		return "---\napiVersion: govcloud/v1\nkind: " + kind + "\nmetadata: {name: " + name + "}\nspec: " + spec + "\n"
	}
	y += doc("Host", "h1", "{uplink: eth0, address: 198.18.0.11, capacity: {vcpus: 2}}") +
		doc("Host", "h2", "{uplink: eth0, address: 198.18.0.12, labels: {rack: r2}, capacity: {vcpus: 2}}") +
		doc("Segment", "s4", `{department: a, ipv4: 198.18.62.0/24}`) +
		doc("VM", "placed", `{department: a, vcpus: 1, memoryMiB: 64, networks: [{segment: s4}], host: h2}`) +
		doc("VM", "nomatch", `{department: a, vcpus: 1, memoryMiB: 64, networks: [{segment: s4}], hostSelector: {rack: r9}}`) +
		doc("VM", "toobig", `{department: a, vcpus: 3, memoryMiB: 64, networks: [{segment: s4}]}`) +
		doc("VM", "full", `{department: a, vcpus: 2, memoryMiB: 64, networks: [{segment: s4}], hostSelector: {rack: r2}}`)
	st := validState(t, y)
	if err := alloc.Allocate(st, alloc.DefaultConfig()).Err(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"nomatch", "toobig", "full"} {
		if o := st.Get(config.KindVM, name); o.Status.Host != "" || o.Status.Reason == "" || len(o.Status.Networks) != 1 {
			t.Fatalf("VM %s: status %+v, want pending with a reason and an address", name, o.Status)
		}
	}
	for _, h := range []string{"h1", "h2"} {
		d := ForHost(st, h, 1)
		for _, vm := range d.VMs {
			if vm.Name != "placed" {
				t.Errorf("%s runs pending VM %s", h, vm.Name)
			}
		}
		var remote []string
		for _, g := range d.RemoteGuests {
			remote = append(remote, g.VM+"@"+g.Host)
		}
		want := "[]"
		if h == "h1" {
			want = "[placed@h2]"
		}
		if got := fmt.Sprint(remote); got != want {
			t.Errorf("%s remote guests %s, want %s", h, got, want)
		}
	}
}

// validState parses y (YAML documents) into a state and validates it, failing the test on any
// error.
func validState(t *testing.T, y string) *config.State {
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

// Issue 23: a host gets the Image objects its VMs and volumes name (not the others, nor one for
// the built-in tiny), and each VM its SSH keys.
func TestImagesForHost(t *testing.T) {
	y := "apiVersion: govcloud/v1\nkind: Department\nmetadata: {name: a}\nspec: {}\n"
	doc := func(kind, name, spec string) string {
		return "---\napiVersion: govcloud/v1\nkind: " + kind + "\nmetadata: {name: " + name + "}\nspec: " + spec + "\n"
	}
	sha := "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl k"
	y += doc("Host", "h1", "{uplink: eth0, address: 198.18.0.11}") +
		doc("Host", "h2", "{uplink: eth0, address: 198.18.0.12}") +
		doc("Segment", "s4", `{department: a, ipv4: 198.18.62.0/24}`) +
		doc("Image", "deb", "{source: debian-12.qcow2, sha256: "+sha+", os: debian}") +
		doc("Image", "ubu", "{source: u.qcow2, sha256: "+sha+", os: ubuntu}") +
		doc("Image", "unused", "{source: x.qcow2, sha256: "+sha+", os: linux}") +
		doc("Volume", "vol", "{department: a, sizeGiB: 1, image: ubu}") +
		doc("VM", "d", `{department: a, vcpus: 1, memoryMiB: 64, image: deb, sshKeys: ["`+key+`"], volumes: [vol], host: h1, networks: [{segment: s4}]}`) +
		doc("VM", "t", `{department: a, vcpus: 1, memoryMiB: 64, image: tiny, host: h2, networks: [{segment: s4}]}`)
	st := validState(t, y)
	if err := alloc.Allocate(st, alloc.DefaultConfig()).Err(); err != nil {
		t.Fatal(err)
	}
	d1, d2 := ForHost(st, "h1", 1), ForHost(st, "h2", 1)
	if got := fmt.Sprint(d1.Images); got != "[{deb debian-12.qcow2 "+sha+" debian} {ubu u.qcow2 "+sha+" ubuntu}]" {
		t.Errorf("h1 images %s", got)
	}
	if len(d2.Images) != 0 {
		t.Errorf("h2 (tiny only) images %+v", d2.Images)
	}
	if len(d1.VMs) != 1 || fmt.Sprint(d1.VMs[0].SSHKeys) != "["+key+"]" {
		t.Errorf("h1 VMs %+v", d1.VMs)
	}
}
