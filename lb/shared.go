package lb

// Shared Maglev tables: one table per service that every host holds byte for byte (issue 19).
//
// Table is incremental, so its result depends on the sequence of backend sets it was fed. A host
// that misses intermediate states (a coalesced long poll, a restart without pins, a new host)
// would build a different table than its peers, and a flow that the router's ECMP moves from one
// host to another would then land on another backend. A SharedTable is therefore computed in one
// place that sees every change in order (the controller), from its own previous table, and hosts
// copy it. Its slots name backends by a per-service index (1-based position in Backends) rather
// than by a host's dataplane IDs, which every host allocates for itself; State.Plan translates
// indices to local IDs when it writes the table.

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/maphash"
	"io"
	"maps"
	"slices"
	"sync"
	"unsafe"
)

// SharedBackend is one backend of a SharedTable: its Key (Backend.Key) and weight. Key "" marks
// an index that is free (its backend was removed); a free index holds no slot.
type SharedBackend struct {
	Key    string `json:"key"`
	Weight uint32 `json:"weight"`
}

// SharedTable is a service's Maglev table in a form every host shares.
//
// Generation is the controller's store revision at which the table last changed (monotonic,
// never reused, also across a service's deletion and re-creation). Backends[i] is backend index
// i+1. Slots has the table size, each slot the index of its backend (0: empty). SlotGen, kept
// only by the controller, is per slot the Generation at which the slot last changed; it makes a
// delta against any older generation.
type SharedTable struct {
	Generation uint64
	Backends   []SharedBackend
	Slots      []uint32
	SlotGen    []uint64

	sum  *[32]byte // Sum, computed once: a shared table is not modified after it is built
	used []uint32  // the nonzero indices Slots names, ascending (nil: not worked out yet)
}

// usedIndices is the nonzero indices t's slots name, ascending, worked out once.
func (t *SharedTable) usedIndices() []uint32 {
	if t.used == nil {
		t.used = usedIndices(t.Slots, len(t.Backends))
	}
	return t.used
}

// usedIndices is the nonzero values of slots, ascending (empty, not nil, when there are none).
func usedIndices(slots []uint32, hint int) []uint32 {
	seen := make([]bool, min(hint, 1<<16)+1)
	var far map[uint32]bool // values past seen (a table built by hand may name any)
	used := []uint32{}
	for _, v := range slots {
		switch {
		case v == 0:
		case int(v) < len(seen):
			if !seen[v] {
				seen[v] = true
				used = append(used, v)
			}
		case !far[v]:
			if far == nil {
				far = map[uint32]bool{}
			}
			far[v] = true
			used = append(used, v)
		}
	}
	slices.Sort(used)
	return used
}

// Sum is the table's SHA-256: over the slot array (each slot's index as 4 bytes little endian)
// followed by each backend's index, key and weight, so the sums of two hosts are equal exactly
// when they send every flow hash to the same backend key. The generation is not part of it.
func (t *SharedTable) Sum() [32]byte {
	if t.sum != nil {
		return *t.sum
	}
	h := sha256.New()
	writeSlots(h, t.Slots)
	return t.finishSum(h)
}

// writeSlots writes the slot array's part of a table's hash: each slot's index as 4 bytes
// little endian.
func writeSlots(h hash.Hash, slots []uint32) {
	buf := make([]byte, 4*4096)
	for i := 0; i < len(slots); i += 4096 {
		part := slots[i:min(i+4096, len(slots))]
		for j, v := range part {
			binary.LittleEndian.PutUint32(buf[4*j:], v)
		}
		h.Write(buf[:4*len(part)])
	}
}

// finishSum adds the backends to h, which holds the slots (writeSlots), and keeps the sum.
func (t *SharedTable) finishSum(h hash.Hash) [32]byte {
	for i, b := range t.Backends {
		fmt.Fprintf(h, "\x00%d\x00%s\x00%d", i+1, b.Key, b.Weight)
	}
	var s [32]byte
	h.Sum(s[:0])
	t.sum = &s
	return s
}

// index maps the key of each backend holding an index to its index.
func (t *SharedTable) index() map[string]int {
	m := make(map[string]int, len(t.Backends))
	for i, b := range t.Backends {
		if b.Key != "" {
			m[b.Key] = i + 1
		}
	}
	return m
}

// NextShared builds the table that follows prev (nil: none yet) when the service's backends
// become backends, at generation gen (> prev.Generation). Backends keep their index; a new one
// takes the lowest index that was already free in prev, else the next one, so an index never
// passes to another backend in the step that frees it (and the new backend inherits no slots).
// The slots come from Table(size, prev.Slots, …): 0 collateral remaps, with Table's guarantees.
// It returns the new table and the number of slots that changed. Errors: those of Table, and
// a backend listed twice.
func NextShared(size uint32, prev *SharedTable, backends []Backend, gen uint64) (*SharedTable, int, error) {
	if prev != nil && gen <= prev.Generation {
		return nil, 0, fmt.Errorf("generation %d does not follow %d", gen, prev.Generation)
	}
	next := &SharedTable{Generation: gen}
	var prevIdx map[string]int
	var prevSlots []uint32
	if prev != nil && len(prev.Slots) == int(size) {
		prevIdx = prev.index()
		prevSlots = prev.Slots
		next.Backends = make([]SharedBackend, len(prev.Backends)) // all free until kept below
	}
	want := make(map[string]uint32, len(backends))
	for _, b := range backends {
		k := b.Key()
		if _, dup := want[k]; dup {
			return nil, 0, fmt.Errorf("backend %s listed twice", k)
		}
		want[k] = b.Weight
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if i, ok := prevIdx[k]; ok {
			next.Backends[i-1] = SharedBackend{Key: k, Weight: want[k]}
		}
	}
	free := 0 // next candidate index-1 among those free in prev
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if _, ok := prevIdx[k]; ok {
			continue
		}
		for free < len(next.Backends) && (prev == nil || prev.Backends[free].Key != "" || next.Backends[free].Key != "") {
			free++
		}
		if free < len(next.Backends) {
			next.Backends[free] = SharedBackend{Key: k, Weight: want[k]}
			continue
		}
		next.Backends = append(next.Backends, SharedBackend{Key: k, Weight: want[k]})
		free = len(next.Backends)
	}
	for len(next.Backends) > 0 && next.Backends[len(next.Backends)-1].Key == "" {
		next.Backends = next.Backends[:len(next.Backends)-1]
	}
	ws := make([]Weighted, 0, len(want))
	for i, b := range next.Backends {
		if b.Key != "" {
			ws = append(ws, Weighted{ID: uint32(i + 1), Key: b.Key, Weight: b.Weight})
		}
	}
	slots, err := Table(size, prevSlots, ws)
	if err != nil {
		return nil, 0, err
	}
	next.Slots = slots
	next.SlotGen = make([]uint64, size)
	changed := 0
	for s := range slots {
		if prevSlots == nil || prevSlots[s] != slots[s] {
			next.SlotGen[s] = gen
			changed++
		} else if prev.SlotGen != nil {
			next.SlotGen[s] = prev.SlotGen[s]
		}
	}
	return next, changed, nil
}

// Effective is the index table a host writes when backends (its view: the shared set less
// backends its health checks hold down, weights as it sees them) differ from the table's: built
// by Table from t's slots, so only the slots of the backends that differ move, and two hosts with
// the same view write the same table. With the same set and weights it is t.Slots itself.
// Errors: a backend t does not know (the host's desired state is newer than the table), and
// those of Table.
func (t *SharedTable) Effective(backends []Backend) ([]uint32, error) {
	ws, same, err := t.weighted(backends)
	if err != nil || same {
		return t.Slots, err
	}
	return Table(uint32(len(t.Slots)), t.Slots, ws)
}

// weighted is backends as Table takes them against t (ID: the backend's index in t), and
// whether they are t's own backends with t's weights (the effective table is then t.Slots).
// Effective's result depends on these and t.Slots alone. Error: a backend t does not know.
func (t *SharedTable) weighted(backends []Backend) (ws []Weighted, same bool, err error) {
	idx := t.index()
	same = len(backends) == len(idx)
	ws = make([]Weighted, 0, len(backends))
	for _, b := range backends {
		k := b.Key()
		i, ok := idx[k]
		if !ok {
			return nil, false, fmt.Errorf("backend %s is not in the shared table of generation %d", k, t.Generation)
		}
		if t.Backends[i-1].Weight != b.Weight {
			same = false
		}
		ws = append(ws, Weighted{ID: uint32(i), Key: k, Weight: b.Weight})
	}
	return ws, same, nil
}

// Delta is the part of a SharedTable a host fetches: the whole backend list, and either every
// slot (Full) or the slots that changed after the generation the host has. Slots is compressed:
// DEFLATE of uvarints — Full: each slot's index in order; otherwise the count of changed slots,
// then per changed slot the gap from the previous changed slot (the first from -1) and its index.
type Delta struct {
	Generation uint64          `json:"generation"`
	Since      uint64          `json:"since,omitempty"` // the generation the delta applies to (Full: 0)
	Full       bool            `json:"full,omitempty"`
	Size       uint32          `json:"size"`
	Backends   []SharedBackend `json:"backends"`
	Slots      []byte          `json:"slots"`
	Sum        []byte          `json:"sum"` // SharedTable.Sum of the result
}

// DeltaSince encodes what a host holding generation since (0: nothing) needs to reach t: the
// changed slots, or every slot when that is smaller (or t has no SlotGen).
func (t *SharedTable) DeltaSince(since uint64) Delta {
	sum := t.Sum()
	d := Delta{Generation: t.Generation, Since: since, Size: uint32(len(t.Slots)), Backends: t.Backends, Sum: sum[:]}
	var changed []int
	if since > 0 && t.SlotGen != nil {
		for s, g := range t.SlotGen {
			if g > since {
				changed = append(changed, s)
			}
		}
	}
	// A changed slot costs about two uvarints against one per slot for a full table.
	if since == 0 || t.SlotGen == nil || 2*len(changed) >= len(t.Slots) {
		d.Full, d.Since = true, 0
		d.Slots = deflateUvarints(len(t.Slots), func(put func(uint64)) {
			for _, v := range t.Slots {
				put(uint64(v))
			}
		})
		return d
	}
	d.Slots = deflateUvarints(1+2*len(changed), func(put func(uint64)) {
		put(uint64(len(changed)))
		last := -1
		for _, s := range changed {
			put(uint64(s - last - 1))
			put(uint64(t.Slots[s]))
			last = s
		}
	})
	return d
}

// ErrSumMismatch means an applied delta did not give the controller's table: the host's copy was
// not the generation it thought; fetch the full table.
var ErrSumMismatch = errors.New("maglev table sum mismatch")

// Apply returns the table d describes, applied to have (the host's copy of generation d.Since;
// ignored for a full table), after checking its SHA-256 against d.Sum. have is not modified.
// Errors: a malformed delta (naming the slot), a delta for another generation or size than
// have, ErrSumMismatch.
func (d Delta) Apply(have *SharedTable) (*SharedTable, error) {
	return d.ApplyInterned(have, nil)
}

// ApplyInterned is Apply keeping the result's slots in in (nil: none): a result whose slots
// equal those of a table in already shares them, and no new array is made for it.
func (d Delta) ApplyInterned(have *SharedTable, in *SlotInterner) (*SharedTable, error) {
	if d.Size == 0 || d.Size > 1<<24 {
		return nil, fmt.Errorf("table generation %d: size %d out of range", d.Generation, d.Size)
	}
	out := &SharedTable{Generation: d.Generation, Backends: d.Backends}
	nb := uint64(len(d.Backends))
	if d.Full {
		if dec := in.decoded(d.Slots, d.Size); dec != nil {
			return d.applyDecoded(out, dec)
		}
	}
	r := newUvarintReader(d.Slots, int64(d.Size)*20+64)
	defer r.close()
	if d.Full {
		out.Slots = in.buffer(int(d.Size))
		for s := range out.Slots {
			v, err := r.next()
			if err != nil || v > nb {
				return nil, fmt.Errorf("table generation %d: slot %d: bad index (%d of %d backends): %v", d.Generation, s, v, nb, err)
			}
			out.Slots[s] = uint32(v)
		}
	} else {
		if have == nil || have.Generation != d.Since || len(have.Slots) != int(d.Size) {
			return nil, fmt.Errorf("table generation %d: delta applies to generation %d of %d slots", d.Generation, d.Since, d.Size)
		}
		out.Slots = append(in.buffer(0), have.Slots...)
		n, err := r.next()
		if err != nil || n > uint64(d.Size) {
			return nil, fmt.Errorf("table generation %d: bad count of changed slots (%d): %v", d.Generation, n, err)
		}
		s := int64(-1)
		for range n {
			gap, err1 := r.next()
			v, err2 := r.next()
			s += int64(gap) + 1
			if err := errors.Join(err1, err2); err != nil || s >= int64(d.Size) || v > nb {
				return nil, fmt.Errorf("table generation %d: changed slot %d: bad slot or index %d: %v", d.Generation, s, v, err)
			}
			out.Slots[s] = uint32(v)
		}
	}
	out.used = usedIndices(out.Slots, len(d.Backends))
	if err := d.checkUsed(out.used); err != nil {
		return nil, err
	}
	h := sha256.New()
	writeSlots(h, out.Slots)
	var mid []byte // the hash state after the slots, kept with a full table's stream
	if d.Full && in != nil {
		mid, _ = h.(encoding.BinaryMarshaler).MarshalBinary()
	}
	if sum := out.finishSum(h); !bytes.Equal(sum[:], d.Sum) {
		return nil, fmt.Errorf("table generation %d (from %d): %w", d.Generation, d.Since, ErrSumMismatch)
	}
	out.Slots = in.intern(out.Slots)
	if mid != nil {
		in.remember(d.Slots, out.Slots, out.used, mid)
	}
	return out, nil
}

// checkUsed checks that each index the slots use (ascending) names one of d's backends that
// holds it (not a free index).
func (d Delta) checkUsed(used []uint32) error {
	for _, v := range used {
		if int(v) > len(d.Backends) {
			return fmt.Errorf("table generation %d: a slot names index %d of %d backends", d.Generation, v, len(d.Backends))
		}
		if d.Backends[v-1].Key == "" {
			return fmt.Errorf("table generation %d: a slot names free index %d", d.Generation, v)
		}
	}
	return nil
}

// applyDecoded is ApplyInterned of a full delta whose slot stream was decoded before (dec):
// the same checks on this delta's backends and hash, without inflating the slots again.
func (d Delta) applyDecoded(out *SharedTable, dec *decodedStream) (*SharedTable, error) {
	if err := d.checkUsed(dec.used); err != nil {
		return nil, err
	}
	out.Slots, out.used = dec.slots, dec.used
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(dec.mid); err != nil {
		return nil, fmt.Errorf("table generation %d: %w", d.Generation, err)
	}
	if sum := out.finishSum(h); !bytes.Equal(sum[:], d.Sum) {
		return nil, fmt.Errorf("table generation %d (from %d): %w", d.Generation, d.Since, ErrSumMismatch)
	}
	return out, nil
}

// decodedStream is a full delta's compressed slot stream decoded before: its interned slots,
// the indices they use, and the hash state after the slots (writeSlots).
type decodedStream struct {
	comp  []byte
	slots []uint32
	used  []uint32 // the nonzero indices in slots, ascending
	mid   []byte   // sha256 state after writeSlots(slots), as MarshalBinary gives it
}

// SlotInterner keeps one copy of each distinct slot array of the tables a host holds. Services
// with the same backends (several ports of one VM, every single-backend service) have equal
// slots; held once, 1200 tables of 65537 slots on 120 VMs take 30 MiB instead of 300. Slot
// arrays are never modified once made, so sharing them is safe. Not safe for concurrent use;
// the zero value is ready.
//
// It also remembers which compressed stream of a full delta gave which array, so a table
// fetched again, or another table with the same slots, is not inflated and hashed again.
type SlotInterner struct {
	seed    maphash.Seed
	byHash  map[uint64][][]uint32
	hashOf  map[*uint32]uint64 // an interned array's first slot -> its hash
	scratch []uint32           // the last array found equal to an interned one, reused
	streams map[uint64][]*decodedStream
}

// decoded returns what the full delta stream comp of size slots decoded to, or nil.
func (in *SlotInterner) decoded(comp []byte, size uint32) *decodedStream {
	if in == nil || in.streams == nil {
		return nil
	}
	for _, e := range in.streams[maphash.Bytes(in.seed, comp)] {
		if len(e.slots) == int(size) && bytes.Equal(e.comp, comp) {
			return e
		}
	}
	return nil
}

// remember records that the full delta stream comp decoded (and verified) to the interned
// slots, which name the indices used, with the hash state mid after the slots.
func (in *SlotInterner) remember(comp []byte, slots, used []uint32, mid []byte) {
	if in == nil || len(slots) == 0 || in.decoded(comp, uint32(len(slots))) != nil {
		return
	}
	if in.streams == nil {
		in.streams = map[uint64][]*decodedStream{}
	}
	k := maphash.Bytes(in.seed, comp)
	in.streams[k] = append(in.streams[k], &decodedStream{comp: bytes.Clone(comp), slots: slots, used: used, mid: mid})
}

// buffer returns an array of n slots to decode into (nil interner: a new one).
func (in *SlotInterner) buffer(n int) []uint32 {
	if in == nil || cap(in.scratch) < n {
		return make([]uint32, n)
	}
	return in.scratch[:n]
}

// intern returns the interned array equal to s, or s, interned (nil interner or empty s: s).
func (in *SlotInterner) intern(s []uint32) []uint32 {
	if in == nil || len(s) == 0 {
		return s
	}
	if in.byHash == nil {
		in.seed, in.byHash, in.hashOf = maphash.MakeSeed(), map[uint64][][]uint32{}, map[*uint32]uint64{}
	}
	h := maphash.Bytes(in.seed, unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), 4*len(s)))
	for _, c := range in.byHash[h] {
		if slices.Equal(c, s) {
			if len(in.scratch) == 0 || &in.scratch[0] != &s[0] {
				in.scratch = s
			}
			return c
		}
	}
	in.byHash[h] = append(in.byHash[h], s)
	in.hashOf[&s[0]] = h
	if len(in.scratch) > 0 && &in.scratch[0] == &s[0] {
		in.scratch = nil // s is held now
	}
	return s
}

// Keep forgets every interned array that is not among held (the slots of the tables still
// held), so a dropped table's slots can be freed.
func (in *SlotInterner) Keep(held func(yield func([]uint32) bool)) {
	if in == nil || in.byHash == nil {
		return
	}
	byHash, hashOf := map[uint64][][]uint32{}, map[*uint32]uint64{}
	for s := range held {
		if len(s) == 0 {
			continue
		}
		h, ok := in.hashOf[&s[0]]
		if _, dup := hashOf[&s[0]]; !ok || dup {
			continue
		}
		byHash[h], hashOf[&s[0]] = append(byHash[h], s), h
	}
	in.byHash, in.hashOf = byHash, hashOf
	for k, es := range in.streams {
		es = slices.DeleteFunc(es, func(e *decodedStream) bool { _, ok := hashOf[&e.slots[0]]; return !ok })
		if len(es) == 0 {
			delete(in.streams, k)
		} else {
			in.streams[k] = es
		}
	}
}

// deflaters keeps DEFLATE writers between tables: a new writer allocates over 500 KiB of
// compressor state, and the controller encodes two streams per table it builds.
var deflaters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestSpeed)
	return w
}}

func deflateUvarints(n int, emit func(put func(uint64))) []byte {
	var raw []byte
	raw = slices.Grow(raw, n*2)
	emit(func(v uint64) { raw = binary.AppendUvarint(raw, v) })
	var out bytes.Buffer
	w := deflaters.Get().(*flate.Writer)
	w.Reset(&out)
	_, _ = w.Write(raw)
	_ = w.Close()
	deflaters.Put(w)
	return out.Bytes()
}

// uvarintReader reads uvarints from a DEFLATE stream inflated at once into a pooled buffer: a
// host inflates one table per service it balances, and a fresh reader and buffer each time
// (about 40 KiB of inflate state, byte-at-a-time reads) cost more than the decoding itself.
// Call close when done; the reader must not be used after.
type uvarintReader struct {
	in  *inflater
	b   []byte // what is left of the inflated stream
	err error  // why inflating stopped before the end (nil: the stream ended)
}

type inflater struct {
	src bytes.Reader
	r   io.ReadCloser // flate reader, Reset for each stream
	buf []byte
}

var inflaters = sync.Pool{New: func() any {
	in := &inflater{}
	in.r = flate.NewReader(&in.src)
	return in
}}

// newUvarintReader inflates b, at most limit bytes of it uncompressed (a small input cannot make
// the reader inflate gigabytes).
func newUvarintReader(b []byte, limit int64) *uvarintReader {
	in := inflaters.Get().(*inflater)
	in.src.Reset(b)
	u := &uvarintReader{in: in}
	if err := in.r.(flate.Resetter).Reset(&in.src, nil); err != nil {
		u.err = err
		return u
	}
	buf := in.buf[:0]
	for int64(len(buf)) < limit {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(max(2*cap(buf), 64<<10), int(limit))-len(buf))
		}
		n, err := in.r.Read(buf[len(buf):min(cap(buf), int(limit))])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			u.err = err
			break
		}
	}
	in.buf, u.b = buf, buf
	return u
}

// next returns the next uvarint. Errors: io.EOF at the end of the stream, io.ErrUnexpectedEOF
// inside a value, the inflate error where the stream broke, an overflow.
func (u *uvarintReader) next() (uint64, error) {
	v, n := binary.Uvarint(u.b)
	switch {
	case n > 0:
		u.b = u.b[n:]
		return v, nil
	case n < 0:
		return 0, errors.New("uvarint overflows a 64-bit integer")
	case u.err != nil:
		return 0, u.err
	case len(u.b) > 0:
		return 0, io.ErrUnexpectedEOF
	}
	return 0, io.EOF
}

// close returns the buffer and inflate state to the pool.
func (u *uvarintReader) close() {
	if u.in == nil {
		return
	}
	if cap(u.in.buf) <= 4<<20 { // keep what a 65537-slot table needs, not an outlier's
		inflaters.Put(u.in)
	}
	u.in, u.b = nil, nil
}

// EncodeSlotGen is t.SlotGen in the form the controller stores next to the full table:
// DEFLATE of one uvarint per slot, Generation minus the slot's generation. Without SlotGen it
// is nil.
func (t *SharedTable) EncodeSlotGen() []byte {
	if t.SlotGen == nil {
		return nil
	}
	return deflateUvarints(len(t.SlotGen), func(put func(uint64)) {
		for _, g := range t.SlotGen {
			put(t.Generation - min(g, t.Generation))
		}
	})
}

// DecodeSlotGen sets t.SlotGen from EncodeSlotGen's b (nil: none). Errors: b malformed or
// shorter than the table.
func (t *SharedTable) DecodeSlotGen(b []byte) error {
	if b == nil {
		t.SlotGen = nil
		return nil
	}
	r := newUvarintReader(b, int64(len(t.Slots))*10+64)
	defer r.close()
	sg := make([]uint64, len(t.Slots))
	for s := range sg {
		v, err := r.next()
		if err != nil || v > t.Generation {
			return fmt.Errorf("table generation %d: slot %d: bad slot generation (%d back): %v", t.Generation, s, v, err)
		}
		sg[s] = t.Generation - v
	}
	t.SlotGen = sg
	return nil
}
