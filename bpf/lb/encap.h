/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* encap.h — the way out: next hop (per-CPU cache or FIB, with the egress MTU), transmit, the
 * L2 header kept across a headroom change, and encapsulation of a dsr packet to its backend's
 * host (IPIP, IP6IP6, 4in6, 6in4 by backend family, or the same inside GUE), answered with
 * too-big when it would not fit. Included by lb.bpf.c after count_drop and icmp_gen.h. */
#ifndef GOVCLOUD_LB_ENCAP_H
#define GOVCLOUD_LB_ENCAP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "../common/csum.h"
#include "lb_maps.h"

/* Next hop toward dst from src, found before the packet is touched. */
struct nexthop {
	__u8 dmac[ETH_ALEN];
	__u8 smac[ETH_ALEN];
	__u32 ifindex;
	__u32 same_port; /* egress == ingress: XDP_TX */
	__u32 mtu;       /* egress device MTU (bytes, L3) */
};

/* Look the next hop up in the kernel's FIB. A miss leaves the packet untouched and dropped with
 * a counted reason: the agent keeps neighbour entries of backend hosts resolved. */
static __always_inline int lookup_nexthop(struct xdp_md *ctx, __u8 family, const __u32 *src, const __u32 *dst,
					  struct nexthop *nh, __u64 bytes)
{
	__u32 zero = 0;
	struct bpf_fib_lookup *fp = bpf_map_lookup_elem(&fib_scratch, &zero);
	if (!fp)
		return XDP_DROP;
	__builtin_memset(fp, 0, sizeof(*fp));
#define fib (*fp)
	__u32 ingress = ctx->ingress_ifindex;
	fib.ifindex = ingress;
	if (family == LB_AF_INET) {
		fib.family = AF_INET;
		fib.ipv4_src = src[0];
		fib.ipv4_dst = dst[0];
	} else {
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_src, src, 16);
		__builtin_memcpy(fib.ipv6_dst, dst, 16);
	}
	int rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return count_drop(DROP_NO_NEIGHBOR, bytes);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return count_drop(DROP_NO_ROUTE, bytes);
	__builtin_memcpy(nh->dmac, fib.dmac, ETH_ALEN);
	__builtin_memcpy(nh->smac, fib.smac, ETH_ALEN);
	nh->ifindex = fib.ifindex;
	nh->same_port = fib.ifindex == ingress;
	/* The egress device's MTU: bpf_check_mtu reports it whatever the length asked about. */
	__u32 mtu = 1;
	if (bpf_check_mtu(ctx, fib.ifindex, &mtu, 0, 0) < 0)
		mtu = 0;
	nh->mtu = mtu;
	return 0;
#undef fib
}

/* Send the (rewritten or encapsulated) frame to the next hop: XDP_TX on the port it came in,
 * redirect to another. */
static __always_inline int transmit(struct xdp_md *ctx, const struct nexthop *nh)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, nh->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, nh->smac, ETH_ALEN);
	if (nh->same_port)
		return XDP_TX;
	return bpf_redirect(nh->ifindex, 0);
}

/* Rewrite the L2 header after the head moved by delta bytes: the saved L2 header goes to the
 * new start with ethertype set to proto. */
static __always_inline int restore_l2(struct xdp_md *ctx, const __u8 *l2, __u32 l2len, __u16 proto)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	if (data + 18 > data_end)
		return -1;
	if (l2len == 18) {
		__builtin_memcpy(data, l2, 18);
		*(__u16 *)(data + 16) = proto;
	} else {
		__builtin_memcpy(data, l2, 14);
		*(__u16 *)(data + 12) = proto;
	}
	return 0;
}

/* Drop Ethernet padding behind the IP packet (small frames are padded to 60 bytes): inside a
 * tunnel it would become trailing garbage. */
static __always_inline void trim_padding(struct xdp_md *ctx, __u32 want)
{
	__s32 extra = (long)ctx->data_end - (long)ctx->data - (long)want;
	if (extra > 0 && extra < 64)
		bpf_xdp_adjust_tail(ctx, -extra);
}

/* Next hop toward backend bid (tunnel from src to be->addr), from the per-CPU cache or the FIB;
 * now is the caller's bpf_ktime_get_coarse_ns (one clock read per packet). */
static __always_inline int backend_nexthop(struct xdp_md *ctx, __u32 bid, const struct backend *be, const __u32 *src,
					   struct nexthop *nh, __u64 now, __u64 bytes)
{
	__u32 ingress = ctx->ingress_ifindex;
	struct nexthop_cache *c = bpf_map_lookup_elem(&nexthops, &bid);
	if (c && c->expires_ns > now && c->ingress == ingress) {
		__builtin_memcpy(nh->dmac, c->dmac, ETH_ALEN);
		__builtin_memcpy(nh->smac, c->smac, ETH_ALEN);
		nh->ifindex = c->ifindex;
		nh->same_port = c->ifindex == ingress;
		nh->mtu = c->mtu;
		return 0;
	}
	int rc = lookup_nexthop(ctx, be->family, src, be->addr, nh, bytes);
	if (rc)
		return rc;
	if (c) {
		__builtin_memcpy(c->dmac, nh->dmac, ETH_ALEN);
		__builtin_memcpy(c->smac, nh->smac, ETH_ALEN);
		c->ifindex = nh->ifindex;
		c->mtu = nh->mtu;
		c->ingress = ingress;
		c->expires_ns = now + LB_NEXTHOP_TTL_NS;
	}
	return 0;
}

/* Per-flow entropy for the outer headers (GUE source port, IPv6 flow label): the same for
 * every packet of a flow, new or established, and cheaper than flow_hash (an established flow
 * skips the Maglev hash). Mirrored in dataplane/lbmap.EntropyHash. */
static __always_inline __u32 entropy_hash(const struct flow_key *f)
{
	__u32 h = hash_step(0x9e3779b9, f->src[0] ^ f->src[1] ^ f->src[2] ^ f->src[3]);
	h = hash_step(h, f->dst[0] ^ f->dst[1] ^ f->dst[2] ^ f->dst[3]);
	return hash_step(h, ((__u32)f->sport | ((__u32)f->dport << 16)) ^ f->proto);
}

/* Encapsulate a dsr packet to its backend's host and send it, or answer its sender with
 * frag-needed / packet-too-big when it would not fit the egress MTU (min of the device's and
 * lb_config.mtu) once encapsulated. The outer header:
 *   IPv4 (RFC 2003 §3.1, RFC 4213 §3.5): TOS copied from the inner DSCP+ECN (RFC 6040 §4.1
 *        normal mode), DF copied from an inner IPv4 header and set over IPv6 (the program
 *        answers too-big itself, so nothing on the path needs to fragment), a per-CPU IP ID;
 *   IPv6 (RFC 2473 §6.5): traffic class copied likewise, 20 bits of flow hash in the flow label
 *        (RFC 6438);
 *   GUE (lb_config.encap_mode LB_ENCAP_GUE): a UDP header to lb_config.gue_port follows, its
 *        source port 14 bits of flow hash from 49152 (RFC 8086 §3.2.1), the inner packet right
 *        behind it (GUE variant 1, direct IP encapsulation), UDP checksum zero (RFC 8086 §3.2 for
 *        IPv4; RFC 6935/6936 for IPv6 between these hosts' decapsulators, xdp_lb / xdp_decap).
 * ehash is the flow's entropy_hash when the caller has it (kept in the connection-table entry),
 * else 0. Only a packet that leaves is counted for the backend (not what was chosen). */
static __always_inline int encap(struct xdp_md *ctx, struct pkt *p, __u32 bid, const struct backend *be,
				 const struct lb_config *cfg, __u32 ehash, __u64 now, __u64 bytes)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 l2[18];
	__u32 l2len = p->l2len;
	__u8 inner = p->flow.family == LB_AF_INET ? IPPROTO_IPIP : IPPROTO_IPV6;
	int gue = cfg->encap_mode == LB_ENCAP_GUE;
	__u32 udplen = gue ? sizeof(struct udphdr) : 0;

	struct nexthop nh;
	int rc;
	if (data + 18 > data_end)
		return XDP_DROP;
	__builtin_memcpy(l2, data, 18);

	/* DF of the inner IPv4 header (parse.h); always over IPv6. */
	__u16 df = p->flow.family != LB_AF_INET || p->df ? bpf_htons(IP_DF) : 0;

	__u32 ohlen = be->family == LB_AF_INET ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
	if (be->family == LB_AF_INET) {
		__u32 src[4] = {cfg->encap_src4, 0, 0, 0};
		rc = backend_nexthop(ctx, bid, be, src, &nh, now, bytes);
	} else {
		rc = backend_nexthop(ctx, bid, be, cfg->encap_src6, &nh, now, bytes);
	}
	if (rc)
		return rc;
	__u32 mtu = nh.mtu;
	if (cfg->mtu && (mtu == 0 || cfg->mtu < mtu))
		mtu = cfg->mtu;
	__u32 hlen = ohlen + udplen;
	if (mtu && p->iplen + hlen > mtu)
		return send_too_big(ctx, p, mtu > hlen ? mtu - hlen : 0, bytes);

	__u32 hash = ehash;
	if (!hash && (gue || be->family == LB_AF_INET6))
		hash = entropy_hash(&p->flow);
	if (bpf_xdp_adjust_head(ctx, -(int)hlen))
		return count_drop(DROP_ENCAP, bytes);
	if (restore_l2(ctx, l2, l2len, be->family == LB_AF_INET ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6)))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	void *l3 = data + (l2len == 18 ? 18 : 14);
	struct udphdr *uh;

	if (be->family == LB_AF_INET) {
		struct iphdr *o = l3;
		if ((void *)(o + 1) + sizeof(*uh) > data_end)
			return XDP_DROP;
		o->version = 4;
		o->ihl = 5;
		o->tos = p->tos;
		o->tot_len = bpf_htons(p->iplen + hlen);
		o->id = bpf_htons(next_ip_id());
		o->frag_off = df;
		o->ttl = LB_TTL;
		o->protocol = gue ? IPPROTO_UDP : inner;
		o->check = 0;
		o->saddr = cfg->encap_src4;
		o->daddr = be->addr[0];
		o->check = ipv4_csum(o);
		uh = (void *)(o + 1);
	} else {
		struct ipv6hdr *o = l3;
		if ((void *)(o + 1) + sizeof(*uh) > data_end)
			return XDP_DROP;
		o->version = 6;
		o->priority = p->tos >> 4;
		o->flow_lbl[0] = ((p->tos & 0x0f) << 4) | ((hash >> 16) & 0x0f);
		o->flow_lbl[1] = (hash >> 8) & 0xff;
		o->flow_lbl[2] = hash & 0xff;
		o->payload_len = bpf_htons(p->iplen + udplen);
		o->nexthdr = gue ? IPPROTO_UDP : inner;
		o->hop_limit = LB_TTL;
		__builtin_memcpy(&o->saddr, cfg->encap_src6, 16);
		__builtin_memcpy(&o->daddr, be->addr, 16);
		uh = (void *)(o + 1);
	}
	if (gue) {
		uh->source = bpf_htons(LB_GUE_SPORT_BASE | (hash & LB_GUE_SPORT_MASK));
		uh->dest = cfg->gue_port;
		uh->len = bpf_htons(p->iplen + sizeof(*uh));
		uh->check = 0;
	}
	trim_padding(ctx, l2len + hlen + p->iplen);
	count(&backend_stats, bid, bytes);
	return transmit(ctx, &nh);
}

#endif
