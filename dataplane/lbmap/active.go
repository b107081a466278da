package lbmap

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govcloud/govcloud/dataplane/bpfobj"
	"github.com/govcloud/govcloud/lb"
)

// ActiveKey is one VIP's traffic to one backend: Backend is the lb.Backend.Key the load
// balancer sends to (the backend's host for dsr, the backend itself for nat).
type ActiveKey struct {
	VIP     lb.VIP
	Backend string
}

// ActiveConnections counts the connection-table entries per VIP and backend whose access time
// (atime_ns, bpf_ktime_get_ns: CLOCK_MONOTONIC) is within idle of now: the connections a
// drained backend still serves. It only reads the table (a full iteration, O(entries)); entries
// of backends no longer programmed are left out. A bare SYN is never in the table, so a flow
// counts from its second packet.
func (d *Dataplane) ActiveConnections(idle time.Duration) (map[ActiveKey]int, error) {
	d.mu.Lock()
	ids := d.state.BackendIDs()
	d.mu.Unlock()
	byID := make(map[uint32]string, len(ids))
	for k, id := range ids {
		byID[id] = k
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return nil, fmt.Errorf("reading the monotonic clock: %w", err)
	}
	since := uint64(max(ts.Nano()-idle.Nanoseconds(), 0))
	out := map[ActiveKey]int{}
	var k bpfobj.LbFlowKey
	var v bpfobj.LbCtEntry
	it := d.objs.Conntrack.Iterate()
	for it.Next(&k, &v) {
		be, ok := byID[v.BackendId]
		if !ok || v.AtimeNs < since {
			continue
		}
		vip := lb.VIP{Domain: k.Domain, Addr: wordsAddr(k.Dst, k.Family), Port: htons(k.Dport), Proto: lb.Protocol(k.Proto)}
		out[ActiveKey{VIP: vip, Backend: be}]++
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading the connection table: %w", err)
	}
	return out, nil
}
