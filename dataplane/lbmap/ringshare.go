package lbmap

import (
	"encoding/binary"
	"hash/maphash"
	"slices"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/govcloud/govcloud/lb"
)

// ringShare lets VIPs whose Maglev tables are the same point to one installed table instead
// of a copy each: services with the same backends (one VM serving several ports, every
// single-backend service of one VM) have the same table in this host's backend IDs. A table
// of 65537 slots is 512 KiB of kernel memory (an array's values are 8 bytes apart), so 1200
// VIPs on 120 VMs hold 60 MiB instead of 600. An installed table is never written again (a
// change installs a new one), so sharing it changes no packet's backend. A shared table's map
// stays open while a VIP uses it.
type ringShare struct {
	seed   maphash.Seed
	byHash map[uint64][]*ring
	of     map[uint32]*ring // VIP id -> the table installed for it by this process
}

// ring is one installed table and the VIPs using it.
type ring struct {
	m     *ebpf.Map
	table lb.Slots
	hash  uint64
	users int
}

func newRingShare() ringShare {
	return ringShare{seed: maphash.MakeSeed(), byHash: map[uint64][]*ring{}, of: map[uint32]*ring{}}
}

// hash is t's hash: a table translated from a shared one by its slot array's address and
// length and its IDs (a host holds each distinct shared slot array once, lb.SlotInterner, and
// a ring keeps its array alive, so the address names the content); any other table by its
// backend IDs, slot by slot. Equal tables of the two forms hash apart: they are only not
// shared.
func (s *ringShare) hash(t lb.Slots) uint64 {
	var h maphash.Hash
	h.SetSeed(s.seed)
	if t.IDs != nil && t.Len() > 0 {
		var b [16]byte
		binary.LittleEndian.PutUint64(b[:], uint64(uintptr(unsafe.Pointer(&t.Index[0]))))
		binary.LittleEndian.PutUint64(b[8:], uint64(t.Len()))
		h.Write(b[:])
		for _, id := range t.IDs {
			binary.LittleEndian.PutUint32(b[:], id)
			h.Write(b[:4])
		}
		return h.Sum64()
	}
	var buf [4 * 1024]byte
	n := 0
	for i := range t.Len() {
		binary.LittleEndian.PutUint32(buf[n:], t.At(i))
		if n += 4; n == len(buf) {
			h.Write(buf[:])
			n = 0
		}
	}
	h.Write(buf[:n])
	return h.Sum64()
}

// find returns an installed table equal to t (whose hash is h), or nil.
func (s *ringShare) find(h uint64, t lb.Slots) *ring {
	for _, r := range s.byHash[h] {
		if r.table.Equal(t) {
			return r
		}
	}
	return nil
}

// add records m, just installed with table t (hash h), and returns it.
func (s *ringShare) add(m *ebpf.Map, t lb.Slots, h uint64) *ring {
	r := &ring{m: m, table: t, hash: h}
	s.byHash[h] = append(s.byHash[h], r)
	return r
}

// use records that VIP id now uses r, releasing the table it used before.
func (s *ringShare) use(id uint32, r *ring) {
	r.users++
	old := s.of[id]
	s.of[id] = r
	if old != nil {
		s.release(old)
	}
}

// useAll records that each VIP ids[i] now uses rs[i] (one batch): every new use is counted
// before any table is released, so a table one VIP of the batch leaves and another takes
// stays open and findable.
func (s *ringShare) useAll(ids []uint32, rs []*ring) {
	for _, r := range rs {
		r.users++
	}
	for i, id := range ids {
		old := s.of[id]
		s.of[id] = rs[i]
		if old != nil {
			s.release(old)
		}
	}
}

// drop records that VIP id uses no table any more.
func (s *ringShare) drop(id uint32) {
	if old := s.of[id]; old != nil {
		delete(s.of, id)
		s.release(old)
	}
}

func (s *ringShare) release(r *ring) {
	if r.users--; r.users > 0 {
		return
	}
	s.byHash[r.hash] = slices.DeleteFunc(s.byHash[r.hash], func(x *ring) bool { return x == r })
	if len(s.byHash[r.hash]) == 0 {
		delete(s.byHash, r.hash)
	}
	_ = r.m.Close()
}

// closeUnused closes the tables no VIP uses (made for an update that failed).
func (s *ringShare) closeUnused() {
	for h, rs := range s.byHash {
		rs = slices.DeleteFunc(rs, func(r *ring) bool {
			if r.users > 0 {
				return false
			}
			_ = r.m.Close()
			return true
		})
		if len(rs) == 0 {
			delete(s.byHash, h)
		} else {
			s.byHash[h] = rs
		}
	}
}

// closeAll closes every table map this process holds open (the installed tables stay in the
// pinned rings map).
func (s *ringShare) closeAll() {
	for _, rs := range s.byHash {
		for _, r := range rs {
			_ = r.m.Close()
		}
	}
	s.byHash, s.of = map[uint64][]*ring{}, map[uint32]*ring{}
}

// count is the number of distinct tables installed by this process, and of VIPs using them.
func (s *ringShare) count() (tables, vips int) {
	for _, rs := range s.byHash {
		tables += len(rs)
	}
	return tables, len(s.of)
}
