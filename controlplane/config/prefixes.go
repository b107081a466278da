package config

import (
	"cmp"
	"net/netip"
	"slices"
)

// overlapping finds overlapping prefixes in O(n log n): two CIDR prefixes overlap exactly when
// one contains the other, so after sorting by first address (shorter prefix first on a tie) a
// prefix overlaps an earlier one if and only if it starts at or before the furthest last
// address seen so far. Every prefix contained in another is reported once, as a pair
// [later, earlier] of indexes into ps by input order. Invalid prefixes are ignored.
func overlapping(ps []netip.Prefix) [][2]int {
	idx := make([]int, 0, len(ps))
	for i, p := range ps {
		if p.IsValid() {
			idx = append(idx, i)
		}
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		pa, pb := ps[a].Masked(), ps[b].Masked()
		if c := pa.Addr().Compare(pb.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(pa.Bits(), pb.Bits())
	})
	var out [][2]int
	cover := -1 // the prefix reaching furthest so far
	for _, i := range idx {
		p := ps[i].Masked()
		if cover >= 0 {
			c := ps[cover].Masked()
			if c.Addr().Is4() == p.Addr().Is4() && p.Addr().Compare(lastAddr(c)) <= 0 {
				out = append(out, [2]int{max(i, cover), min(i, cover)})
			}
			if c.Addr().Is4() != p.Addr().Is4() || lastAddr(p).Compare(lastAddr(c)) > 0 {
				cover = i
			}
		} else {
			cover = i
		}
	}
	slices.SortFunc(out, func(a, b [2]int) int {
		return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1]))
	})
	return out
}

// prefixIndex answers "which prefixes contain this address" in O(distinct prefix lengths)
// instead of a scan of every prefix.
type prefixIndex[T any] struct {
	byLen map[int]map[netip.Prefix][]indexed[T]
	n     int
}

type indexed[T any] struct {
	seq int
	v   T
}

func (x *prefixIndex[T]) add(p netip.Prefix, v T) {
	if !p.IsValid() {
		return
	}
	if x.byLen == nil {
		x.byLen = map[int]map[netip.Prefix][]indexed[T]{}
	}
	p = p.Masked()
	m := x.byLen[p.Bits()]
	if m == nil {
		m = map[netip.Prefix][]indexed[T]{}
		x.byLen[p.Bits()] = m
	}
	m[p] = append(m[p], indexed[T]{x.n, v})
	x.n++
}

// containing returns the values of every prefix that contains a, in the order they were added.
func (x *prefixIndex[T]) containing(a netip.Addr) []T {
	var hits []indexed[T]
	for bits, m := range x.byLen {
		if bits > a.BitLen() {
			continue
		}
		p, err := a.Prefix(bits)
		if err != nil {
			continue
		}
		hits = append(hits, m[p]...)
	}
	slices.SortFunc(hits, func(a, b indexed[T]) int { return cmp.Compare(a.seq, b.seq) })
	out := make([]T, len(hits))
	for i, h := range hits {
		out[i] = h.v
	}
	return out
}
