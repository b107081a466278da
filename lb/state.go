package lb

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// VIPUpdate is one VIP the dataplane must (re)program. Table is empty when the VIP's Maglev
// table did not change (only metadata to write) and for deletions.
type VIPUpdate struct {
	VIP   VIP
	ID    uint32
	Mode  Mode
	Table Slots
	New   bool // the id was just assigned: its counters start at zero
}

// Slots is a VIP's Maglev table in this host's backend IDs: slot i holds IDs[Index[i]], or
// Index[i] itself when IDs is nil. A table from a SharedTable keeps the shared slots (backend
// indices, not copied) and this host's ID per index, instead of a translated copy of every
// slot: a host balancing 1200 VIPs with 65537-slot tables holds (and first touches) 300 MiB
// less. Do not modify either slice.
type Slots struct {
	Index []uint32
	IDs   []uint32
}

// Len is the number of slots (0: no table).
func (t Slots) Len() int { return len(t.Index) }

// At is slot i's backend ID (NoBackend: empty).
func (t Slots) At(i int) uint32 {
	if t.IDs == nil {
		return t.Index[i]
	}
	return t.IDs[t.Index[i]]
}

// List is every slot's backend ID: Index itself when IDs is nil, otherwise a new slice.
func (t Slots) List() []uint32 {
	if t.IDs == nil {
		return t.Index
	}
	out := make([]uint32, len(t.Index))
	for i, idx := range t.Index {
		out[i] = t.IDs[idx]
	}
	return out
}

// Equal reports whether t and o send every slot to the same backend ID.
func (t Slots) Equal(o Slots) bool {
	if len(t.Index) != len(o.Index) {
		return false
	}
	if t.IDs == nil && o.IDs == nil {
		return slices.Equal(t.Index, o.Index)
	}
	if len(t.Index) > 0 && &t.Index[0] == &o.Index[0] && slices.Equal(t.IDs, o.IDs) {
		return true // one shared slot array (SlotInterner), the same IDs
	}
	for i := range t.Index {
		if t.At(i) != o.At(i) {
			return false
		}
	}
	return true
}

// BackendUpdate is one backend id the dataplane must write.
type BackendUpdate struct {
	ID      uint32
	Backend Backend
}

// Diff is what changes in the dataplane between two desired states. Apply order that keeps
// every packet consistent: upsert backends, upsert VIPs (table swap), delete VIPs, delete
// backends.
type Diff struct {
	UpsertBackends []BackendUpdate
	UpsertVIPs     []VIPUpdate
	DeleteVIPs     []VIPUpdate
	DeleteBackends []uint32
}

// Empty reports whether the diff changes nothing.
func (d Diff) Empty() bool {
	return len(d.UpsertBackends)+len(d.UpsertVIPs)+len(d.DeleteVIPs)+len(d.DeleteBackends) == 0
}

type vipState struct {
	id       uint32
	mode     Mode
	backends []Backend // as last programmed, sorted by key (nil: restored, not known; a plan's is never nil)
	table    Slots
	shared   [32]byte // Sum of the SharedTable the table came from (zero: built here)
}

type backendState struct {
	id      uint32
	backend Backend // weight not meaningful here
}

// State is the load balancer's programmed state: VIP and backend ids and each VIP's current
// Maglev table (the base of the next incremental build). Not safe for concurrent use.
type State struct {
	tableSize   uint32
	maxVIPs     uint32
	maxBackends uint32
	vips        map[VIP]*vipState
	backends    map[string]*backendState
	nextVIP     uint32
	nextBackend uint32
}

// NewState returns an empty state. tableSize must be prime; ids are below maxVIPs and
// maxBackends (backend id 0 is never used).
func NewState(tableSize, maxVIPs, maxBackends uint32) (*State, error) {
	if !IsPrime(tableSize) {
		return nil, fmt.Errorf("maglev table size %d is not prime", tableSize)
	}
	if maxVIPs == 0 || maxBackends < 2 {
		return nil, fmt.Errorf("capacity: %d VIPs, %d backends", maxVIPs, maxBackends)
	}
	return &State{
		tableSize: tableSize, maxVIPs: maxVIPs, maxBackends: maxBackends,
		vips: map[VIP]*vipState{}, backends: map[string]*backendState{}, nextBackend: 1,
	}, nil
}

// TableSize is the Maglev table size of every VIP.
func (s *State) TableSize() uint32 { return s.tableSize }

// RestoredVIP is a VIP read back from the dataplane (pinned maps) after a restart.
type RestoredVIP struct {
	VIP   VIP
	ID    uint32
	Mode  Mode
	Table []uint32
}

// Restore seeds the state from what the dataplane still holds, so that a restarted agent keeps
// the ids and builds the next tables incrementally from the ones packets use now.
// backends maps id to the backend's address and port.
func (s *State) Restore(vips []RestoredVIP, backends map[uint32]Backend) {
	for id, b := range backends {
		s.backends[b.Key()] = &backendState{id: id, backend: b}
		s.nextBackend = max(s.nextBackend, id+1)
	}
	byID := make(map[uint32]Backend, len(backends))
	maps.Copy(byID, backends)
	for _, r := range vips {
		vs := &vipState{id: r.ID, mode: r.Mode}
		if len(r.Table) == int(s.tableSize) {
			vs.table = Slots{Index: r.Table}
		}
		// The weights are unknown until the next Plan; the table is what matters.
		s.vips[r.VIP] = vs
		s.nextVIP = max(s.nextVIP, r.ID+1)
	}
	s.nextVIP %= s.maxVIPs
	if s.nextBackend >= s.maxBackends {
		s.nextBackend = 1
	}
}

// Plan is a computed next state; Commit it once the dataplane applied its Diff.
type Plan struct {
	Diff     Diff
	vips     map[VIP]*vipState
	backends map[string]*backendState
	nextVIP  uint32
	nextBE   uint32
}

// Plan computes the dataplane changes that turn the current state into services. It changes
// nothing until Commit. Tables are built incrementally from the current ones, so a removed
// backend moves only its own slots.
func (s *State) Plan(services []Service) (*Plan, error) {
	p := &Plan{vips: make(map[VIP]*vipState, len(services)), backends: make(map[string]*backendState), nextVIP: s.nextVIP, nextBE: s.nextBackend}
	seen := make(map[VIP]string, len(services))
	for _, svc := range services {
		if err := svc.Validate(); err != nil {
			return nil, err
		}
		if other, dup := seen[svc.VIP]; dup {
			return nil, fmt.Errorf("service %q: VIP %s already used by service %q", svc.Name, svc.VIP, other)
		}
		seen[svc.VIP] = svc.Name
	}
	if uint32(len(services)) > s.maxVIPs {
		return nil, fmt.Errorf("%d services exceed the dataplane's %d VIPs", len(services), s.maxVIPs)
	}

	// Backend ids: keep existing ones, assign new ones.
	usedBE := make(map[uint32]bool, len(s.backends))
	for _, b := range s.backends {
		usedBE[b.id] = true
	}
	// Each service's backends by key, each key made once (Backend.Key allocates).
	sorted := make([][]keyedBackend, len(services))
	for i, svc := range services {
		sorted[i] = sortedByKey(svc.Backends)
	}
	for i, svc := range services {
		for _, kb := range sorted[i] {
			k, b := kb.key, kb.b
			if _, ok := p.backends[k]; ok {
				continue
			}
			if old, ok := s.backends[k]; ok {
				p.backends[k] = old
				continue
			}
			id, err := allocID(&p.nextBE, 1, s.maxBackends, usedBE)
			if err != nil {
				return nil, fmt.Errorf("service %q: backend %s: %w", svc.Name, k, err)
			}
			nb := &backendState{id: id, backend: Backend{Addr: b.Addr, Port: b.Port}}
			p.backends[k] = nb
			p.Diff.UpsertBackends = append(p.Diff.UpsertBackends, BackendUpdate{ID: id, Backend: nb.backend})
		}
	}

	usedVIP := make(map[uint32]bool, len(s.vips))
	for _, v := range s.vips {
		usedVIP[v.id] = true
	}
	memo := effectiveMemo{}
	for i, svc := range services {
		bs := make([]Backend, len(sorted[i]))
		for j, kb := range sorted[i] {
			bs[j] = kb.b
		}
		old := s.vips[svc.VIP]
		nv := &vipState{mode: svc.Mode, backends: bs}
		upd := VIPUpdate{VIP: svc.VIP, Mode: svc.Mode}
		if old != nil {
			nv.id = old.id
		} else {
			id, err := allocID(&p.nextVIP, 0, s.maxVIPs, usedVIP)
			if err != nil {
				return nil, fmt.Errorf("service %q: %w", svc.Name, err)
			}
			nv.id = id
			upd.New = true
		}
		upd.ID = nv.id
		if svc.Shared != nil {
			nv.shared = svc.Shared.Sum()
		}
		if old != nil && old.backends != nil && old.table.Len() > 0 && slices.Equal(old.backends, bs) && old.shared == nv.shared {
			nv.table = old.table
			if old.mode != svc.Mode {
				p.Diff.UpsertVIPs = append(p.Diff.UpsertVIPs, upd)
			}
		} else if svc.Shared != nil {
			t, err := s.sharedTable(svc.Shared, bs, p.backends, memo)
			if err != nil {
				return nil, fmt.Errorf("service %q: shared maglev table: %w", svc.Name, err)
			}
			nv.table = t
			if old == nil || !old.table.Equal(t) || old.mode != svc.Mode {
				upd.Table = t
				p.Diff.UpsertVIPs = append(p.Diff.UpsertVIPs, upd)
			}
		} else {
			ws := make([]Weighted, len(bs))
			for j, kb := range sorted[i] {
				ws[j] = Weighted{ID: p.backends[kb.key].id, Key: kb.key, Weight: kb.b.Weight}
			}
			var prev []uint32 // the base of the incremental build
			if old != nil {
				prev = old.table.List()
			}
			t, err := Table(s.tableSize, prev, ws)
			if err != nil {
				return nil, fmt.Errorf("service %q: maglev: %w", svc.Name, err)
			}
			nv.table = Slots{Index: t}
			upd.Table = nv.table
			p.Diff.UpsertVIPs = append(p.Diff.UpsertVIPs, upd)
		}
		p.vips[svc.VIP] = nv
	}

	for v, old := range s.vips {
		if _, keep := p.vips[v]; !keep {
			p.Diff.DeleteVIPs = append(p.Diff.DeleteVIPs, VIPUpdate{VIP: v, ID: old.id, Mode: old.mode})
		}
	}
	for k, old := range s.backends {
		if _, keep := p.backends[k]; !keep {
			p.Diff.DeleteBackends = append(p.Diff.DeleteBackends, old.id)
		}
	}
	slices.SortFunc(p.Diff.DeleteVIPs, func(a, b VIPUpdate) int { return int(a.ID) - int(b.ID) })
	slices.Sort(p.Diff.DeleteBackends)
	return p, nil
}

// sharedTable is t's effective table for bs in this host's backend IDs (ids by key): the shared
// slots, or the table Effective builds when this host's backends differ, with an ID per index.
// Every slot is checked to name a backend this host balances to. Effective tables come from
// memo: services whose shared slots are one array and whose views of their backends are the
// same get one array (built once), as their dataplane rings are then shared too. A service
// with no backend here gets the one empty table of its size.
func (s *State) sharedTable(t *SharedTable, bs []Backend, ids map[string]*backendState, memo effectiveMemo) (Slots, error) {
	if len(t.Slots) != int(s.tableSize) {
		return Slots{}, fmt.Errorf("generation %d has %d slots, the dataplane %d", t.Generation, len(t.Slots), s.tableSize)
	}
	if len(bs) == 0 {
		return Slots{Index: emptySlots(len(t.Slots)), IDs: []uint32{NoBackend}}, nil
	}
	eff, err := memo.effective(t, bs)
	if err != nil {
		return Slots{}, err
	}
	local := make([]uint32, len(t.Backends)+1) // index -> ID (0: none)
	for i, b := range t.Backends {
		if st := ids[b.Key]; b.Key != "" && st != nil {
			local[i+1] = st.id
		}
	}
	check := func(idx uint32) error {
		if int(idx) >= len(local) {
			return fmt.Errorf("generation %d: a slot names index %d of %d backends", t.Generation, idx, len(t.Backends))
		}
		if local[idx] == NoBackend {
			return fmt.Errorf("generation %d: a slot names backend %q, which this host does not balance to", t.Generation, t.Backends[idx-1].Key)
		}
		return nil
	}
	if len(eff) > 0 && len(t.Slots) > 0 && &eff[0] == &t.Slots[0] {
		// The shared slots themselves: the indices they name are known (usedIndices).
		for _, idx := range t.usedIndices() {
			if err := check(idx); err != nil {
				return Slots{}, err
			}
		}
		return Slots{Index: eff, IDs: local}, nil
	}
	for _, idx := range eff {
		if idx == NoBackend {
			continue
		}
		if err := check(idx); err != nil {
			return Slots{}, err
		}
	}
	return Slots{Index: eff, IDs: local}, nil
}

// effectiveMemo holds the effective tables one plan built, by shared slot array and view.
type effectiveMemo map[effectiveKey][]uint32

type effectiveKey struct {
	slots *uint32 // the shared table's slot array (interned: one per distinct content)
	n     int
	view  string // each backend's key and weight, in bs's order
}

// effective is t.Effective(bs), built once per slot array and view: the result depends only
// on t's slots and what Table takes (each backend's index in t, key and weight).
func (m effectiveMemo) effective(t *SharedTable, bs []Backend) ([]uint32, error) {
	ws, same, err := t.weighted(bs)
	switch {
	case err != nil:
		return nil, err
	case same:
		return t.Slots, nil
	case len(t.Slots) == 0:
		return Table(0, nil, ws) // refused: no table of 0 slots
	}
	var view strings.Builder
	for _, w := range ws {
		fmt.Fprintf(&view, "%d %s %d\x00", w.ID, w.Key, w.Weight)
	}
	key := effectiveKey{slots: &t.Slots[0], n: len(t.Slots), view: view.String()}
	if eff, ok := m[key]; ok {
		return eff, nil
	}
	eff, err := Table(uint32(len(t.Slots)), t.Slots, ws)
	if err != nil {
		return nil, err
	}
	m[key] = eff
	return eff, nil
}

// emptySlots returns the one all-NoBackend slot array of n slots (never written): the table of
// every VIP without a backend, whose dataplane rings are then one.
func emptySlots(n int) []uint32 {
	emptyMu.Lock()
	defer emptyMu.Unlock()
	if e, ok := empty[n]; ok {
		return e
	}
	e := make([]uint32, n)
	empty[n] = e
	return e
}

var (
	emptyMu sync.Mutex
	empty   = map[int][]uint32{}
)

// Commit makes a plan the current state.
func (s *State) Commit(p *Plan) {
	s.vips, s.backends, s.nextVIP, s.nextBackend = p.vips, p.backends, p.nextVIP, p.nextBE
}

var errFull = errors.New("no free id")

// allocID hands out ids round-robin from *next, skipping used ones, so a freed id is reused
// as late as possible (a stale connection-table entry never finds a stranger behind its id).
func allocID(next *uint32, lo, hi uint32, used map[uint32]bool) (uint32, error) {
	n := hi - lo
	for i := uint32(0); i < n; i++ {
		id := *next
		if id < lo || id >= hi {
			id = lo
		}
		*next = id + 1
		if !used[id] {
			used[id] = true
			return id, nil
		}
	}
	return 0, fmt.Errorf("%w: all %d in use", errFull, n)
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// VIPIDs returns each programmed VIP's dataplane id.
func (s *State) VIPIDs() map[VIP]uint32 {
	m := make(map[VIP]uint32, len(s.vips))
	for v, st := range s.vips {
		m[v] = st.id
	}
	return m
}

// BackendIDs returns each programmed backend's dataplane id by Backend.Key.
func (s *State) BackendIDs() map[string]uint32 {
	m := make(map[string]uint32, len(s.backends))
	for k, st := range s.backends {
		m[k] = st.id
	}
	return m
}

// TableOf returns the VIP's current Maglev table (empty if unknown).
func (s *State) TableOf(v VIP) Slots {
	if st := s.vips[v]; st != nil {
		return st.table
	}
	return Slots{}
}

// keyedBackend is a backend with its key (Backend.Key).
type keyedBackend struct {
	key string
	b   Backend
}

// sortedByKey returns bs with their keys, in the order of the keys compared as strings (the
// order tables are built in).
func sortedByKey(bs []Backend) []keyedBackend {
	ks := make([]keyedBackend, len(bs))
	for i, b := range bs {
		ks[i] = keyedBackend{b.Key(), b}
	}
	slices.SortFunc(ks, func(a, b keyedBackend) int { return cmpString(a.key, b.key) })
	return ks
}
