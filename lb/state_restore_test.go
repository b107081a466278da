package lb

import (
	"net/netip"
	"slices"
	"testing"
)

// TestRestoredVIPWithoutBackends: a restored VIP whose service now has no backends must not
// keep the restored table: its backends are deleted in the same plan (their ids freed for
// reuse), and the kept table would then name ids that are inactive, later another backend.
func TestRestoredVIPWithoutBackends(t *testing.T) {
	st, err := NewState(7, 4, 4)
	if err != nil {
		t.Fatal(err)
	}
	vip := VIP{Addr: netip.MustParseAddr("198.51.100.1"), Port: 80, Proto: TCP}
	x := Backend{Addr: netip.MustParseAddr("198.18.1.1"), Port: 80, Weight: 1}
	st.Restore([]RestoredVIP{{VIP: vip, ID: 0, Mode: DSR, Table: []uint32{1, 1, 1, 1, 1, 1, 1}}}, map[uint32]Backend{1: x})
	p, err := st.Plan([]Service{{Name: "web", VIP: vip, Mode: DSR}})
	if err != nil {
		t.Fatal(err)
	}
	st.Commit(p)
	if !slices.Equal(p.Diff.DeleteBackends, []uint32{1}) {
		t.Fatalf("deleted backends %v, want [1]", p.Diff.DeleteBackends)
	}
	if got := st.TableOf(vip).List(); slices.ContainsFunc(got, func(id uint32) bool { return id != NoBackend }) {
		t.Errorf("VIP without backends keeps table %v naming deleted backend 1", got)
	}
	// Another service's new backends take ids 2, 3 and then 1 again (ids wrap below 4).
	other := VIP{Addr: netip.MustParseAddr("198.51.100.2"), Port: 80, Proto: TCP}
	var bs []Backend
	for i := range 3 {
		bs = append(bs, Backend{Addr: netip.AddrFrom4([4]byte{198, 18, 2, byte(i + 1)}), Port: 80, Weight: 1})
	}
	p, err = st.Plan([]Service{{Name: "web", VIP: vip, Mode: DSR}, {Name: "other", VIP: other, Mode: DSR, Backends: bs}})
	if err != nil {
		t.Fatal(err)
	}
	st.Commit(p)
	for k, id := range st.BackendIDs() {
		if got := st.TableOf(vip).At(0); id == got {
			t.Errorf("VIP web (no backends) sends flows to backend id %d, now %s of service other", id, k)
		}
	}
}
