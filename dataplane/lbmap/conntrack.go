package lbmap

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/govcloud/govcloud/dataplane/bpfobj"
	"github.com/govcloud/govcloud/lb"
)

// Connection-table lifetimes without a packet (bpf/lb/lb_consts.h LB_CT_*_LIFE_NS, Cilium's
// defaults): the program treats an older entry as absent, ExpireFlows deletes it.
const (
	FlowLifeTCP   = 6 * time.Hour    // established TCP
	FlowLifeOther = 60 * time.Second // UDP
	FlowLifeClose = 10 * time.Second // TCP after a FIN or RST from the client
)

// MaxMembers is how many (VIP, backend) memberships the program holds (LB_MAX_MEMBERS).
const MaxMembers = 65536

// Flags of ct_entry and of vip_members values (bpf/lb/lb_consts.h).
const (
	ctFlagClosing = 1 << 0
	memberNew     = 1 << 0
)

// Flow is one connection-table entry.
type Flow struct {
	Domain  uint32 // the VIP's routing domain
	Client  netip.AddrPort
	VIP     netip.AddrPort
	Proto   lb.Protocol
	Backend string // lb.Backend.Key of the backend it goes to ("" once that id is unused)
	Closing bool   // a FIN or RST was seen: the entry lives FlowLifeClose after its last packet
	// LastSeen is the time of its last packet (CLOCK_MONOTONIC, as MonotonicNow), kept to
	// half a second.
	LastSeen time.Duration
}

// MonotonicNow is CLOCK_MONOTONIC, the clock of Flow.LastSeen and ExpireFlows.
func MonotonicNow() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// flowLife is the lifetime of an entry by protocol and flags, as the program has it.
func flowLife(proto uint8, flags uint8) time.Duration {
	switch {
	case flags&ctFlagClosing != 0:
		return FlowLifeClose
	case proto == uint8(lb.TCP):
		return FlowLifeTCP
	}
	return FlowLifeOther
}

// Flows lists the connection table.
func (d *Dataplane) Flows() ([]Flow, error) {
	d.mu.Lock()
	byID := map[uint32]string{}
	for k, id := range d.state.BackendIDs() {
		byID[id] = k
	}
	d.mu.Unlock()
	var out []Flow
	err := d.eachFlow(func(k bpfobj.LbFlowKey, v bpfobj.LbCtEntry) {
		out = append(out, Flow{
			Domain:   k.Domain,
			Client:   netip.AddrPortFrom(wordsAddr(k.Src, k.Family), htons(k.Sport)),
			VIP:      netip.AddrPortFrom(wordsAddr(k.Dst, k.Family), htons(k.Dport)),
			Proto:    lb.Protocol(k.Proto),
			Backend:  byID[v.BackendId],
			Closing:  v.Flags&ctFlagClosing != 0,
			LastSeen: time.Duration(v.AtimeNs),
		})
	})
	return out, err
}

// eachFlow calls fn for every connection-table entry, read in batches (one system call per
// 4096 entries, not one per entry: the table holds up to a million).
func (d *Dataplane) eachFlow(fn func(bpfobj.LbFlowKey, bpfobj.LbCtEntry)) error {
	const chunk = 4096
	keys := make([]bpfobj.LbFlowKey, chunk)
	vals := make([]bpfobj.LbCtEntry, chunk)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.objs.Conntrack.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			fn(keys[i], vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading connection table: %w", err)
		}
	}
}

// ExpireFlows deletes the connection-table entries that are past their life at now
// (MonotonicNow in production; FlowLife*), and those of VIPs no longer programmed. It returns
// how many it deleted. The program already ignores expired entries; this frees their room.
func (d *Dataplane) ExpireFlows(now time.Duration) (int, error) {
	d.mu.Lock()
	vips := d.state.VIPIDs()
	d.mu.Unlock()
	var stale []bpfobj.LbFlowKey
	err := d.eachFlow(func(k bpfobj.LbFlowKey, v bpfobj.LbCtEntry) {
		vip := lb.VIP{Domain: k.Domain, Addr: wordsAddr(k.Dst, k.Family), Port: htons(k.Dport), Proto: lb.Protocol(k.Proto)}
		_, known := vips[vip]
		if !known || now-time.Duration(v.AtimeNs) > flowLife(k.Proto, v.Flags) {
			stale = append(stale, k)
		}
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for len(stale) > 0 {
		batch := stale[:min(len(stale), 4096)]
		stale = stale[len(batch):]
		if m, err := d.objs.Conntrack.BatchDelete(batch, nil); err != nil {
			// An entry gone meanwhile (LRU eviction) fails the batch: delete one by one.
			for _, k := range batch[m:] {
				if err := d.objs.Conntrack.Delete(k); err == nil {
					n++
				} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
					return n, fmt.Errorf("deleting expired flow: %w", err)
				}
			}
			n += m
			continue
		}
		n += len(batch)
	}
	return n, nil
}

// desiredMembers is every (VIP id, backend id) of services with its F_MEMBER_* flags. Call
// after the plan of services is committed (the ids are the state's).
func (d *Dataplane) desiredMembers(services []lb.Service) map[bpfobj.LbMemberKey]uint32 {
	vips, bes := d.state.VIPIDs(), d.state.BackendIDs()
	want := map[bpfobj.LbMemberKey]uint32{}
	for _, s := range services {
		vid, ok := vips[s.VIP]
		if !ok {
			continue
		}
		for _, b := range s.Backends {
			bid, ok := bes[b.Key()]
			if !ok {
				continue
			}
			var fl uint32
			if b.Weight > 0 {
				fl = memberNew
			}
			want[bpfobj.LbMemberKey{VipId: vid, BackendId: bid}] = fl
		}
	}
	return want
}

// syncMembers makes vip_members equal want: new and changed memberships first, then the ones
// that ended, and every VIP that lost or drained a backend gets a new generation, so
// connection-table entries naming a backend that left are scheduled afresh on their next
// packet, and a bare SYN no longer follows one to a backend that was drained.
func (d *Dataplane) syncMembers(want map[bpfobj.LbMemberKey]uint32) error {
	left := map[uint32]bool{}
	for k, v := range want {
		cur, ok := d.members[k]
		if ok && cur == v {
			continue
		}
		if err := d.objs.VipMembers.Put(k, v); err != nil {
			return fmt.Errorf("VIP id %d backend id %d membership: %w", k.VipId, k.BackendId, err)
		}
		d.members[k] = v
		if ok && cur&memberNew != 0 && v&memberNew == 0 {
			left[k.VipId] = true // drained: entries stamped as taking new connections are not any more
		}
	}
	for k := range d.members {
		if _, ok := want[k]; ok {
			continue
		}
		if err := d.objs.VipMembers.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("VIP id %d backend id %d: ending membership: %w", k.VipId, k.BackendId, err)
		}
		delete(d.members, k)
		left[k.VipId] = true
	}
	for _, id := range d.state.VIPIDs() {
		if d.vipGen[id] == 0 {
			left[id] = true // restored from a build without generations
		}
	}
	for id := range left {
		if err := d.newGeneration(id); err != nil {
			return err
		}
	}
	return nil
}

// newGeneration gives VIP id a generation never used before.
func (d *Dataplane) newGeneration(id uint32) error {
	d.gen++
	if d.gen == 0 {
		d.gen = 1
	}
	if err := d.objs.VipGen.Put(id, d.gen); err != nil {
		return fmt.Errorf("VIP id %d generation: %w", id, err)
	}
	d.vipGen[id] = d.gen
	return nil
}

// restoreMembers reads memberships and generations left in pinned maps.
func (d *Dataplane) restoreMembers() error {
	var k bpfobj.LbMemberKey
	var v uint32
	it := d.objs.VipMembers.Iterate()
	for it.Next(&k, &v) {
		d.members[k] = v
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading VIP memberships: %w", err)
	}
	var id, g uint32
	git := d.objs.VipGen.Iterate()
	for git.Next(&id, &g) {
		if g != 0 {
			d.vipGen[id] = g
			d.gen = max(d.gen, g)
		}
	}
	if err := git.Err(); err != nil {
		return fmt.Errorf("reading VIP generations: %w", err)
	}
	return nil
}

// replaceConntrackPin removes a pinned connection table whose entry layout differs from this
// build's (entries grew membership generation and TCP state): its flows are scheduled afresh
// by Maglev, which keeps most of them on their backend. Errors name the path.
func replaceConntrackPin(pinPath string, spec *ebpf.MapSpec, log *slog.Logger) error {
	path := filepath.Join(pinPath, spec.Name)
	m, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening pinned map %s: %w", path, err)
	}
	ks, vs := m.KeySize(), m.ValueSize()
	m.Close()
	if ks == spec.KeySize && vs == spec.ValueSize {
		return nil
	}
	log.Warn("replacing pinned connection table of another layout; its flows are scheduled afresh", "map", path, "value_size", vs, "want", spec.ValueSize)
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing pinned map %s (value size %d, want %d): %w", path, vs, spec.ValueSize, err)
	}
	return nil
}
