package lb

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// backendsN returns n backends with IDs 1..n, test-net keys and weight(i) (i from 0).
func backendsN(n int, weight func(i int) uint32) []Weighted {
	bs := make([]Weighted, n)
	for i := range bs {
		bs[i] = Weighted{ID: uint32(i + 1), Key: backendKey(i), Weight: weight(i)}
	}
	return bs
}

func backendKey(i int) string { return fmt.Sprintf("198.18.%d.%d:8080", i/250, i%250+1) }

func equalWeight(int) uint32 { return 1 }

// slotCounts counts the slots of each ID (NoBackend included).
func slotCounts(table []uint32) map[uint32]int {
	c := map[uint32]int{}
	for _, id := range table {
		c[id]++
	}
	return c
}

func mustTable(t testing.TB, size uint32, prev []uint32, bs []Weighted) []uint32 {
	t.Helper()
	tab, err := Table(size, prev, bs)
	if err != nil {
		t.Fatalf("Table(%d, %d backends): %v", size, len(bs), err)
	}
	if len(tab) != int(size) {
		t.Fatalf("Table(%d): got %d slots", size, len(tab))
	}
	return tab
}

// moved lists the slots whose owner differs between a and b.
func moved(a, b []uint32) []int {
	var m []int
	for s := range a {
		if a[s] != b[s] {
			m = append(m, s)
		}
	}
	return m
}

func TestIsPrime(t *testing.T) {
	for _, tc := range []struct {
		n    uint32
		want bool
	}{
		{0, false}, {1, false}, {2, true}, {3, true}, {4, false}, {9, false}, {25, false},
		{251, true}, {65536, false}, {65537, true}, {65539, true}, {65535, false},
		{1 << 31, false}, {2147483647, true}, {4294967291, true}, {4294967295, false},
		{65521 * 65519, false}, // product of the two largest primes below 2^16
	} {
		if got := IsPrime(tc.n); got != tc.want {
			t.Errorf("IsPrime(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}

func TestTableEqualWeightsWithinOneSlot(t *testing.T) {
	for _, tc := range []struct {
		desc string
		size uint32
		n    int
	}{
		{"one backend takes every slot", 251, 1},
		{"two backends, small prime", 251, 2},
		{"seven backends, small prime", 251, 7},
		{"as many backends as slots", 251, 251},
		{"three backends, default size", DefaultTableSize, 3},
		{"ten backends, default size", DefaultTableSize, 10},
		{"hundred backends, default size", DefaultTableSize, 100},
		{"thousand backends, default size", DefaultTableSize, 1000},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			bs := backendsN(tc.n, equalWeight)
			c := slotCounts(mustTable(t, tc.size, nil, bs))
			if c[NoBackend] != 0 {
				t.Fatalf("%d empty slots", c[NoBackend])
			}
			lo, hi := int(tc.size)/tc.n, (int(tc.size)+tc.n-1)/tc.n
			for _, b := range bs {
				if got := c[b.ID]; got < lo || got > hi {
					t.Errorf("backend %q has %d slots, want %d..%d", b.Key, got, lo, hi)
				}
			}
		})
	}
}

func TestTableWeightedShares(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		desc    string
		weights []uint32
	}{
		{"fibonacci weights", []uint32{1, 2, 3, 5, 8, 13, 21, 34, 55, 89}},
		{"one heavy, two light", []uint32{1000, 1, 50}},
		{"powers of ten", []uint32{1, 10, 100, 1000, 10000}},
		{"huge weights do not overflow", []uint32{math.MaxUint32, math.MaxUint32 - 1, 3_000_000_000}},
		{"random weights, 200 backends", func() []uint32 {
			w := make([]uint32, 200)
			for i := range w {
				w[i] = 1 + rng.Uint32N(100)
			}
			return w
		}()},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			bs := backendsN(len(tc.weights), func(i int) uint32 { return tc.weights[i] })
			c := slotCounts(mustTable(t, DefaultTableSize, nil, bs))
			var total float64
			for _, w := range tc.weights {
				total += float64(w)
			}
			for _, b := range bs {
				exact := DefaultTableSize * float64(b.Weight) / total
				got := float64(c[b.ID])
				// Largest remainder: never a whole slot off the exact share...
				if math.Abs(got-exact) >= 1 {
					t.Errorf("backend %q weight %d: %v slots, exact share %.2f", b.Key, b.Weight, got, exact)
				}
				// ...which is within 1% wherever 1% is at least one slot.
				if exact >= 100 && math.Abs(got-exact) > exact/100 {
					t.Errorf("backend %q weight %d: %v slots, more than 1%% off %.2f", b.Key, b.Weight, got, exact)
				}
			}
		})
	}
}

func TestTableEveryActiveBackendGetsASlot(t *testing.T) {
	// Weight 1 against 10^6 rounds to 0 slots of 251; the floor of one slot comes from the heavy one.
	bs := []Weighted{
		{ID: 1, Key: "198.18.0.1:80", Weight: 1_000_000},
		{ID: 2, Key: "198.18.0.2:80", Weight: 1},
		{ID: 3, Key: "198.18.0.3:80", Weight: 1},
	}
	c := slotCounts(mustTable(t, 251, nil, bs))
	if c[1] != 249 || c[2] != 1 || c[3] != 1 {
		t.Fatalf("slot counts %v, want 1:249 2:1 3:1", c)
	}
}

func TestTableDeterministicAcrossInputOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		desc string
		size uint32
		bs   []Weighted
	}{
		{"equal weights", DefaultTableSize, backendsN(50, equalWeight)},
		{"mixed weights with a drained backend", 251, backendsN(20, func(i int) uint32 { return uint32(i % 4) })},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			want := mustTable(t, tc.size, nil, tc.bs)
			for range 5 {
				bs := slices.Clone(tc.bs)
				rng.Shuffle(len(bs), func(i, j int) { bs[i], bs[j] = bs[j], bs[i] })
				if got := mustTable(t, tc.size, nil, bs); !slices.Equal(got, want) {
					t.Fatalf("shuffled input gives a different table (%d slots differ)", len(moved(got, want)))
				}
			}
			// An all-empty previous table is the same as none.
			if got := mustTable(t, tc.size, make([]uint32, tc.size), tc.bs); !slices.Equal(got, want) {
				t.Fatalf("empty prev gives a different table than nil prev")
			}
		})
	}
}

func TestTableRemoveOneMovesOnlyItsSlots(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		size   uint32
		n      int
		remove int
	}{
		{"2 -> 1, small prime", 251, 2, 0},
		{"10 -> 9, small prime", 251, 10, 4},
		{"10 -> 9, default size", DefaultTableSize, 10, 9},
		{"100 -> 99, default size", DefaultTableSize, 100, 37},
		{"1000 -> 999, default size", DefaultTableSize, 1000, 500},
		{"1 -> 0 empties the table", 251, 1, 0},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			bs := backendsN(tc.n, equalWeight)
			before := mustTable(t, tc.size, nil, bs)
			gone := bs[tc.remove].ID
			after := mustTable(t, tc.size, before, slices.Delete(slices.Clone(bs), tc.remove, tc.remove+1))
			var own int
			for s := range before {
				switch {
				case before[s] != gone && after[s] != before[s]:
					t.Fatalf("slot %d moved from backend %d (not removed) to %d", s, before[s], after[s])
				case before[s] == gone && after[s] == gone:
					t.Fatalf("slot %d still points at removed backend %d", s, gone)
				case before[s] == gone:
					own++
				}
			}
			if got := len(moved(before, after)); got != own {
				t.Fatalf("%d slots moved, want the removed backend's %d", got, own)
			}
			if tc.n == 1 {
				if c := slotCounts(after); c[NoBackend] != int(tc.size) {
					t.Fatalf("no backends left but table is %v", c)
				}
				return
			}
			// Still balanced after the incremental step.
			c := slotCounts(after)
			lo, hi := int(tc.size)/(tc.n-1), (int(tc.size)+tc.n-2)/(tc.n-1)
			for id, k := range c {
				if id == NoBackend || k < lo || k > hi {
					t.Errorf("backend %d has %d slots, want %d..%d", id, k, lo, hi)
				}
			}
		})
	}
}

func TestTableAddOneMovesOnlyWhatItTakes(t *testing.T) {
	for _, tc := range []struct {
		desc string
		size uint32
		n    int // backends before the addition
	}{
		{"0 -> 1 fills the table", 251, 0},
		{"1 -> 2, small prime", 251, 1},
		{"9 -> 10, small prime", 251, 9},
		{"99 -> 100, default size", DefaultTableSize, 99},
		{"999 -> 1000, default size", DefaultTableSize, 999},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			all := backendsN(tc.n+1, equalWeight)
			// The newcomer sorts into the middle of the key order, not the end.
			added := all[tc.n/2]
			before := mustTable(t, tc.size, nil, slices.Delete(slices.Clone(all), tc.n/2, tc.n/2+1))
			after := mustTable(t, tc.size, before, all)
			m := moved(before, after)
			for _, s := range m {
				if after[s] != added.ID {
					t.Fatalf("slot %d moved from %d to %d, not to the new backend %d", s, before[s], after[s], added.ID)
				}
			}
			target := int(targets(tc.size, sortedActive(all))[tc.n/2])
			if len(m) != target || slotCounts(after)[added.ID] != target {
				t.Fatalf("%d slots moved, new backend has %d; want its target %d", len(m), slotCounts(after)[added.ID], target)
			}
		})
	}
}

func TestTableDrain(t *testing.T) {
	bs := backendsN(10, equalWeight)
	before := mustTable(t, 251, nil, bs)
	drained := slices.Clone(bs)
	drained[3].Weight = 0
	after := mustTable(t, 251, before, drained)
	if c := slotCounts(after); c[bs[3].ID] != 0 || c[NoBackend] != 0 {
		t.Fatalf("drained backend keeps %d slots, %d empty", c[bs[3].ID], c[NoBackend])
	}
	for _, s := range moved(before, after) {
		if before[s] != bs[3].ID {
			t.Fatalf("slot %d of backend %d moved though only %d was drained", s, before[s], bs[3].ID)
		}
	}
	// Draining is the same as removing, from scratch too.
	if !slices.Equal(mustTable(t, 251, nil, drained), mustTable(t, 251, nil, slices.Delete(slices.Clone(bs), 3, 4))) {
		t.Fatalf("drained and removed backend give different tables")
	}
	// All drained: nothing to pick.
	for i := range drained {
		drained[i].Weight = 0
	}
	if c := slotCounts(mustTable(t, 251, after, drained)); c[NoBackend] != 251 {
		t.Fatalf("all weights 0 but table has %v", c)
	}
	if c := slotCounts(mustTable(t, 251, nil, nil)); c[NoBackend] != 251 {
		t.Fatalf("no backends but table has %v", c)
	}
}

func TestTablePrevIgnoredWhenUnusable(t *testing.T) {
	bs := backendsN(10, equalWeight)
	scratch := mustTable(t, 251, nil, bs)
	for _, tc := range []struct {
		desc string
		prev []uint32
	}{
		{"shorter", slices.Repeat([]uint32{1}, 250)},
		{"longer", slices.Repeat([]uint32{1}, 252)},
		{"a table of the default size", mustTable(t, DefaultTableSize, nil, bs)},
		{"right size, only unknown IDs", slices.Repeat([]uint32{999_999}, 251)},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := mustTable(t, 251, tc.prev, bs); !slices.Equal(got, scratch) {
				t.Fatalf("prev %s changed the table (%d slots differ from scratch)", tc.desc, len(moved(got, scratch)))
			}
		})
	}
}

func TestTableWeightChangeKeepsSlots(t *testing.T) {
	bs := backendsN(5, equalWeight)
	before := mustTable(t, 251, nil, bs)
	heavier := slices.Clone(bs)
	heavier[2].Weight = 3 // 1/5 -> 3/7 of the table
	after := mustTable(t, 251, before, heavier)
	checkIncremental(t, 251, before, after, heavier)
	for _, s := range moved(before, after) {
		if after[s] != bs[2].ID {
			t.Fatalf("slot %d moved to %d, only the heavier backend %d gains", s, after[s], bs[2].ID)
		}
	}
}

func TestTableErrors(t *testing.T) {
	ok := backendsN(3, equalWeight)
	for _, tc := range []struct {
		desc string
		size uint32
		bs   []Weighted
		want string // must appear in the error
	}{
		{"size 0", 0, ok, "size 0 is not prime"},
		{"size 1", 1, ok, "size 1 is not prime"},
		{"size 65536", 65536, ok, "size 65536 is not prime"},
		{"fewer slots than active backends", 2, ok, "size 2 is smaller than the 3 backends"},
		{"ID 0", 251, []Weighted{{ID: 0, Key: "198.18.0.1:80", Weight: 1}}, `"198.18.0.1:80": ID 0`},
		{"duplicate ID", 251, []Weighted{{ID: 7, Key: "198.18.0.1:80", Weight: 1}, {ID: 7, Key: "198.18.0.2:80"}}, "ID 7"},
		{"duplicate key", 251, []Weighted{{ID: 1, Key: "198.18.0.1:80", Weight: 1}, {ID: 2, Key: "198.18.0.1:80", Weight: 2}}, `key "198.18.0.1:80"`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			tab, err := Table(tc.size, nil, tc.bs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Table(%d) = %d slots, error %v; want an error containing %q", tc.size, len(tab), err, tc.want)
			}
		})
	}
	// Drained backends do not count against the size.
	drained := slices.Clone(ok)
	drained[0].Weight = 0
	if _, err := Table(2, nil, drained); err != nil {
		t.Fatalf("2 active backends in 2 slots: %v", err)
	}
}

// sortedActive is the backends Table balances, in its order.
func sortedActive(bs []Weighted) []Weighted {
	var a []Weighted
	for _, b := range bs {
		if b.Weight > 0 {
			a = append(a, b)
		}
	}
	slices.SortFunc(a, func(x, y Weighted) int { return strings.Compare(x.Key, y.Key) })
	return a
}

// checkTable verifies a table against its backends: full, each backend exactly at its target, and
// targets within one slot of the exact weight share (plus the slots given to weight-starved backends).
func checkTable(t *testing.T, size uint32, tab []uint32, bs []Weighted) {
	t.Helper()
	active := sortedActive(bs)
	c := slotCounts(tab)
	if len(active) == 0 {
		if c[NoBackend] != int(size) {
			t.Fatalf("no active backends but table is %v", c)
		}
		return
	}
	if c[NoBackend] != 0 {
		t.Fatalf("%d empty slots with %d active backends", c[NoBackend], len(active))
	}
	tg := targets(size, active)
	var total float64
	for _, b := range active {
		total += float64(b.Weight)
	}
	// Backends whose exact share is below one slot may be lifted to one, each taking a slot from a
	// large target: that is the only allowed deviation beyond rounding.
	raised := 0
	for _, b := range active {
		if float64(size)*float64(b.Weight)/total < 1 {
			raised++
		}
	}
	sum := 0
	for i, b := range active {
		sum += int(tg[i])
		if c[b.ID] != int(tg[i]) {
			t.Fatalf("backend %q has %d slots, target %d", b.Key, c[b.ID], tg[i])
		}
		exact := float64(size) * float64(b.Weight) / total
		if d := math.Abs(float64(tg[i]) - exact); d >= 1+float64(raised) {
			t.Fatalf("backend %q weight %d: target %d, exact share %.3f", b.Key, b.Weight, tg[i], exact)
		}
	}
	if sum != int(size) {
		t.Fatalf("targets sum to %d, size %d", sum, size)
	}
	for _, b := range bs {
		if b.Weight == 0 && c[b.ID] != 0 {
			t.Fatalf("drained backend %q has %d slots", b.Key, c[b.ID])
		}
	}
}

// checkIncremental verifies the minimal-move property: each backend keeps exactly
// min(previous slots, target) of its previous slots, the lowest-index ones; no other slot keeps
// its owner (such a slot would have been freed and re-won by chance: allowed, counted as kept).
func checkIncremental(t *testing.T, size uint32, prev, tab []uint32, bs []Weighted) {
	t.Helper()
	active := sortedActive(bs)
	tg := targets(size, active)
	type state struct {
		had, kept, target int
		released          bool
	}
	st := make(map[uint32]*state, len(active))
	for i, b := range active {
		st[b.ID] = &state{target: int(tg[i])}
	}
	for s, id := range prev {
		b := st[id]
		if b == nil {
			continue
		}
		b.had++
		if tab[s] == id && !b.released {
			b.kept++
		} else {
			b.released = true // every later slot of this backend was over target
		}
	}
	for _, b := range active {
		x := st[b.ID]
		if want := min(x.had, x.target); x.kept != want {
			t.Fatalf("backend %q: kept %d of its %d lowest slots, want min(%d, target %d) = %d", b.Key, x.kept, x.had, x.had, x.target, want)
		}
	}
}

// checkCase builds old then new from a description and checks every invariant.
func checkCase(t *testing.T, size uint32, old, next []Weighted) {
	t.Helper()
	prev, err := Table(size, nil, old)
	if err != nil {
		if len(sortedActive(old)) <= int(size) {
			t.Fatalf("old set: %v", err)
		}
		return
	}
	checkTable(t, size, prev, old)
	tab, err := Table(size, prev, next)
	if err != nil {
		if len(sortedActive(next)) <= int(size) {
			t.Fatalf("new set: %v", err)
		}
		return
	}
	checkTable(t, size, tab, next)
	checkIncremental(t, size, prev, tab, next)
	// Order independence, incremental too.
	rev := slices.Clone(next)
	slices.Reverse(rev)
	if again := mustTable(t, size, prev, rev); !slices.Equal(again, tab) {
		t.Fatalf("reversed input order gives a different incremental table")
	}
}

var fuzzSizes = []uint32{2, 3, 5, 7, 13, 31, 101, 251, 1021, 4099, DefaultTableSize}

// caseFromBytes decodes a fuzz input: byte 0 picks the size, then two bytes per backend give its
// old and new weight (weights 0..15, scaled up by high bits; 0xff in the new weight removes it), and
// one byte in five adds a backend that only the new set has.
func caseFromBytes(data []byte) (uint32, []Weighted, []Weighted) {
	if len(data) == 0 {
		return 251, nil, nil
	}
	size := fuzzSizes[int(data[0])%len(fuzzSizes)]
	data = data[1:]
	var old, next []Weighted
	weight := func(b byte) uint32 { return uint32(b&15) << (3 * (b >> 6)) }
	for i := 0; i+1 < len(data) && i < 2*120; i += 2 {
		b := Weighted{ID: uint32(i/2 + 1), Key: backendKey(i / 2)}
		if data[i]%5 != 0 {
			b.Weight = weight(data[i])
			old = append(old, b)
		}
		if data[i+1] != 0xff {
			b.Weight = weight(data[i+1])
			next = append(next, b)
		}
	}
	return size, old, next
}

func TestTableRandomChanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 300 {
		data := make([]byte, 1+rng.IntN(80))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		size, old, next := caseFromBytes(data)
		t.Run(fmt.Sprintf("case%d-size%d-%dto%d", i, size, len(old), len(next)), func(t *testing.T) {
			checkCase(t, size, old, next)
		})
	}
}

func FuzzTable(f *testing.F) {
	f.Add([]byte{7, 1, 1, 1, 1, 1, 0xff, 1, 1})             // remove one of four
	f.Add([]byte{10, 1, 1, 1, 1, 0, 1})                     // add one to two (byte 0 % 5 == 0: absent before)
	f.Add([]byte{10, 3, 3, 1, 0, 200, 200, 14, 2})          // drain, heavy weights
	f.Add([]byte{0, 1, 1, 2, 2})                            // size 2
	f.Add([]byte{2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}) // more backends than slots
	f.Fuzz(func(t *testing.T, data []byte) {
		size, old, next := caseFromBytes(data)
		checkCase(t, size, old, next)
	})
}

func TestTableRemoveOneMixedWeights(t *testing.T) {
	// Largest remainder can in principle shift one slot between the others when the total weight
	// changes (the "new states" paradox); with realistic weights it does not happen, and this
	// fixed-seed sample pins that down.
	rng := rand.New(rand.NewPCG(9, 9))
	for range 50 {
		bs := backendsN(100, func(int) uint32 { return 1 + rng.Uint32N(10) })
		before := mustTable(t, DefaultTableSize, nil, bs)
		k := rng.IntN(len(bs))
		after := mustTable(t, DefaultTableSize, before, slices.Delete(slices.Clone(bs), k, k+1))
		for s := range before {
			if before[s] != bs[k].ID && after[s] != before[s] {
				t.Fatalf("removing %q moved slot %d from backend %d to %d", bs[k].Key, s, before[s], after[s])
			}
		}
	}
}
