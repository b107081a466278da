package reconcile

import (
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
