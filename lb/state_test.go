package lb

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func tsvc(name string, domain uint32, vip string, bes ...Backend) Service {
	return Service{Name: name, VIP: VIP{Domain: domain, Addr: netip.MustParseAddr(vip), Port: 80, Proto: TCP}, Backends: bes}
}

func tbe(addr string, w uint32) Backend { return Backend{Addr: netip.MustParseAddr(addr), Weight: w} }

func TestPlanIDsAndDiffs(t *testing.T) {
	s, err := NewState(251, 8, 16)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := tbe("198.18.0.10", 1), tbe("198.18.0.11", 1), tbe("198.18.0.12", 1)
	svcs := []Service{tsvc("web", 0, "203.0.113.10", a, b), tsvc("lands", 7, "198.19.0.10", a), tsvc("health", 8, "198.19.0.10", c)}
	p, err := s.Plan(svcs)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(p.Diff.UpsertBackends); got != 3 {
		t.Fatalf("first plan writes %d backends, want 3 (a shared by two services)", got)
	}
	if got := len(p.Diff.UpsertVIPs); got != 3 {
		t.Fatalf("first plan writes %d VIPs, want 3 (same address in two domains is two VIPs)", got)
	}
	for _, u := range p.Diff.UpsertVIPs {
		if !u.New || u.Table.Len() != 251 {
			t.Fatalf("VIP %s: new=%v table=%d slots", u.VIP, u.New, u.Table.Len())
		}
	}
	s.Commit(p)
	ids := s.VIPIDs()

	// The same services again: nothing to do.
	p, _ = s.Plan(svcs)
	if !p.Diff.Empty() {
		t.Fatalf("replanning the same services: %+v", p.Diff)
	}
	// Drain b in web: only web's table changes; ids stay.
	svcs[0] = tsvc("web", 0, "203.0.113.10", a, tbe("198.18.0.11", 0))
	p, _ = s.Plan(svcs)
	if len(p.Diff.UpsertVIPs) != 1 || p.Diff.UpsertVIPs[0].ID != ids[svcs[0].VIP] || p.Diff.UpsertVIPs[0].New {
		t.Fatalf("drain: %+v", p.Diff.UpsertVIPs)
	}
	if len(p.Diff.DeleteBackends)+len(p.Diff.UpsertBackends) != 0 {
		t.Fatalf("drain must keep the backend programmed (its flows stay): %+v", p.Diff)
	}
	for _, id := range p.Diff.UpsertVIPs[0].Table.List() {
		if id == s.BackendIDs()[b.Key()] {
			t.Fatal("drained backend still owns slots")
		}
	}
	s.Commit(p)
	// Remove the health service and backend c: one VIP and one backend deleted.
	p, _ = s.Plan(svcs[:2])
	if len(p.Diff.DeleteVIPs) != 1 || p.Diff.DeleteVIPs[0].VIP != svcs[2].VIP || len(p.Diff.DeleteBackends) != 1 {
		t.Fatalf("removal: %+v", p.Diff)
	}
	s.Commit(p)
	// A new backend never reuses c's id at once (stale flows must not find a stranger).
	p, _ = s.Plan(append(svcs[:2], tsvc("new", 0, "203.0.113.11", tbe("198.18.0.13", 1))))
	for _, u := range p.Diff.UpsertBackends {
		if u.ID <= 3 {
			t.Fatalf("new backend got recycled id %d", u.ID)
		}
	}
}

func TestPlanErrorsNameTheService(t *testing.T) {
	s, _ := NewState(251, 2, 16)
	for _, tc := range []struct {
		name string
		svcs []Service
		want string
	}{
		{"duplicate VIP", []Service{tsvc("a", 0, "203.0.113.1"), tsvc("b", 0, "203.0.113.1")}, `service "b": VIP 203.0.113.1:80/tcp@0 already used by service "a"`},
		{"too many VIPs", []Service{tsvc("a", 0, "203.0.113.1"), tsvc("b", 0, "203.0.113.2"), tsvc("c", 0, "203.0.113.3")}, "3 services exceed the dataplane's 2 VIPs"},
		{"duplicate backend", []Service{tsvc("a", 0, "203.0.113.1", tbe("198.18.0.1", 1), tbe("198.18.0.1", 2))}, `service "a": backend 198.18.0.1:0 listed twice`},
		{"nat family", []Service{{Name: "n", Mode: NAT, VIP: VIP{Addr: netip.MustParseAddr("203.0.113.1"), Port: 80, Proto: TCP}, Backends: []Backend{tbe("2001:db8::1", 1)}}}, `service "n": nat backend [2001:db8::1]:0: address family differs`},
		{"port 0", []Service{{Name: "z", VIP: VIP{Addr: netip.MustParseAddr("203.0.113.1"), Proto: TCP}}}, `service "z": VIP port 0`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Plan(tc.svcs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// After a restart the ids and tables come back from the dataplane; the next plan keeps ids
// and moves only what the change needs.
func TestRestoreKeepsIDsAndTables(t *testing.T) {
	s, _ := NewState(251, 8, 16)
	bes := []Backend{tbe("198.18.0.10", 1), tbe("198.18.0.11", 1), tbe("198.18.0.12", 1)}
	svc := tsvc("web", 0, "203.0.113.10", bes...)
	p, _ := s.Plan([]Service{svc})
	s.Commit(p)
	table := slices.Clone(s.TableOf(svc.VIP).List())
	backends := map[uint32]Backend{}
	for k, id := range s.BackendIDs() {
		for _, b := range bes {
			if b.Key() == k {
				backends[id] = Backend{Addr: b.Addr}
			}
		}
	}
	r, _ := NewState(251, 8, 16)
	r.Restore([]RestoredVIP{{VIP: svc.VIP, ID: s.VIPIDs()[svc.VIP], Table: table}}, backends)
	p, err := r.Plan([]Service{svc})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Diff.UpsertBackends) != 0 || len(p.Diff.UpsertVIPs) != 1 || p.Diff.UpsertVIPs[0].New {
		t.Fatalf("restored plan: %+v", p.Diff)
	}
	moved := 0
	for i, id := range p.Diff.UpsertVIPs[0].Table.List() {
		if id != table[i] {
			moved++
		}
	}
	if moved != 0 {
		t.Fatalf("restored plan of the same set moved %d slots", moved)
	}
}

// TestSlots: a table of backend IDs, given directly or as shared indices with an ID per index,
// reads the same slot by slot, as a list, and in comparisons.
func TestSlots(t *testing.T) {
	index := []uint32{1, 2, 0, 2, 1}
	shared1 := []uint32{1, 1}
	for _, tc := range []struct {
		name  string
		a, b  Slots
		equal bool
		list  []uint32 // a.List()
	}{
		{"IDs directly", Slots{Index: []uint32{7, 9, 0, 9, 7}}, Slots{Index: []uint32{7, 9, 0, 9, 7}}, true, []uint32{7, 9, 0, 9, 7}},
		{"indices with IDs", Slots{Index: index, IDs: []uint32{0, 7, 9}}, Slots{Index: []uint32{7, 9, 0, 9, 7}}, true, []uint32{7, 9, 0, 9, 7}},
		{"same indices, other IDs", Slots{Index: index, IDs: []uint32{0, 7, 9}}, Slots{Index: index, IDs: []uint32{0, 7, 8}}, false, []uint32{7, 9, 0, 9, 7}},
		{"other indices, same IDs", Slots{Index: index, IDs: []uint32{0, 7, 9}}, Slots{Index: []uint32{1, 1, 0, 2, 1}, IDs: []uint32{0, 7, 9}}, false, []uint32{7, 9, 0, 9, 7}},
		{"two indices naming one ID", Slots{Index: []uint32{1, 2}, IDs: []uint32{0, 5, 5}}, Slots{Index: []uint32{5, 5}}, true, []uint32{5, 5}},
		{"lengths differ", Slots{Index: []uint32{1}}, Slots{Index: []uint32{1, 1}}, false, []uint32{1}},
		{"one slot array, equal IDs", Slots{Index: index, IDs: []uint32{0, 7, 9}}, Slots{Index: index, IDs: []uint32{0, 7, 9}}, true, []uint32{7, 9, 0, 9, 7}},
		{"one slot array, IDs differ where no slot points", Slots{Index: shared1, IDs: []uint32{0, 5, 6}}, Slots{Index: shared1, IDs: []uint32{0, 5, 8}}, true, []uint32{5, 5}},
		{"empty", Slots{}, Slots{}, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.a.Equal(tc.b); got != tc.equal || tc.b.Equal(tc.a) != tc.equal {
				t.Errorf("Equal %v, want %v both ways", got, tc.equal)
			}
			if got := tc.a.List(); !slices.Equal(got, tc.list) || tc.a.Len() != len(tc.list) {
				t.Errorf("List %v (Len %d), want %v", got, tc.a.Len(), tc.list)
			}
			for i, want := range tc.list {
				if got := tc.a.At(i); got != want {
					t.Errorf("At(%d) = %d, want %d", i, got, want)
				}
			}
		})
	}
}
