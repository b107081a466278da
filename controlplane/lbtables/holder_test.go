package lbtables

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/govcloud/govcloud/lb"
)

// TestHolderInternedSlots: a holder keeps tables with equal slots on one array; a delta to one
// of them, a dropped table (Keep) and a failed delta change no other table's slots; a table
// fetched later with the same slots reuses the array still held. Every held table equals the
// controller's at every step.
func TestHolderInternedSlots(t *testing.T) {
	const size = 251
	bk := func(a string) lb.Backend { return lb.Backend{Addr: netip.MustParseAddr(a), Port: 80, Weight: 1} }
	x, y, w, v := bk("198.18.1.1"), bk("198.18.1.2"), bk("198.18.1.3"), bk("198.18.1.4")
	build := func(prev *lb.SharedTable, gen uint64, bs ...lb.Backend) *lb.SharedTable {
		t.Helper()
		n, _, err := lb.NextShared(size, prev, bs, gen)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	ctl := map[string]*lb.SharedTable{"a": build(nil, 1, x, y, w), "b": build(nil, 1, x, y, w), "c": build(nil, 1, y)}
	h := NewHolder()
	fetch := func(rev int64, deltas map[string]lb.Delta) []error {
		cur := map[string]Summary{}
		for n, tb := range ctl {
			cur[n] = SummaryOf(tb)
		}
		return h.Apply(&FetchResponse{Revision: rev, Size: size, Tables: deltas, Current: cur})
	}
	check := func(step string) {
		t.Helper()
		if len(h.Tables) != len(ctl) {
			t.Errorf("%s: holds %d tables, want %d", step, len(h.Tables), len(ctl))
		}
		for n, want := range ctl {
			got := h.Tables[n]
			if got == nil || !slices.Equal(got.Slots, want.Slots) || got.Sum() != want.Sum() {
				t.Errorf("%s: table %q differs from the controller's", step, n)
			}
		}
	}
	if errs := fetch(1, map[string]lb.Delta{"a": ctl["a"].DeltaSince(0), "b": ctl["b"].DeltaSince(0), "c": ctl["c"].DeltaSince(0)}); errs != nil {
		t.Fatal(errs)
	}
	check("first fetch")
	if &h.Tables["a"].Slots[0] != &h.Tables["b"].Slots[0] {
		t.Errorf("a and b have equal slots on two arrays")
	}
	bSlots := slices.Clone(h.Tables["b"].Slots)

	ctl["a"] = build(ctl["a"], 2, x, y, w, v) // a delta to a table whose array b shares
	da := ctl["a"].DeltaSince(1)
	if da.Full {
		t.Fatalf("a's change is sent whole, want a delta")
	}
	if errs := fetch(2, map[string]lb.Delta{"a": da}); errs != nil {
		t.Fatal(errs)
	}
	check("delta to a")
	if !slices.Equal(h.Tables["b"].Slots, bSlots) {
		t.Fatalf("a's delta changed b's slots")
	}

	bad := build(ctl["c"], 3, y, w).DeltaSince(1) // c fails its hash: dropped, others kept
	bad.Sum = make([]byte, 32)
	if errs := fetch(3, map[string]lb.Delta{"c": bad}); len(errs) != 1 {
		t.Fatalf("errors %v, want one for c", errs)
	}
	delete(ctl, "c")
	check("c failed")

	delete(ctl, "b") // b dropped: a's array stays; b's goes from the interner
	if errs := fetch(4, nil); errs != nil {
		t.Fatal(errs)
	}
	check("b dropped")
	if !slices.Equal(bSlots, build(nil, 1, x, y, w).Slots) {
		t.Fatalf("b's old slots were modified after b was dropped")
	}

	ctl["d"] = build(nil, 5, x, y, w, v) // the same backends as a, built afresh
	if errs := fetch(5, map[string]lb.Delta{"d": ctl["d"].DeltaSince(0)}); errs != nil {
		t.Fatal(errs)
	}
	check("d fetched")
	if slices.Equal(h.Tables["d"].Slots, h.Tables["a"].Slots) && &h.Tables["d"].Slots[0] != &h.Tables["a"].Slots[0] {
		// a's slots come from a delta; equal slots, if any, must be one array
		t.Errorf("d and a have equal slots on two arrays")
	}
}
