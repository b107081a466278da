/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* encap.h — the way out: next hop (per-CPU cache or FIB), transmit, the L2 header kept across
 * a headroom change, and encapsulation of a dsr packet to its backend's host (IPIP, IP6IP6,
 * 4in6, 6in4 by backend family). Included by lb.bpf.c after count_drop. */
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
};

/* Look the next hop up in the kernel's FIB. A miss leaves the packet untouched and dropped with
 * a counted reason: the agent keeps neighbour entries of backend hosts resolved. */
static __always_inline int lookup_nexthop(struct xdp_md *ctx, __u8 family, const __u32 *src, const __u32 *dst,
					  struct nexthop *nh, __u64 bytes)
{
	struct bpf_fib_lookup fib = {};
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
	return 0;
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

/* Next hop toward backend bid (tunnel from src to be->addr), from the per-CPU cache or the FIB. */
static __always_inline int backend_nexthop(struct xdp_md *ctx, __u32 bid, const struct backend *be, const __u32 *src,
					   struct nexthop *nh, __u64 bytes)
{
	__u32 ingress = ctx->ingress_ifindex;
	__u64 now = bpf_ktime_get_coarse_ns();
	struct nexthop_cache *c = bpf_map_lookup_elem(&nexthops, &bid);
	if (c && c->expires_ns > now && c->ingress == ingress) {
		__builtin_memcpy(nh->dmac, c->dmac, ETH_ALEN);
		__builtin_memcpy(nh->smac, c->smac, ETH_ALEN);
		nh->ifindex = c->ifindex;
		nh->same_port = c->ifindex == ingress;
		return 0;
	}
	int rc = lookup_nexthop(ctx, be->family, src, be->addr, nh, bytes);
	if (rc)
		return rc;
	if (c) {
		__builtin_memcpy(c->dmac, nh->dmac, ETH_ALEN);
		__builtin_memcpy(c->smac, nh->smac, ETH_ALEN);
		c->ifindex = nh->ifindex;
		c->ingress = ingress;
		c->expires_ns = now + LB_NEXTHOP_TTL_NS;
	}
	return 0;
}

static __always_inline int encap(struct xdp_md *ctx, struct pkt *p, __u32 bid, const struct backend *be,
				 const struct lb_config *cfg, __u32 hash, __u64 bytes)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 l2[18];
	__u32 l2len = p->l2len;
	__u8 inner = p->flow.family == LB_AF_INET ? IPPROTO_IPIP : IPPROTO_IPV6;

	struct nexthop nh;
	int rc;
	if (data + 18 > data_end)
		return XDP_DROP;
	__builtin_memcpy(l2, data, 18);

	if (be->family == LB_AF_INET) {
		__u32 src[4] = {cfg->encap_src4, 0, 0, 0};
		rc = backend_nexthop(ctx, bid, be, src, &nh, bytes);
		if (rc)
			return rc;
		if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr)))
			return count_drop(DROP_ENCAP, bytes);
		if (restore_l2(ctx, l2, l2len, bpf_htons(ETH_P_IP)))
			return XDP_DROP;
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		struct iphdr *o = data + (l2len == 18 ? 18 : 14);
		if ((void *)(o + 1) > data_end)
			return XDP_DROP;
		o->version = 4;
		o->ihl = 5;
		o->tos = p->tos;
		o->tot_len = bpf_htons(p->iplen + sizeof(struct iphdr));
		o->id = 0;
		o->frag_off = 0;
		o->ttl = LB_TTL;
		o->protocol = inner;
		o->check = 0;
		o->saddr = cfg->encap_src4;
		o->daddr = be->addr[0];
		o->check = ipv4_csum(o);
		trim_padding(ctx, l2len + sizeof(struct iphdr) + p->iplen);
		return transmit(ctx, &nh);
	}

	rc = backend_nexthop(ctx, bid, be, cfg->encap_src6, &nh, bytes);
	if (rc)
		return rc;
	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct ipv6hdr)))
		return count_drop(DROP_ENCAP, bytes);
	if (restore_l2(ctx, l2, l2len, bpf_htons(ETH_P_IPV6)))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *o = data + (l2len == 18 ? 18 : 14);
	if ((void *)(o + 1) > data_end)
		return XDP_DROP;
	if (!hash)
		hash = flow_hash(&p->flow);
	o->version = 6;
	o->priority = 0;
	o->flow_lbl[0] = (hash >> 16) & 0x0f;
	o->flow_lbl[1] = (hash >> 8) & 0xff;
	o->flow_lbl[2] = hash & 0xff;
	o->payload_len = bpf_htons(p->iplen);
	o->nexthdr = inner;
	o->hop_limit = LB_TTL;
	__builtin_memcpy(&o->saddr, cfg->encap_src6, 16);
	__builtin_memcpy(&o->daddr, be->addr, 16);
	trim_padding(ctx, l2len + sizeof(struct ipv6hdr) + p->iplen);
	return transmit(ctx, &nh);
}

#endif
