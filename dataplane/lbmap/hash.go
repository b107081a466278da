package lbmap

import (
	"net/netip"

	"github.com/govcloud/govcloud/lb"
)

// FlowHash is the BPF program's flow hash (bpf/lb/lb.bpf.c flow_hash), so tools and tests can
// tell which Maglev slot a flow lands in: slot = FlowHash(...) % table size.
func FlowHash(src, dst netip.Addr, sport, dport uint16, proto lb.Protocol) uint32 {
	step := func(h, w uint32) uint32 {
		h ^= w
		h *= 0x85ebca6b
		h ^= h >> 13
		h *= 0xc2b2ae35
		h ^= h >> 16
		return h
	}
	h := uint32(0x9e3779b9)
	for _, w := range addrWords(src) {
		h = step(h, w)
	}
	for _, w := range addrWords(dst) {
		h = step(h, w)
	}
	h = step(h, uint32(htons(sport))|uint32(htons(dport))<<16)
	return step(h, uint32(proto))
}

// Pick returns the key of the backend the Maglev table sends a new flow to (src:sport -> VIP),
// or "" when the VIP is unknown or has no backend. Established flows follow the connection table.
func (d *Dataplane) Pick(v lb.VIP, src netip.Addr, sport uint16) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.state.TableOf(v)
	if t == nil {
		return ""
	}
	id := t[FlowHash(src, v.Addr, sport, v.Port, v.Proto)%uint32(len(t))]
	for k, bid := range d.state.BackendIDs() {
		if bid == id {
			return k
		}
	}
	return ""
}
