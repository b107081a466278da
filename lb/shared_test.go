package lb

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

const sharedSize = 4099 // prime, small enough for many steps per test

// sbe is backend i of the test net with weight w.
func sbe(i int, w uint32) Backend {
	return Backend{Addr: netip.AddrFrom4([4]byte{198, 18, byte(i / 250), byte(i%250 + 1)}), Weight: w}
}

func set(ws ...int) []Backend {
	out := make([]Backend, len(ws))
	for i, n := range ws {
		out[i] = sbe(n, 1)
	}
	return out
}

// history is the controller's side: each service's table, one NextShared per change.
type history struct {
	t      testing.TB
	gen    uint64
	tables map[string]*SharedTable
	log    []map[string]*SharedTable // tables after each generation (gen i+1)
}

func newHistory(t testing.TB) *history { return &history{t: t, tables: map[string]*SharedTable{}} }

// apply commits one change (one generation) setting the backends of the named services.
func (h *history) apply(change map[string][]Backend) {
	h.t.Helper()
	h.gen++
	for _, name := range slices.Sorted(maps.Keys(change)) {
		next, _, err := NextShared(sharedSize, h.tables[name], change[name], h.gen)
		if err != nil {
			h.t.Fatalf("generation %d, service %s: %v", h.gen, name, err)
		}
		h.tables[name] = next
	}
	h.log = append(h.log, maps.Clone(h.tables))
}

// host is one host's copy, fetched by delta like an agent does.
type host map[string]*SharedTable

// fetch brings the host's copy of name up to the controller's table at generation gen.
func (c host) fetch(t testing.TB, h *history, gen uint64, name string) int {
	t.Helper()
	want := h.log[gen-1][name]
	var since uint64
	if have := c[name]; have != nil {
		if have.Generation == want.Generation {
			return 0
		}
		since = have.Generation
	}
	d := want.DeltaSince(since)
	got, err := d.Apply(c[name])
	if err != nil {
		t.Fatalf("host fetch %s gen %d since %d: %v", name, want.Generation, since, err)
	}
	c[name] = got
	return len(d.Slots)
}

func TestSharedTablesIdenticalWhateverEachHostSaw(t *testing.T) {
	h := newHistory(t)
	// Churn over three services, interleaved: adds, removes, weight changes, a drain, a
	// service deleted and re-created.
	h.apply(map[string][]Backend{"web": set(0, 1, 2, 3, 4, 5, 6, 7, 8, 9), "db": set(20, 21, 22), "dns": set(30, 31)})
	h.apply(map[string][]Backend{"web": set(0, 1, 2, 4, 5, 6, 7, 8, 9)})
	h.apply(map[string][]Backend{"web": set(0, 1, 2, 4, 6, 7, 8, 9, 11), "db": set(20, 22)})
	h.apply(map[string][]Backend{"dns": append(set(30), sbe(31, 3))})
	h.apply(map[string][]Backend{"web": append(set(0, 1, 2, 4, 6, 7, 8, 11), sbe(9, 0)), "db": set(20, 22, 23, 24)})
	h.apply(map[string][]Backend{"web": set(0, 1, 2, 4, 6, 7, 8, 11, 12, 3)})
	h.apply(map[string][]Backend{"dns": set(30, 32)})
	final := h.log[len(h.log)-1]
	last := uint64(len(h.log))
	names := slices.Sorted(maps.Keys(final))

	hosts := map[string]host{"every change": {}, "coalesced": {}, "reordered across services": {}, "from scratch": {}}
	for g := uint64(1); g <= last; g++ {
		for _, n := range names {
			hosts["every change"].fetch(t, h, g, n)
		}
		if g == 1 || g == 4 || g == last { // the long poll coalesced 2-3, 5-6
			for _, n := range names {
				hosts["coalesced"].fetch(t, h, g, n)
			}
		}
		// Services caught up one at a time, in reverse order, at different generations.
		if g%2 == 0 || g == last {
			n := names[len(names)-1-int(g/2)%len(names)]
			hosts["reordered across services"].fetch(t, h, g, n)
		}
	}
	for _, n := range slices.Backward(names) {
		hosts["reordered across services"].fetch(t, h, last, n)
	}
	for _, n := range names {
		hosts["from scratch"].fetch(t, h, last, n)
	}
	for who, c := range hosts {
		for _, n := range names {
			got, want := c[n], final[n]
			if got.Sum() != want.Sum() || !slices.Equal(got.Slots, want.Slots) || !slices.Equal(got.Backends, want.Backends) {
				t.Errorf("host that saw %s: service %s differs from the controller's in %d slots", who, n, len(moved(got.Slots, want.Slots)))
			}
		}
	}

	// Written through each host's State (its own backend IDs, allocated in another order): the
	// slots name the same backend key everywhere.
	var ref map[string][]string
	for _, who := range slices.Sorted(maps.Keys(hosts)) {
		st, err := NewState(sharedSize, 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		var svcs []Service
		for i, n := range names {
			svc := Service{Name: n, VIP: VIP{Addr: netip.MustParseAddr("203.0.113.10"), Port: uint16(80 + i), Proto: TCP}, Shared: hosts[who][n]}
			for _, b := range hosts[who][n].Backends {
				if b.Key != "" {
					ap := netip.MustParseAddrPort(b.Key)
					svc.Backends = append(svc.Backends, Backend{Addr: ap.Addr(), Port: ap.Port(), Weight: b.Weight})
				}
			}
			if who == "from scratch" {
				slices.Reverse(svc.Backends) // another ID allocation order
			}
			svcs = append(svcs, svc)
		}
		if who == "from scratch" {
			slices.Reverse(svcs)
		}
		p, err := st.Plan(svcs)
		if err != nil {
			t.Fatalf("%s: plan: %v", who, err)
		}
		st.Commit(p)
		keyOf := map[uint32]string{}
		for k, id := range st.BackendIDs() {
			keyOf[id] = k
		}
		got := map[string][]string{}
		for _, svc := range svcs {
			for _, id := range st.TableOf(svc.VIP).List() {
				got[svc.Name] = append(got[svc.Name], keyOf[id])
			}
		}
		if ref == nil {
			ref = got
			continue
		}
		for _, n := range names {
			if !slices.Equal(got[n], ref[n]) {
				t.Errorf("host that saw %s: programmed table of %s names other backends than its peers'", who, n)
			}
		}
	}
}

// TestSharedReorderedAcrossServices: a service's table depends on its own changes only, so
// the controller committing other services' changes in between (or in another order) gives
// byte-identical tables, whatever the generation numbers.
func TestSharedReorderedAcrossServices(t *testing.T) {
	a, b := newHistory(t), newHistory(t)
	a.apply(map[string][]Backend{"web": set(0, 1, 2, 3, 4, 5), "db": set(10, 11, 12)})
	a.apply(map[string][]Backend{"web": set(0, 1, 3, 4, 5)})
	a.apply(map[string][]Backend{"db": set(10, 12, 13)})
	a.apply(map[string][]Backend{"web": set(0, 1, 3, 4, 5, 6)})

	b.apply(map[string][]Backend{"db": set(10, 11, 12)})
	b.apply(map[string][]Backend{"db": set(10, 12, 13)})
	b.apply(map[string][]Backend{"web": set(0, 1, 2, 3, 4, 5)})
	b.apply(map[string][]Backend{"dns": set(20)}) // an unrelated service in between
	b.apply(map[string][]Backend{"web": set(0, 1, 3, 4, 5)})
	b.apply(map[string][]Backend{"web": set(0, 1, 3, 4, 5, 6)})
	for _, n := range []string{"web", "db"} {
		x, y := a.tables[n], b.tables[n]
		if x.Sum() != y.Sum() || !slices.Equal(x.Slots, y.Slots) {
			t.Errorf("service %s: reordering other services' changes moved %d slots", n, len(moved(x.Slots, y.Slots)))
		}
	}
}

// owner names the backend key of every slot of a shared table ("" for empty).
func owner(t *SharedTable) []string {
	out := make([]string, len(t.Slots))
	for s, i := range t.Slots {
		if i != NoBackend {
			out[s] = t.Backends[i-1].Key
		}
	}
	return out
}

// TestSharedZeroCollateral: every single change (add, remove, drain, undrain; equal weights)
// moves only slots from or to the backends it changes.
func TestSharedZeroCollateral(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 2016))
	cur := map[int]uint32{}
	for i := range 10 {
		cur[i] = 1
	}
	toList := func() []Backend {
		var out []Backend
		for _, i := range slices.Sorted(maps.Keys(cur)) {
			out = append(out, sbe(i, cur[i]))
		}
		return out
	}
	prev, _, err := NextShared(sharedSize, nil, toList(), 1)
	if err != nil {
		t.Fatal(err)
	}
	next := 10
	for step := range 200 {
		var changed int
		switch op := rng.IntN(4); {
		case op == 0 || len(cur) < 3: // add
			changed, next = next, next+1
			cur[changed] = 1
		case op == 1: // remove
			keys := slices.Sorted(maps.Keys(cur))
			changed = keys[rng.IntN(len(keys))]
			delete(cur, changed)
		default: // drain or undrain
			keys := slices.Sorted(maps.Keys(cur))
			changed = keys[rng.IntN(len(keys))]
			cur[changed] = 1 - cur[changed]
		}
		nt, n, err := NextShared(sharedSize, prev, toList(), uint64(step+2))
		if err != nil {
			t.Fatal(err)
		}
		ck := sbe(changed, 0).Key()
		po, no := owner(prev), owner(nt)
		bad := 0
		for s := range po {
			if po[s] != no[s] && po[s] != ck && no[s] != ck && po[s] != "" {
				bad++
			}
		}
		if bad > 0 {
			t.Fatalf("step %d (backend %s): %d slots moved between unaffected backends", step, ck, bad)
		}
		if got := len(moved(prev.Slots, nt.Slots)); got != n {
			t.Fatalf("step %d: NextShared says %d slots changed, %d did", step, n, got)
		}
		// The delta since the previous generation carries exactly the moved slots.
		d := nt.DeltaSince(prev.Generation)
		if got, err := d.Apply(prev); err != nil || !slices.Equal(got.Slots, nt.Slots) {
			t.Fatalf("step %d: delta apply: %v", step, err)
		}
		prev = nt
	}
}

// TestSharedEffective: a host whose health checks hold a backend down writes the shared
// table with only that backend's slots moved, the same on every host with that view; with
// every backend up it writes the shared table itself.
func TestSharedEffective(t *testing.T) {
	all := set(0, 1, 2, 3, 4, 5, 6, 7)
	st, _, err := NextShared(sharedSize, nil, all, 5)
	if err != nil {
		t.Fatal(err)
	}
	same, err := st.Effective(slices.Clone(all))
	if err != nil || !slices.Equal(same, st.Slots) {
		t.Fatalf("all up: %v, differs from the shared table", err)
	}
	view := slices.Delete(slices.Clone(all), 3, 4)
	e1, err := st.Effective(view)
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(view)
	e2, _ := st.Effective(view)
	if !slices.Equal(e1, e2) {
		t.Fatal("two hosts with the same view write different tables")
	}
	down := uint32(st.index()[all[3].Key()])
	for s := range e1 {
		if e1[s] != st.Slots[s] && st.Slots[s] != down {
			t.Fatalf("slot %d moved from index %d, which is up", s, st.Slots[s])
		}
	}
	if _, err := st.Effective(append(slices.Clone(all), sbe(99, 1))); err == nil {
		t.Fatal("a backend the table does not know must be an error")
	}
}

func TestSharedDeltaSizesAndErrors(t *testing.T) {
	h := newHistory(t)
	ws := make([]int, 30)
	for i := range ws {
		ws[i] = i
	}
	h.apply(map[string][]Backend{"web": set(ws...)})
	for i := range 10 { // ten changes: one backend added, one removed, in turn
		if i%2 == 0 {
			ws = append(ws, 100+i)
		} else {
			ws = slices.Delete(ws, 0, 1)
		}
		h.apply(map[string][]Backend{"web": set(ws...)})
	}
	first, last := h.log[0]["web"], h.log[len(h.log)-1]["web"]
	full := last.DeltaSince(0)
	one := last.DeltaSince(h.log[len(h.log)-2]["web"].Generation)
	ten := last.DeltaSince(first.Generation)
	if !full.Full || one.Full || ten.Full {
		t.Fatalf("full=%v one=%v ten=%v: want a full table, then deltas", full.Full, one.Full, ten.Full)
	}
	if !(len(one.Slots) < len(ten.Slots) && len(ten.Slots) < len(full.Slots)) {
		t.Fatalf("bytes: one change %d, ten %d, full %d: want increasing", len(one.Slots), len(ten.Slots), len(full.Slots))
	}
	t.Logf("bytes fetched: 1 change %d, 10 changes %d, full table %d (%d slots)", len(one.Slots), len(ten.Slots), len(full.Slots), sharedSize)

	// A delta applied to the wrong base fails its hash or its generation check.
	// (a copy of the base generation with one slot the delta does not carry changed).
	wrong := SharedTable{Generation: first.Generation, Backends: first.Backends, Slots: slices.Clone(first.Slots)}
	for s, g := range last.SlotGen {
		if g <= first.Generation {
			wrong.Slots[s] = wrong.Slots[s]%uint32(len(first.Backends)) + 1
			break
		}
	}
	if _, err := ten.Apply(&wrong); !errors.Is(err, ErrSumMismatch) {
		t.Fatalf("delta on a wrong base: %v, want ErrSumMismatch", err)
	}
	if _, err := ten.Apply(h.log[3]["web"]); err == nil {
		t.Fatal("delta on another generation must be refused")
	}
	bad := full
	bad.Slots = bytes.Clone(full.Slots)
	bad.Slots[len(bad.Slots)/2] ^= 0x55
	if _, err := bad.Apply(nil); err == nil {
		t.Fatal("a corrupted table must be refused")
	}
	if _, _, err := NextShared(sharedSize, last, set(1), last.Generation); err == nil {
		t.Fatal("a generation that does not advance must be refused")
	}
	if _, _, err := NextShared(sharedSize, nil, append(set(1), sbe(1, 2)), 1); err == nil {
		t.Fatal("a backend listed twice must be refused")
	}
}

func ExampleSharedTable_DeltaSince() {
	a, _, _ := NextShared(sharedSize, nil, set(0, 1, 2, 3), 10)
	b, moved, _ := NextShared(sharedSize, a, set(0, 1, 2), 11)
	d := b.DeltaSince(10)
	got, err := d.Apply(a)
	fmt.Println(moved, d.Full, err, got.Sum() == b.Sum())
	// Output: 1024 false <nil> true
}

// TestSlotInterner: tables with equal slots decoded through one interner share one array, a
// delta applied to a shared array leaves it (and the other tables) as they were, and Keep
// forgets arrays no table holds.
func TestSlotInterner(t *testing.T) {
	mk := func(addrs ...string) []Backend {
		var bs []Backend
		for _, a := range addrs {
			bs = append(bs, Backend{Addr: netip.MustParseAddr(a), Port: 80, Weight: 1})
		}
		return bs
	}
	build := func(gen uint64, prev *SharedTable, bs []Backend) *SharedTable {
		t.Helper()
		tb, _, err := NextShared(251, prev, bs, gen)
		if err != nil {
			t.Fatal(err)
		}
		return tb
	}
	var in SlotInterner
	apply := func(d Delta, have *SharedTable) *SharedTable {
		t.Helper()
		got, err := d.ApplyInterned(have, &in)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	same := func(a, b *SharedTable) bool { return &a.Slots[0] == &b.Slots[0] }

	one1 := build(1, nil, mk("198.18.1.1"))
	one2 := build(2, nil, mk("198.18.1.2")) // another backend, the same slots (all index 1)
	two := build(3, nil, mk("198.18.1.1", "198.18.1.2"))
	a, b, c := apply(one1.DeltaSince(0), nil), apply(one2.DeltaSince(0), nil), apply(two.DeltaSince(0), nil)
	if !same(a, b) || same(a, c) {
		t.Fatalf("single-backend tables share slots: %v (want true); two-backend table shares them: %v (want false)", same(a, b), same(a, c))
	}
	if a.Sum() != one1.Sum() || b.Sum() != one2.Sum() || c.Sum() != two.Sum() {
		t.Fatal("an interned table's sum differs from the controller's")
	}
	// A delta on b (shared with a): a keeps its slots.
	grown := build(4, one2, mk("198.18.1.2", "198.18.1.3"))
	before := slices.Clone(a.Slots)
	b2 := apply(grown.DeltaSince(2), b)
	if b2.Sum() != grown.Sum() || !slices.Equal(a.Slots, before) || same(a, b2) {
		t.Fatalf("delta on a shared array: sum ok %v, the other table kept %v", b2.Sum() == grown.Sum(), slices.Equal(a.Slots, before))
	}
	// Only a and c held: b2's array is forgotten, so a table equal to it gets its own.
	in.Keep(slices.Values([][]uint32{a.Slots, c.Slots}))
	again := apply(grown.DeltaSince(0), nil)
	if same(again, b2) || !same(apply(one1.DeltaSince(0), nil), a) {
		t.Fatal("Keep kept an array no table holds, or dropped one a table holds")
	}
}

// TestSlotInternerDecodedStreams: a full delta whose slot stream was decoded before is checked
// like any other (its own backends and hash) without inflating it again: the same table, a
// table of other backends with the same slots, a freed index, a wrong hash, too few backends.
func TestSlotInternerDecodedStreams(t *testing.T) {
	mk := func(addrs ...string) []Backend {
		var bs []Backend
		for _, a := range addrs {
			bs = append(bs, Backend{Addr: netip.MustParseAddr(a), Port: 80, Weight: 1})
		}
		return bs
	}
	one, _, err := NextShared(251, nil, mk("198.18.1.1"), 1)
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := NextShared(251, nil, mk("198.18.1.9"), 2)
	if err != nil {
		t.Fatal(err)
	}
	var in SlotInterner
	first, err := one.DeltaSince(0).ApplyInterned(nil, &in)
	if err != nil || in.decoded(one.DeltaSince(0).Slots, 251) == nil {
		t.Fatalf("first decode: %v, stream remembered: %v", err, in.decoded(one.DeltaSince(0).Slots, 251) != nil)
	}
	freed := one.DeltaSince(0)
	freed.Backends = []SharedBackend{{Key: "", Weight: 1}}
	badSum := one.DeltaSince(0)
	badSum.Sum = bytes.Repeat([]byte{7}, 32)
	none := one.DeltaSince(0)
	none.Backends = nil
	for _, tc := range []struct {
		name string
		d    Delta
		want *SharedTable // nil: an error
		err  string
	}{
		{"the same table again", one.DeltaSince(0), one, ""},
		{"other backends, same slots", other.DeltaSince(0), other, ""},
		{"its index freed", freed, nil, "free index 1"},
		{"a wrong hash", badSum, nil, ErrSumMismatch.Error()},
		{"no backends", none, nil, "index 1 of 0 backends"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.d.ApplyInterned(nil, &in)
			if tc.want == nil {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil || got.Sum() != tc.want.Sum() || &got.Slots[0] != &first.Slots[0] {
				t.Fatalf("err %v, sum ok %v, shares the first decode's slots %v", err, err == nil && got.Sum() == tc.want.Sum(), err == nil && &got.Slots[0] == &first.Slots[0])
			}
		})
	}
}

// TestUsedIndices: the nonzero indices a slot array names, once each, ascending, whatever the
// hint of the backend count.
func TestUsedIndices(t *testing.T) {
	for _, tc := range []struct {
		slots []uint32
		hint  int
		want  []uint32
	}{
		{nil, 0, []uint32{}},
		{[]uint32{0, 0}, 3, []uint32{}},
		{[]uint32{1, 1, 1}, 1, []uint32{1}},
		{[]uint32{3, 0, 1, 3, 2}, 3, []uint32{1, 2, 3}},
		{[]uint32{7, 2, 7}, 1, []uint32{2, 7}},                            // past the hint
		{[]uint32{0xffffffff, 1, 0xffffffff}, 1, []uint32{1, 0xffffffff}}, // far past it: no 4 GiB of flags
	} {
		if got := usedIndices(tc.slots, tc.hint); !slices.Equal(got, tc.want) || got == nil {
			t.Errorf("usedIndices(%v, %d) = %v, want %v", tc.slots, tc.hint, got, tc.want)
		}
	}
}

// TestDeltaApplyChecksIndices: a full delta decoded afresh is refused when a slot names an index
// that is free or past the backends, whichever index it is, as one decoded before is
// (TestSlotInternerDecodedStreams).
func TestDeltaApplyChecksIndices(t *testing.T) {
	mk := func(addrs ...string) []Backend {
		var bs []Backend
		for _, a := range addrs {
			bs = append(bs, Backend{Addr: netip.MustParseAddr(a), Port: 80, Weight: 1})
		}
		return bs
	}
	two, _, err := NextShared(251, nil, mk("198.18.1.1", "198.18.1.2"), 1)
	if err != nil {
		t.Fatal(err)
	}
	with := func(bs ...SharedBackend) Delta { d := two.DeltaSince(0); d.Backends = bs; return d }
	k1, k2 := two.Backends[0], two.Backends[1]
	for _, tc := range []struct {
		name string
		d    Delta
		err  string // "": accepted
	}{
		{"both backends", with(k1, k2), ""},
		{"index 1 freed", with(SharedBackend{Weight: 1}, k2), "free index 1"},
		{"index 2 freed", with(k1, SharedBackend{Weight: 1}), "free index 2"},
		{"index 2 past the backends", with(k1), "bad index (2 of 1 backends)"},
		{"no backends", with(), "bad index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.d.Apply(nil)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
		})
	}
}

// TestPlanSharesEffectiveTables: services whose shared tables have one slot array (the
// interner's) and whose hosts see the same backends get one effective array, built once, so
// their dataplane rings are one; a different view (other keys at the same indices, another
// backend down) gets its own, equal to what Effective builds alone; every service without a
// backend gets the one empty table.
func TestPlanSharesEffectiveTables(t *testing.T) {
	a, _, err := NextShared(sharedSize, nil, set(0, 1, 2), 1)
	if err != nil {
		t.Fatal(err)
	}
	b := *a // another service, the same backends: the same interned slots
	c := &SharedTable{Generation: 1, Slots: a.Slots}
	for _, be := range set(10, 11, 12) {
		c.Backends = append(c.Backends, SharedBackend{Key: be.Key(), Weight: 1})
	}
	st, err := NewState(sharedSize, 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	rows := []struct {
		name   string
		shared *SharedTable
		view   []Backend
		like   string // the row whose array this one's must be ("": its own)
	}{
		{"a-all-up", a, set(0, 1, 2), ""},
		{"a-1-down", a, set(0, 2), ""},
		{"b-1-down", &b, set(0, 2), "a-1-down"},
		{"b-2-down", &b, set(0, 1), ""},
		{"c-11-down", c, set(10, 12), ""},
		{"a-none", a, nil, ""},
		{"c-none", c, nil, "a-none"},
	}
	var svcs []Service
	for i, r := range rows {
		svcs = append(svcs, Service{Name: r.name, VIP: VIP{Addr: netip.MustParseAddr("203.0.113.10"), Port: uint16(80 + i), Proto: TCP}, Backends: r.view, Shared: r.shared})
	}
	p, err := st.Plan(svcs)
	if err != nil {
		t.Fatal(err)
	}
	tables := map[string]Slots{}
	for i, r := range rows {
		tables[r.name] = p.vips[svcs[i].VIP].table
	}
	for i, r := range rows {
		got := tables[r.name]
		want, err := r.shared.Effective(r.view)
		if err != nil {
			t.Fatal(err)
		}
		for s := range want {
			if wid := st.idOf(p, r.shared, want[s]); got.At(s) != wid {
				t.Fatalf("%s: slot %d holds backend id %d, Effective alone gives %d", r.name, s, got.At(s), wid)
			}
		}
		for _, o := range rows[:i] {
			same := &tables[o.name].Index[0] == &got.Index[0]
			if wantSame := r.like == o.name; same != wantSame {
				t.Errorf("%s shares the slot array of %s: %v, want %v", r.name, o.name, same, wantSame)
			}
		}
	}
	if &tables["a-all-up"].Index[0] != &a.Slots[0] {
		t.Error("with every backend up, the table is not the shared slots themselves")
	}
}

// idOf is the backend id plan p gives index idx of shared table t (NoBackend for 0).
func (s *State) idOf(p *Plan, t *SharedTable, idx uint32) uint32 {
	if idx == NoBackend {
		return NoBackend
	}
	return p.backends[t.Backends[idx-1].Key].id
}
