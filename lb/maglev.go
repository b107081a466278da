package lb

// Incremental Maglev lookup tables.
//
// A table is size slots (size prime), each holding the ID of the backend that new flows hashing
// to that slot go to. Construction follows Maglev (Eisenbud et al., NSDI 2016): every backend has
// a permutation of the slots, (offset + j*skip) mod size, with offset and skip taken from two
// independent hashes of its Key; backends take turns, round-robin, claiming the next slot of their
// permutation that is still free.
//
// Two changes to the paper make the table weighted and incremental:
//
//   - Slot counts are fixed up front: each backend's target is its weight share of size, rounded by
//     largest remainder (so the targets sum to size, and equal weights differ by at most one slot).
//     A backend stops claiming slots when it reaches its target, so the finished table holds exactly
//     target slots per backend.
//   - With a previous table, each backend first keeps min(previous slots, target) of its own slots.
//     Only the rest — slots of removed or drained backends, and the excess of backends now above
//     target — is freed and handed out by the Maglev round robin to backends below target. Removing
//     one of N equal-weight backends therefore moves only its own slots, and adding one moves only
//     the slots the newcomer takes.

import (
	"cmp"
	"fmt"
	"math/bits"
	"slices"
	"strings"
)

// DefaultTableSize is the default Maglev table size (a prime).
const DefaultTableSize = 65537

// NoBackend marks an empty slot (no backend with weight > 0). Backend IDs are >= 1.
const NoBackend uint32 = 0

// Weighted is one backend as Maglev sees it.
type Weighted struct {
	ID     uint32 // value written into the table slots; >= 1, unique in the set
	Key    string // stable identity hashed for the permutation (e.g. "198.18.1.10:8080")
	Weight uint32 // 0 = drain: gets no slots (existing flows are kept by conntrack, not here)
}

// IsPrime reports whether n is prime.
func IsPrime(n uint32) bool {
	if n < 2 {
		return false
	}
	if n%2 == 0 {
		return n == 2
	}
	if n%3 == 0 {
		return n == 3
	}
	// Trial division by 6k±1 up to sqrt(n) < 2^16: at most ~11k steps.
	for d := uint64(5); d*d <= uint64(n); d += 6 {
		if uint64(n)%d == 0 || uint64(n)%(d+2) == 0 {
			return false
		}
	}
	return true
}

// Table builds a Maglev lookup table of size slots for backends. size must be a prime and at least
// the number of backends with weight > 0. prev is the previous table of the same service; nil or a
// table of another length means "build from scratch".
//
// Guarantees:
//   - From scratch the result depends only on size and the set of backends, not on their order.
//   - Backend b holds exactly targets(b) slots: its weight share of size, largest-remainder rounded
//     (remainder ties go to the smaller Key), so |slots - size*w/W| < 1. Every backend with
//     weight > 0 gets at least one slot; when rounding would give it none, the slot is taken from
//     the backend with the largest target (only possible with weight ratios above size/1).
//   - With prev, every backend keeps min(its slots in prev, its target) of its previous slots, and
//     only the other slots change owner. A backend above target keeps its lowest-index slots and
//     releases its highest-index ones. Previous slots are recognized by ID, so a reused ID keeps the
//     slots of the backend that had it before. With equal weights, removing a backend never
//     lowers another's target and adding one never raises another's, so those changes move no
//     other backend's slots; with unequal weights largest-remainder rounding can (rarely) shift
//     one slot between two others.
//   - No backend with weight > 0: every slot is NoBackend.
//
// Cost is O(size·log(size)) probes from scratch and far less for small changes; a 1000-backend,
// 65537-slot table takes a few milliseconds (see BenchmarkTable).
func Table(size uint32, prev []uint32, backends []Weighted) ([]uint32, error) {
	if !IsPrime(size) {
		return nil, fmt.Errorf("maglev table size %d is not prime", size)
	}
	if err := checkBackends(backends); err != nil {
		return nil, err
	}

	// Active backends in Key order: the order of the round robin and of remainder ties, which makes
	// the result independent of the caller's order.
	active := make([]Weighted, 0, len(backends))
	for _, b := range backends {
		if b.Weight > 0 {
			active = append(active, b)
		}
	}
	if uint64(len(active)) > uint64(size) {
		return nil, fmt.Errorf("maglev table size %d is smaller than the %d backends with weight > 0", size, len(active))
	}
	slices.SortFunc(active, func(a, b Weighted) int { return strings.Compare(a.Key, b.Key) })

	table := make([]uint32, size) // all NoBackend
	n := len(active)
	if n == 0 {
		return table, nil
	}
	need := targets(size, active) // slots each backend still has to claim

	// Keep phase: scan prev in index order; a slot stays with its owner while the owner is below
	// target, so an owner above target releases its highest-index slots.
	free := int(size)
	if len(prev) == int(size) {
		idx := newIDIndex(active, size)
		for s, id := range prev {
			if id == NoBackend {
				continue
			}
			if i := idx.lookup(id); i >= 0 && need[i] > 0 {
				table[s] = id
				need[i]--
				free--
			}
		}
	}
	if free == 0 {
		return table, nil
	}

	// Fill phase: the Maglev population loop over the backends still below target. Struct of
	// arrays, no maps: next[i] is the next slot of backend i's permutation to try.
	next := make([]uint32, n)
	skip := make([]uint32, n)
	needy := make([]int32, 0, n)
	for i, b := range active {
		if need[i] == 0 {
			continue
		}
		next[i], skip[i] = permutation(b.Key, size)
		needy = append(needy, int32(i))
	}
	for len(needy) > 0 {
		w := 0
		for _, i := range needy {
			// The permutation visits every slot (skip < size, size prime) and free > 0 here, so
			// this loop ends within size probes.
			pos, sk := next[i], skip[i]
			for table[pos] != NoBackend {
				pos = step(pos, sk, size)
			}
			table[pos] = active[i].ID
			next[i] = step(pos, sk, size)
			if need[i]--; need[i] > 0 {
				needy[w] = i
				w++
			}
		}
		needy = needy[:w]
	}
	return table, nil
}

// step returns (pos + skip) mod size without overflowing uint32 (pos, skip < size).
func step(pos, skip, size uint32) uint32 {
	if pos >= size-skip {
		return pos - (size - skip)
	}
	return pos + skip
}

// checkBackends rejects ID 0 and duplicate IDs or Keys (drained backends included).
func checkBackends(backends []Weighted) error {
	ids := make(map[uint32]string, len(backends))
	keys := make(map[string]uint32, len(backends))
	for _, b := range backends {
		if b.ID == NoBackend {
			return fmt.Errorf("backend %q: ID 0 is reserved for empty slots", b.Key)
		}
		if k, dup := ids[b.ID]; dup {
			return fmt.Errorf("backend ID %d is used by both %q and %q", b.ID, k, b.Key)
		}
		if id, dup := keys[b.Key]; dup {
			return fmt.Errorf("backend key %q is used by both ID %d and ID %d", b.Key, id, b.ID)
		}
		ids[b.ID] = b.Key
		keys[b.Key] = b.ID
	}
	return nil
}

// targets returns each backend's slot count: size·w/W rounded by largest remainder (ties to the
// lower index, i.e. the smaller Key), then raised to at least 1 by taking from the largest targets.
// active must be sorted by Key, all weights > 0, len(active) <= size.
func targets(size uint32, active []Weighted) []uint32 {
	if len(active) == 0 {
		return nil
	}
	var total uint64
	for _, b := range active {
		total += uint64(b.Weight)
	}
	t := make([]uint32, len(active))
	rem := make([]uint64, len(active))
	left := uint64(size)
	for i, b := range active {
		// size·w fits in 128 bits and the quotient is <= size, so Div64 cannot overflow.
		hi, lo := bits.Mul64(uint64(size), uint64(b.Weight))
		q, r := bits.Div64(hi, lo, total)
		t[i], rem[i] = uint32(q), r
		left -= q
	}
	if left > 0 { // left < len(active): one extra slot each for the largest remainders
		order := make([]int, len(active))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int {
			if c := cmp.Compare(rem[b], rem[a]); c != 0 {
				return c
			}
			return cmp.Compare(a, b)
		})
		for _, i := range order[:left] {
			t[i]++
		}
	}
	// A backend with weight > 0 must get traffic. Since size >= len(active), whenever some target
	// is 0 another is >= 2 and can give one up.
	for i := range t {
		if t[i] != 0 {
			continue
		}
		donor := 0
		for j := range t {
			if t[j] > t[donor] {
				donor = j
			}
		}
		t[donor]--
		t[i] = 1
	}
	return t
}

// permutation returns the first slot and the stride of key's Maglev permutation of size slots,
// from two independently seeded hashes (the paper's offset and skip).
func permutation(key string, size uint32) (offset, skip uint32) {
	offset = uint32(hashKey(key, 0x9e3779b97f4a7c15) % uint64(size))
	if size == 2 {
		return offset, 1
	}
	skip = uint32(hashKey(key, 0xc2b2ae3d27d4eb4f)%uint64(size-1)) + 1
	return offset, skip
}

// hashKey is 64-bit FNV-1a started from a seeded basis, finished with the murmur3 fmix64
// avalanche so that nearby keys ("198.18.1.10:8080", "198.18.1.11:8080") spread over all slots.
func hashKey(key string, seed uint64) uint64 {
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	h := uint64(offset64) ^ seed
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= prime64
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// idIndex maps a backend ID to its index in active (-1: not an active backend). A dense slice when
// IDs are small (the usual case: IDs are allocated from 1), a map otherwise; built once per Table
// call, consulted once per slot of prev.
type idIndex struct {
	dense  []int32
	sparse map[uint32]int32
}

func newIDIndex(active []Weighted, size uint32) idIndex {
	var maxID uint32
	for _, b := range active {
		maxID = max(maxID, b.ID)
	}
	if uint64(maxID) <= 2*uint64(size) {
		d := make([]int32, maxID+1)
		for i := range d {
			d[i] = -1
		}
		for i, b := range active {
			d[b.ID] = int32(i)
		}
		return idIndex{dense: d}
	}
	m := make(map[uint32]int32, len(active))
	for i, b := range active {
		m[b.ID] = int32(i)
	}
	return idIndex{sparse: m}
}

func (x idIndex) lookup(id uint32) int32 {
	if x.dense != nil {
		if uint64(id) < uint64(len(x.dense)) {
			return x.dense[id]
		}
		return -1
	}
	if i, ok := x.sparse[id]; ok {
		return i
	}
	return -1
}
