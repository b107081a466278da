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
