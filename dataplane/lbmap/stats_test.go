package lbmap

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/govcloud/govcloud/dataplane/bpfobj"
	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/lb"
)

// TestVIPCountersBatched: VIPCounters sums every CPU's counters of each programmed VIP, read in
// batches (many VIPs) or one lookup per VIP (few), and leaves out ids no VIP holds.
func TestVIPCountersBatched(t *testing.T) {
	netnstest.RequirePrivileged(t)
	for _, n := range []int{3, perCPUBatchFrom - 1, perCPUBatchFrom, perCPUBatch + 7} {
		t.Run(fmt.Sprintf("%d VIPs", n), func(t *testing.T) {
			dp, err := Load(Options{ConnTableSize: 1 << 12, TableSize: 251})
			if err != nil {
				t.Fatal(err)
			}
			defer dp.Close()
			var svcs []lb.Service
			for i := range n {
				svcs = append(svcs, svc(fmt.Sprint("s", i), 0, fmt.Sprintf("198.51.100.%d", 1+i%250), uint16(80+i/250), lb.TCP, lb.DSR, be("198.18.1.1", 80, 1)))
			}
			if err := dp.Set(svcs); err != nil {
				t.Fatal(err)
			}
			ncpu := ebpf.MustPossibleCPU()
			ids := dp.state.VIPIDs()
			// Every CPU of VIP id i counts i packets, 2i bytes, 3i connections; an id no VIP
			// holds counts too, and must not show.
			put := func(id uint32) {
				vals := make([]bpfobj.LbVipCounter, ncpu)
				for c := range vals {
					vals[c] = bpfobj.LbVipCounter{Packets: uint64(id), Bytes: 2 * uint64(id), Conns: 3 * uint64(id)}
				}
				if err := dp.objs.VipStats.Put(id, vals); err != nil {
					t.Fatal(err)
				}
			}
			for _, id := range ids {
				put(id)
			}
			put(MaxVIPs - 1)
			got, err := dp.VIPCounters()
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != n {
				t.Fatalf("%d VIPs counted, want %d", len(got), n)
			}
			for v, id := range ids {
				k := uint64(ncpu) * uint64(id)
				if want := (VIPCounter{Packets: k, Bytes: 2 * k, Conns: 3 * k}); got[v] != want {
					t.Fatalf("VIP %s (id %d): %+v, want %+v", v, id, got[v], want)
				}
			}
		})
	}
}
