package lbmap

import (
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/govcloud/govcloud/dataplane/bpfobj"
	"github.com/govcloud/govcloud/lb"
)

// Counter is a packet and byte count summed over CPUs.
type Counter struct{ Packets, Bytes uint64 }

// VIPCounter adds new connections to a VIP's counts.
type VIPCounter struct{ Packets, Bytes, Conns uint64 }

// DropReasons names the drop counters, by index (bpf/lb/lb_consts.h enum drop_reason).
var DropReasons = []string{"", "no_backend", "fragment", "malformed", "no_route", "snat_exhausted", "unsupported", "encap", "no_neighbor"}

// VIPCounters returns the counters of every programmed VIP.
func (d *Dataplane) VIPCounters() (map[lb.VIP]VIPCounter, error) {
	d.mu.Lock()
	ids := d.state.VIPIDs()
	d.mu.Unlock()
	out := make(map[lb.VIP]VIPCounter, len(ids))
	vals := make([]bpfobj.LbVipCounter, ebpf.MustPossibleCPU())
	for v, id := range ids {
		if err := d.objs.VipStats.Lookup(id, &vals); err != nil {
			return nil, fmt.Errorf("VIP %s counters: %w", v, err)
		}
		var c VIPCounter
		for _, x := range vals {
			c.Packets += x.Packets
			c.Bytes += x.Bytes
			c.Conns += x.Conns
		}
		out[v] = c
	}
	return out, nil
}

// BackendCounters returns the counters of every programmed backend, by lb.Backend.Key.
func (d *Dataplane) BackendCounters() (map[string]Counter, error) {
	d.mu.Lock()
	ids := d.state.BackendIDs()
	d.mu.Unlock()
	out := make(map[string]Counter, len(ids))
	for k, id := range ids {
		c, err := sumCounter(d.objs.BackendStats, id)
		if err != nil {
			return nil, fmt.Errorf("backend %s counters: %w", k, err)
		}
		out[k] = c
	}
	return out, nil
}

// Drops returns the drop counters by reason name.
func (d *Dataplane) Drops() (map[string]Counter, error) {
	out := make(map[string]Counter, len(DropReasons)-1)
	for i := 1; i < len(DropReasons); i++ {
		c, err := sumCounter(d.objs.DropStats, uint32(i))
		if err != nil {
			return nil, fmt.Errorf("drop counter %s: %w", DropReasons[i], err)
		}
		out[DropReasons[i]] = c
	}
	return out, nil
}

// Decapsulated returns how many tunnelled packets were decapsulated for local backends.
func (d *Dataplane) Decapsulated() (Counter, error) { return sumCounter(d.objs.DecapStats, 0) }

func sumCounter(m *ebpf.Map, id uint32) (Counter, error) {
	vals := make([]bpfobj.LbLbCounter, ebpf.MustPossibleCPU())
	if err := m.Lookup(id, &vals); err != nil {
		return Counter{}, err
	}
	var c Counter
	for _, x := range vals {
		c.Packets += x.Packets
		c.Bytes += x.Bytes
	}
	return c, nil
}
