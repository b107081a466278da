package lb

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
)

// BenchmarkTable times Table at the default size: from scratch, and the incremental rebuilds the
// dataplane does when one backend is removed or added. The budget for replacing a
// 1000-backend table is 50 ms end to end; Table is meant to take well under 10 ms of it.
func BenchmarkTable(b *testing.B) {
	for _, n := range []int{100, 1000} {
		all := backendsN(n, equalWeight)
		fewer := slices.Delete(slices.Clone(all), n/2, n/2+1)
		full := mustTable(b, DefaultTableSize, nil, all)
		short := mustTable(b, DefaultTableSize, nil, fewer)
		for _, bc := range []struct {
			name string
			prev []uint32
			bs   []Weighted
		}{
			{"scratch", nil, all},
			{"remove1", full, fewer},
			{"add1", short, all},
		} {
			b.Run(fmt.Sprintf("%s/backends=%d", bc.name, n), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := Table(DefaultTableSize, bc.prev, bc.bs); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkDeltaApply is what a host does per shared table it fetches whole: inflate and
// check a full 65537-slot table of 4 backends, hash included.
func BenchmarkDeltaApply(b *testing.B) {
	var bs []Backend
	for i := range 4 {
		bs = append(bs, Backend{Addr: netip.AddrFrom4([4]byte{198, 18, 1, byte(1 + i)}), Port: 80, Weight: 1})
	}
	t, _, err := NextShared(DefaultTableSize, nil, bs, 1)
	if err != nil {
		b.Fatal(err)
	}
	d := t.DeltaSince(0)
	for b.Loop() {
		if _, err := d.Apply(nil); err != nil {
			b.Fatal(err)
		}
	}
}
