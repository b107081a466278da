package lbmap

import (
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/lb"
)

// TestTablesWrittenThroughMapping: a Maglev table written through the memory mapping reads
// back slot for slot as the program sees it (array values 8 bytes apart), and a rings map
// pinned by an earlier build, whose template is not memory-mappable, still takes tables: the
// load balancer falls back to writing them slot by slot.
func TestTablesWrittenThroughMapping(t *testing.T) {
	netnstest.RequirePrivileged(t)
	for _, tc := range []struct {
		name      string
		plainPins bool
	}{{"this build's template", false}, {"an earlier build's template", true}} {
		t.Run(tc.name, func(t *testing.T) {
			dp, err := Load(Options{ConnTableSize: 1 << 12, TableSize: 251})
			if err != nil {
				t.Fatal(err)
			}
			defer dp.Close()
			if tc.plainPins {
				old, err := ebpf.NewMap(&ebpf.MapSpec{Name: "rings", Type: ebpf.ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: MaxVIPs,
					InnerMap: &ebpf.MapSpec{Name: "ring", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 251}})
				if err != nil {
					t.Fatal(err)
				}
				dp.objs.Rings.Close()
				dp.objs.Rings = old
			}
			svcs := []lb.Service{
				svc("a", 0, "198.51.100.1", 80, lb.TCP, lb.DSR, be("198.18.1.1", 80, 1), be("198.18.1.2", 80, 3)),
				svc("b", 7, "198.51.100.2", 443, lb.TCP, lb.DSR, be("198.18.1.3", 80, 1)),
			}
			if err := dp.Set(svcs); err != nil {
				t.Fatal(err)
			}
			if dp.plainTables != tc.plainPins {
				t.Errorf("slot-by-slot tables %v, want %v", dp.plainTables, tc.plainPins)
			}
			for _, s := range svcs {
				want := slices.Clone(dp.state.TableOf(s.VIP).List())
				got, err := dp.readTable(dp.state.VIPIDs()[s.VIP])
				if err != nil {
					t.Fatal(err)
				}
				if len(want) != 251 || !slices.Equal(got, want) {
					t.Fatalf("%s: table read back differs from the one written (%d slots, want 251)", s.Name, len(got))
				}
			}
		})
	}
}

// TestTablesShared: VIPs whose tables are the same (the same backends, here of two ports and of
// two protocols) point to one installed table; a VIP whose backends change gets a table of its
// own while the others keep theirs, and a table no VIP uses any more is released. Every VIP
// reads back its own plan's table at every step.
func TestTablesShared(t *testing.T) {
	netnstest.RequirePrivileged(t)
	dp, err := Load(Options{ConnTableSize: 1 << 12, TableSize: 251})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	web := []lb.Backend{be("198.18.1.1", 8080, 1), be("198.18.1.2", 8080, 1)}
	other := []lb.Backend{be("198.18.1.3", 8080, 1)}
	steps := []struct {
		name         string
		svcs         []lb.Service
		tables, vips int // distinct tables installed, VIPs using them
	}{
		{"80 and 443 on the same backends", []lb.Service{
			svc("http", 0, "198.51.100.1", 80, lb.TCP, lb.DSR, web...),
			svc("https", 0, "198.51.100.1", 443, lb.TCP, lb.DSR, web...),
		}, 1, 2},
		{"a UDP VIP and another service's backend", []lb.Service{
			svc("http", 0, "198.51.100.1", 80, lb.TCP, lb.DSR, web...),
			svc("https", 0, "198.51.100.1", 443, lb.TCP, lb.DSR, web...),
			svc("quic", 0, "198.51.100.1", 443, lb.UDP, lb.DSR, web...),
			svc("db", 0, "198.51.100.2", 5432, lb.TCP, lb.DSR, other...),
		}, 2, 4},
		{"https loses a backend", []lb.Service{
			svc("http", 0, "198.51.100.1", 80, lb.TCP, lb.DSR, web...),
			svc("https", 0, "198.51.100.1", 443, lb.TCP, lb.DSR, web[0]),
			svc("quic", 0, "198.51.100.1", 443, lb.UDP, lb.DSR, web...),
			svc("db", 0, "198.51.100.2", 5432, lb.TCP, lb.DSR, other...),
		}, 3, 4},
		{"db and https removed", []lb.Service{
			svc("http", 0, "198.51.100.1", 80, lb.TCP, lb.DSR, web...),
			svc("quic", 0, "198.51.100.1", 443, lb.UDP, lb.DSR, web...),
		}, 1, 2},
		{"quic gets https's old table's backends", []lb.Service{
			svc("http", 0, "198.51.100.1", 80, lb.TCP, lb.DSR, web...),
			svc("quic", 0, "198.51.100.1", 443, lb.UDP, lb.DSR, web[0]),
		}, 2, 2},
	}
	for _, st := range steps {
		if err := dp.Set(st.svcs); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if tables, vips := dp.Tables(); tables != st.tables || vips != st.vips {
			t.Errorf("%s: %d tables for %d VIPs, want %d for %d", st.name, tables, vips, st.tables, st.vips)
		}
		inner := map[uint32]string{} // inner map ID -> service whose table it is
		for _, s := range st.svcs {
			id := dp.state.VIPIDs()[s.VIP]
			got, err := dp.readTable(id)
			if err != nil {
				t.Fatal(err)
			}
			if want := dp.state.TableOf(s.VIP).List(); len(want) != 251 || !slices.Equal(got, want) {
				t.Fatalf("%s: %s reads back another table than its plan's", st.name, s.Name)
			}
			var innerID uint32
			if err := dp.objs.Rings.Lookup(id, &innerID); err != nil {
				t.Fatal(err)
			}
			inner[innerID] = s.Name
		}
		if len(inner) != st.tables {
			t.Errorf("%s: the rings map holds %d distinct tables, want %d", st.name, len(inner), st.tables)
		}
	}
}

// TestSharedTablesShared: VIPs programmed from controller tables (lb.SharedTable) whose slots
// a host holds once share one installed table when their backends are the same, and not when
// only the slots are: every VIP reads back its own table.
func TestSharedTablesShared(t *testing.T) {
	netnstest.RequirePrivileged(t)
	dp, err := Load(Options{ConnTableSize: 1 << 12, TableSize: 251})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	var in lb.SlotInterner
	shared := func(bs ...lb.Backend) *lb.SharedTable {
		t.Helper()
		built, _, err := lb.NextShared(251, nil, bs, 1)
		if err != nil {
			t.Fatal(err)
		}
		got, err := built.DeltaSince(0).ApplyInterned(nil, &in)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	a, b := be("198.18.1.1", 80, 1), be("198.18.1.2", 80, 1)
	withTable := func(s lb.Service) lb.Service { s.Shared = shared(s.Backends...); return s }
	svcs := []lb.Service{
		withTable(svc("http", 0, "198.51.100.1", 80, lb.TCP, lb.DSR, a)),
		withTable(svc("https", 0, "198.51.100.1", 443, lb.TCP, lb.DSR, a)), // same backend: one table
		withTable(svc("db", 0, "198.51.100.2", 5432, lb.TCP, lb.DSR, b)),   // same slots, another backend
	}
	if err := dp.Set(svcs); err != nil {
		t.Fatal(err)
	}
	if tables, vips := dp.Tables(); tables != 2 || vips != 3 {
		t.Errorf("%d tables for %d VIPs, want 2 for 3", tables, vips)
	}
	for _, s := range svcs {
		got, err := dp.readTable(dp.state.VIPIDs()[s.VIP])
		if err != nil {
			t.Fatal(err)
		}
		id := dp.state.BackendIDs()[s.Backends[0].Key()]
		for slot, v := range got {
			if v != id {
				t.Fatalf("%s: slot %d holds backend id %d, want %d (%s)", s.Name, slot, v, id, s.Backends[0].Key())
			}
		}
	}
}
