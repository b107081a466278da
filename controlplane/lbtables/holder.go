package lbtables

import (
	"fmt"
	"maps"
	"slices"

	"github.com/govcloud/govcloud/lb"
)

// Holder is a host's copy of the shared tables, kept up to date by fetches. Not safe for
// concurrent use.
type Holder struct {
	// Tables are the verified tables by name.
	Tables map[string]*lb.SharedTable
	// Revision is the store revision of the last answer applied; Current its summaries.
	Revision int64
	Current  map[string]Summary

	slots lb.SlotInterner // the tables' slot arrays, each distinct one held once
}

// NewHolder returns an empty holder.
func NewHolder() *Holder {
	return &Holder{Tables: map[string]*lb.SharedTable{}, Current: map[string]Summary{}}
}

// Request asks for what the holder misses, once the controller covers revision minRevision.
func (h *Holder) Request(minRevision int64) FetchRequest {
	req := FetchRequest{MinRevision: minRevision, Have: make(map[string]uint64, len(h.Tables))}
	for n, t := range h.Tables {
		req.Have[n] = t.Generation
	}
	return req
}

// Apply applies an answer: each delta is applied to the held generation and its hash checked;
// a table that fails is dropped (the next request asks for it whole) and reported. Tables no
// longer in the answer's Current are dropped. It returns the errors, one per failed table.
func (h *Holder) Apply(resp *FetchResponse) []error {
	var errs []error
	for _, n := range slices.Sorted(maps.Keys(resp.Tables)) {
		d := resp.Tables[n]
		var have *lb.SharedTable
		if !d.Full {
			have = h.Tables[n]
		}
		t, err := d.ApplyInterned(have, &h.slots)
		if err != nil {
			delete(h.Tables, n)
			errs = append(errs, fmt.Errorf("maglev table %q: %w", n, err))
			continue
		}
		if t.Generation != resp.Current[n].Generation {
			delete(h.Tables, n)
			errs = append(errs, fmt.Errorf("maglev table %q: got generation %d, the controller holds %d", n, t.Generation, resp.Current[n].Generation))
			continue
		}
		h.Tables[n] = t
	}
	for n := range h.Tables {
		if _, ok := resp.Current[n]; !ok {
			delete(h.Tables, n)
		}
	}
	h.Revision, h.Current = resp.Revision, resp.Current
	h.slots.Keep(func(yield func([]uint32) bool) {
		for _, t := range h.Tables {
			if !yield(t.Slots) {
				return
			}
		}
	})
	return errs
}

// Mismatch reports whether the held table name differs from the controller's last summary
// (missing, another generation or another hash).
func (h *Holder) Mismatch(name string) bool {
	t, cur := h.Tables[name], h.Current[name]
	return t == nil || SummaryOf(t) != cur
}
