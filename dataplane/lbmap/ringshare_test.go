package lbmap

import (
	"net/netip"
	"testing"

	"github.com/govcloud/govcloud/lb"
)

// installBookkeeping is what installTables does with ringShare around the kernel update, with
// no maps (nil maps close as a no-op): find or add a ring for each table, then record the uses
// in the batch's order.
func installBookkeeping(s *ringShare, ups []lb.VIPUpdate) {
	var ids []uint32
	var rs []*ring
	for _, u := range ups {
		if u.Table.Len() == 0 {
			continue
		}
		h := s.hash(u.Table)
		r := s.find(h, u.Table)
		if r == nil {
			r = s.add(nil, u.Table, h)
		}
		ids, rs = append(ids, u.ID), append(rs, r)
	}
	s.useAll(ids, rs)
}

// TestRingShareReleaseBeforeUse: in one Set, VIP A moves off table T while VIP B (later in the
// batch) moves onto an equal table. B is given A's installed ring, but use(A) releases (closes
// and unlists) it before use(B) counts B: B then holds a closed ring no later VIP can find, and
// Tables() counts one table fewer than the kernel holds.
func TestRingShareReleaseBeforeUse(t *testing.T) {
	st, err := lb.NewState(251, 16, 16)
	if err != nil {
		t.Fatal(err)
	}
	s := newRingShare()
	x, y, z := be("198.18.1.1", 80, 1), be("198.18.1.2", 80, 1), be("198.18.1.3", 80, 1)
	mk := func(name string, port uint16, bs ...lb.Backend) lb.Service {
		return lb.Service{Name: name, VIP: lb.VIP{Addr: netip.MustParseAddr("198.51.100.1"), Port: port, Proto: lb.TCP}, Mode: lb.DSR, Backends: bs}
	}
	steps := [][]lb.Service{
		{mk("a", 80, x), mk("b", 81, z)},
		{mk("a", 80, x, y), mk("b", 81, x)},                 // b's new table (all x) equals a's old one
		{mk("a", 80, x, y), mk("b", 81, x), mk("c", 82, x)}, // c's table equals b's
	}
	want := [][2]int{{2, 2}, {2, 2}, {2, 3}}
	for i, svcs := range steps {
		p, err := st.Plan(svcs)
		if err != nil {
			t.Fatal(err)
		}
		installBookkeeping(&s, p.Diff.UpsertVIPs)
		st.Commit(p)
		if tables, vips := s.count(); tables != want[i][0] || vips != want[i][1] {
			t.Errorf("step %d: ringShare counts %d tables for %d VIPs, want %d for %d", i, tables, vips, want[i][0], want[i][1])
		}
		for _, sv := range svcs {
			id := st.VIPIDs()[sv.VIP]
			r := s.of[id]
			if r == nil || r.users <= 0 || s.find(r.hash, r.table) != r {
				t.Errorf("step %d: VIP %s (id %d) uses a ring that is released (users %d) or not findable", i, sv.Name, id, r.users)
			}
		}
	}
}
