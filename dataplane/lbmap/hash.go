package lbmap

import (
	"net/netip"

	"github.com/govcloud/govcloud/lb"
)

// FlowHash is the BPF program's flow hash (bpf/lb/lb.bpf.c flow_hash), so tools and tests can
// tell which Maglev slot a flow lands in: slot = FlowHash(...) % table size.
func FlowHash(src, dst netip.Addr, sport, dport uint16, proto lb.Protocol) uint32 {
	h := uint32(0x9e3779b9)
	for _, w := range addrWords(src) {
		h = hashStep(h, w)
	}
	for _, w := range addrWords(dst) {
		h = hashStep(h, w)
	}
	h = hashStep(h, uint32(htons(sport))|uint32(htons(dport))<<16)
	return hashStep(h, uint32(proto))
}

// hashStep is bpf/lb/lb_pkt.h hash_step.
func hashStep(h, w uint32) uint32 {
	h ^= w
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// EntropyHash is the program's per-flow entropy for outer headers (bpf/lb/encap.h
// entropy_hash): a GUE source port is 49152 + EntropyHash&0x3fff, an IPv6 outer flow label
// EntropyHash&0xfffff. Ports in host order.
func EntropyHash(src, dst netip.Addr, sport, dport uint16, proto lb.Protocol) uint32 {
	xor := func(a netip.Addr) uint32 {
		w := addrWords(a)
		return w[0] ^ w[1] ^ w[2] ^ w[3]
	}
	h := hashStep(0x9e3779b9, xor(src))
	h = hashStep(h, xor(dst))
	return hashStep(h, (uint32(htons(sport))|uint32(htons(dport))<<16)^uint32(proto))
}

// GUESourcePort is the UDP source port the program sends a flow's GUE packets from.
func GUESourcePort(src, dst netip.Addr, sport, dport uint16, proto lb.Protocol) uint16 {
	return 49152 | uint16(EntropyHash(src, dst, sport, dport, proto)&0x3fff)
}

// Pick returns the key of the backend the Maglev table sends a new flow to (src:sport -> VIP),
// or "" when the VIP is unknown or has no backend. Established flows follow the connection table.
func (d *Dataplane) Pick(v lb.VIP, src netip.Addr, sport uint16) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.state.TableOf(v)
	if t.Len() == 0 {
		return ""
	}
	id := t.At(int(FlowHash(src, v.Addr, sport, v.Port, v.Proto) % uint32(t.Len())))
	for k, bid := range d.state.BackendIDs() {
		if bid == id {
			return k
		}
	}
	return ""
}
