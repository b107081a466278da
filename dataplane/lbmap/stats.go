package lbmap

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/govcloud/govcloud/dataplane/bpfobj"
	"github.com/govcloud/govcloud/lb"
)

// Counter is a packet and byte count summed over CPUs.
type Counter struct{ Packets, Bytes uint64 }

// VIPCounter adds new connections to a VIP's counts.
type VIPCounter struct{ Packets, Bytes, Conns uint64 }

// DropReasons names the drop counters by index: the values of bpf/lb/lb_consts.h enum
// drop_reason, read from the object's BTF, without "DROP_" and in lower case (DROP_NO_BACKEND
// is "no_backend"). Index 0 (DROP_NONE) is "". Errors only if the object lacks the enum.
var DropReasons = sync.OnceValues(func() ([]string, error) {
	spec, err := bpfobj.LoadLb()
	if err != nil {
		return nil, fmt.Errorf("loading lb object spec: %w", err)
	}
	var e *btf.Enum
	if err := spec.Types.TypeByName("drop_reason", &e); err != nil {
		return nil, fmt.Errorf("enum drop_reason in lb object: %w", err)
	}
	var names []string
	for _, v := range e.Values {
		if v.Name == "DROP_MAX" {
			continue
		}
		for uint64(len(names)) <= v.Value {
			names = append(names, "")
		}
		if v.Value != 0 {
			names[v.Value] = strings.ToLower(strings.TrimPrefix(v.Name, "DROP_"))
		}
	}
	return names, nil
})

// VIPCounters returns the counters of every programmed VIP.
func (d *Dataplane) VIPCounters() (map[lb.VIP]VIPCounter, error) {
	d.mu.Lock()
	ids := d.state.VIPIDs()
	d.mu.Unlock()
	byID := make(map[uint32]lb.VIP, len(ids))
	for v, id := range ids {
		byID[id] = v
	}
	out := make(map[lb.VIP]VIPCounter, len(ids))
	err := readPerCPU(d.objs.VipStats, byID, func(id uint32, vals []bpfobj.LbVipCounter) {
		var c VIPCounter
		for _, x := range vals {
			c.Packets += x.Packets
			c.Bytes += x.Bytes
			c.Conns += x.Conns
		}
		out[byID[id]] = c
	})
	if err != nil {
		return nil, fmt.Errorf("VIP counters: %w", err)
	}
	return out, nil
}

// readPerCPU calls each with every CPU's value of each id of want in the per-CPU array m.
// Many ids are read in batches of perCPUBatch entries, one system call each (a scrape of 1200
// VIPs was 1200 lookups); a kernel without batch operations on per-CPU arrays gets one lookup
// per id.
func readPerCPU[V any, T comparable](m *ebpf.Map, want map[uint32]T, each func(id uint32, vals []V)) error {
	ncpu := ebpf.MustPossibleCPU()
	if len(want) >= perCPUBatchFrom {
		keys := make([]uint32, perCPUBatch)
		vals := make([]V, perCPUBatch*ncpu)
		var cursor ebpf.MapBatchCursor
		for {
			n, err := m.BatchLookup(&cursor, keys, vals, nil)
			for i := range n {
				if _, ok := want[keys[i]]; ok {
					each(keys[i], vals[i*ncpu:(i+1)*ncpu])
				}
			}
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				return nil // the end of the array
			}
			if err == nil {
				continue
			}
			if !errors.Is(err, ebpf.ErrNotSupported) && !errors.Is(err, unix.EINVAL) {
				return err
			}
			break // one by one below
		}
	}
	vals := make([]V, ncpu)
	for id := range want {
		if err := m.Lookup(id, &vals); err != nil {
			return fmt.Errorf("id %d: %w", id, err)
		}
		each(id, vals)
	}
	return nil
}

// Batches of per-CPU reads: entries per system call, and the fewest ids worth a batch (a
// batch reads the whole array, at most MaxVIPs or MaxBackends entries).
const (
	perCPUBatch     = 512
	perCPUBatchFrom = 64
)

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

// Drops returns the drop counters by reason name (DropReasons), every reason present.
func (d *Dataplane) Drops() (map[string]Counter, error) {
	names, err := DropReasons()
	if err != nil {
		return nil, err
	}
	out := make(map[string]Counter, len(names))
	for i, name := range names {
		if name == "" {
			continue
		}
		c, err := sumCounter(d.objs.DropStats, uint32(i))
		if err != nil {
			return nil, fmt.Errorf("drop counter %s: %w", name, err)
		}
		out[name] = c
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
