package lbmap

import (
	"maps"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/lb"
)

// TestSettersWriteOnlyChanges: every setter given what the maps already hold writes nothing
// (Writes does not move), and a changed value is written (the agent's dataplane write count,
// which the disaster drill holds at 0 across a controller restore).
func TestSettersWriteOnlyChanges(t *testing.T) {
	netnstest.RequirePrivileged(t)
	dp, err := Load(Options{ConnTableSize: 1 << 12, NATTableSize: 1 << 12})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	a := netip.MustParseAddr
	vip := lb.VIP{Addr: a("198.19.255.5"), Port: 80, Proto: lb.TCP}
	apply := func(self string, vlanDom uint32) error {
		for _, err := range []error{
			dp.SetConfig(Config{EncapSource4: a(self), SNATSource4: a(self)}),
			dp.SetVLANDomains(map[uint16]uint32{120: vlanDom, 130: 8}),
			dp.SetDecapAddrs([]netip.Addr{a(self)}),
			dp.SetTunnelSources([]netip.Addr{a("198.18.0.11"), a("198.18.0.12")}),
			dp.SetLocalVIPs([]LocalVIP{{VIP: vip, Department: 7}}),
		} {
			if err != nil {
				return err
			}
		}
		return nil
	}
	for _, tc := range []struct {
		desc        string
		self        string
		vlanDom     uint32
		wantChanged bool
	}{
		{"first programming", "198.18.0.11", 7, true},
		{"the same state again", "198.18.0.11", 7, false},
		{"and again", "198.18.0.11", 7, false},
		{"a VLAN's domain changed", "198.18.0.11", 9, true},
		{"the host's address changed", "198.18.0.12", 9, true},
		{"the same state once more", "198.18.0.12", 9, false},
	} {
		before := dp.Writes()
		if err := apply(tc.self, tc.vlanDom); err != nil {
			t.Fatalf("%s: %v", tc.desc, err)
		}
		if changed := dp.Writes() != before; changed != tc.wantChanged {
			t.Errorf("%s: writes %d -> %d, want a change: %v", tc.desc, before, dp.Writes(), tc.wantChanged)
		}
	}
}

// TestSyncHashBatches: syncHash (read, delete and write in batches) leaves a hash map holding
// exactly what it was given, across batch boundaries (hashBatch), counting each deletion and
// each written entry once and nothing for an entry already right.
func TestSyncHashBatches(t *testing.T) {
	netnstest.RequirePrivileged(t)
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 4 * hashBatch})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want := func(from, to, val uint32) map[uint32]uint32 {
		out := map[uint32]uint32{}
		for k := from; k < to; k++ {
			out[k] = val
		}
		return out
	}
	for _, tc := range []struct {
		desc       string
		want       map[uint32]uint32
		wantWrites uint64
	}{
		{"empty into empty", want(0, 0, 0), 0},
		{"one entry", want(0, 1, 1), 1},
		{"past one batch", want(0, 2*hashBatch+3, 1), 2*hashBatch + 2},
		{"the same again", want(0, 2*hashBatch+3, 1), 0},
		{"every value changed", want(0, 2*hashBatch+3, 2), 2*hashBatch + 3},
		{"a batch's worth gone, others added", want(hashBatch, 3*hashBatch, 2), hashBatch + (hashBatch - 3)},
		{"all gone", want(0, 0, 0), 2 * hashBatch},
	} {
		var writes atomic.Uint64
		if err := syncHash(m, tc.want, &writes); err != nil {
			t.Fatalf("%s: %v", tc.desc, err)
		}
		have := map[uint32]uint32{}
		var k, v uint32
		it := m.Iterate()
		for it.Next(&k, &v) {
			have[k] = v
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(have, tc.want) {
			t.Errorf("%s: map holds %d entries, want %d (or values differ)", tc.desc, len(have), len(tc.want))
		}
		if writes.Load() != tc.wantWrites {
			t.Errorf("%s: %d writes, want %d", tc.desc, writes.Load(), tc.wantWrites)
		}
	}
}
