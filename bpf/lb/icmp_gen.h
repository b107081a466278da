/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* icmp_gen.h — errors the program itself answers with: ICMP frag-needed (RFC 792, RFC 1191)
 * and ICMPv6 packet-too-big (RFC 4443 §3.2, RFC 8201) to the sender of a packet that does not
 * fit the egress MTU once encapsulated; and the IPv4 ID of what the program originates.
 * Included by lb.bpf.c after count_drop, before encap.h. */
#ifndef GOVCLOUD_LB_ICMP_GEN_H
#define GOVCLOUD_LB_ICMP_GEN_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "../common/csum.h"
#include "lb_maps.h"

#define IPV6_MIN_MTU 1280
#define ICMP_TOS_INTERNETCONTROL 0xc0 /* precedence 6, as Linux sends ICMP errors */

/* The IPv4 ID of the next header this CPU originates: a per-CPU counter seeded at random, so
 * IDs of one (source, destination, protocol) do not repeat until 65536 have been sent from one
 * CPU (RFC 6864 §4: only fragmentable datagrams need them unique). */
static __always_inline __u16 next_ip_id(void)
{
	__u32 zero = 0;
	__u32 *id = bpf_map_lookup_elem(&ip_ids, &zero);
	if (!id)
		return 0;
	if (*id == 0)
		*id = bpf_get_prandom_u32() | 1;
	*id += 1;
	return (__u16)*id;
}

/* One's-complement sum of a 32-bit partial sum and x, carries folded back. */
static __always_inline __u32 csum_add32(__u32 s, __u32 x)
{
	__u64 t = (__u64)s + x;
	return (__u32)((t & 0xffffffff) + (t >> 32));
}

/* The frame becomes an error to the sender of the packet it held: the L2 header with the MAC
 * addresses swapped (the tag kept), a new IP header from the packet's destination (the VIP) to
 * its source, the ICMP header, and the packet's first LB_ICMP4_QUOTE / LB_ICMP6_QUOTE bytes.
 * The verdict is XDP_TX: the sender is behind the port the packet came in on. mtu is the
 * largest packet (bytes, L3) that fits. The packet is counted as DROP_TOO_BIG either way. No
 * error answers an ICMP error (RFC 1122 §3.2.2), and a packet shorter than the quote (an egress
 * MTU below any sane value) is dropped without an answer. */
static __noinline int send_too_big(struct xdp_md *ctx, struct pkt *p, __u32 mtu, __u64 bytes)
{
	count_drop(DROP_TOO_BIG, bytes);
	if (p->icmp)
		return XDP_DROP;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 l2[18];
	__u32 l2len = p->l2len == 18 ? 18 : 14;
	if (data + 18 > data_end)
		return XDP_DROP;
	__builtin_memcpy(l2, data, 18);
	int v4 = p->flow.family == LB_AF_INET;
	__u32 quote = v4 ? LB_ICMP4_QUOTE : LB_ICMP6_QUOTE;
	__u32 hdrs = v4 ? sizeof(struct iphdr) + 8 : sizeof(struct ipv6hdr) + 8;
	if (p->iplen < quote)
		return XDP_DROP;
	if (bpf_xdp_adjust_head(ctx, -(int)hdrs))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + 18 > data_end)
		return XDP_DROP;
	__builtin_memcpy(data, l2 + 6, 6);
	__builtin_memcpy(data + 6, l2, 6);
	__u16 et = v4 ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);
	if (l2len == 18) {
		__builtin_memcpy(data + 12, l2 + 12, 4);
		*(__u16 *)(data + 16) = et;
	} else {
		*(__u16 *)(data + 12) = et;
	}

	__s64 sum;
	if (v4) {
		struct iphdr *o = data + l2len;
		if ((void *)o + sizeof(*o) + 8 + LB_ICMP4_QUOTE > data_end)
			return XDP_DROP;
		struct iphdr *q = (void *)o + sizeof(*o) + 8;
		o->version = 4;
		o->ihl = 5;
		o->tos = ICMP_TOS_INTERNETCONTROL;
		o->tot_len = bpf_htons(sizeof(*o) + 8 + LB_ICMP4_QUOTE);
		o->id = bpf_htons(next_ip_id());
		o->frag_off = 0;
		o->ttl = LB_TTL;
		o->protocol = IPPROTO_ICMP;
		o->saddr = q->daddr;
		o->daddr = q->saddr;
		o->check = 0;
		o->check = ipv4_csum(o);
		__u8 *ic = (void *)(o + 1);
		ic[0] = ICMP_DEST_UNREACH;
		ic[1] = ICMP_FRAG_NEEDED;
		*(__u16 *)(ic + 2) = 0;
		*(__u16 *)(ic + 4) = 0;
		*(__u16 *)(ic + 6) = bpf_htons(mtu > 0xffff ? 0xffff : mtu);
		sum = bpf_csum_diff(NULL, 0, (void *)ic, 512, 0);
		if (sum < 0)
			return XDP_DROP;
		sum = bpf_csum_diff(NULL, 0, (void *)ic + 512, 8 + LB_ICMP4_QUOTE - 512, (__u32)sum);
		if (sum < 0)
			return XDP_DROP;
		*(__u16 *)(ic + 2) = csum_fold32((__u32)sum);
	} else {
		struct ipv6hdr *o = data + l2len;
		if ((void *)o + sizeof(*o) + 8 + LB_ICMP6_QUOTE > data_end)
			return XDP_DROP;
		struct ipv6hdr *q = (void *)o + sizeof(*o) + 8;
		*(__u32 *)o = bpf_htonl(0x60000000);
		o->payload_len = bpf_htons(8 + LB_ICMP6_QUOTE);
		o->nexthdr = IPPROTO_ICMPV6;
		o->hop_limit = LB_TTL;
		o->saddr = q->daddr;
		o->daddr = q->saddr;
		__u8 *ic = (void *)(o + 1);
		ic[0] = ICMPV6_PKT_TOOBIG;
		ic[1] = 0;
		*(__u16 *)(ic + 2) = 0;
		*(__u32 *)(ic + 4) = bpf_htonl(mtu < IPV6_MIN_MTU ? IPV6_MIN_MTU : mtu);
		/* Pseudo-header (RFC 8200 §8.1): addresses, upper-layer length, next header. */
		sum = bpf_csum_diff(NULL, 0, (void *)&o->saddr, 32, 0);
		if (sum < 0)
			return XDP_DROP;
		__u32 s = csum_add32((__u32)sum, bpf_htonl(8 + LB_ICMP6_QUOTE));
		s = csum_add32(s, bpf_htonl(IPPROTO_ICMPV6));
		sum = bpf_csum_diff(NULL, 0, (void *)ic, 512, s);
		if (sum < 0)
			return XDP_DROP;
		sum = bpf_csum_diff(NULL, 0, (void *)ic + 512, 512, (__u32)sum);
		if (sum < 0)
			return XDP_DROP;
		sum = bpf_csum_diff(NULL, 0, (void *)ic + 1024, 8 + LB_ICMP6_QUOTE - 1024, (__u32)sum);
		if (sum < 0)
			return XDP_DROP;
		*(__u16 *)(ic + 2) = csum_fold32((__u32)sum);
	}
	__u32 want = l2len + hdrs + quote;
	__u32 have = bpf_xdp_get_buff_len(ctx);
	if (have > want && bpf_xdp_adjust_tail(ctx, -(int)(have - want)))
		return XDP_DROP;
	return XDP_TX;
}

#endif
