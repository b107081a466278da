/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* parse.h — Ethernet (untagged or one 802.1Q tag), IPv4 and IPv6 (extension headers, fragments),
 * TCP/UDP ports and the flow an ICMP error is about. Included by lb.bpf.c after count_drop,
 * is_vip_addr and bad_header. */
#ifndef GOVCLOUD_LB_PARSE_H
#define GOVCLOUD_LB_PARSE_H

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

static __always_inline int parse_l2(void *data, void *data_end, struct pkt *p)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return -1;
	__u16 proto = eth->h_proto;
	p->l2len = sizeof(*eth);
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vh = (void *)(eth + 1);
		if ((void *)(vh + 1) > data_end)
			return -1;
		p->vlan = bpf_ntohs(vh->tci) & 0x0fff;
		proto = vh->proto;
		p->l2len += sizeof(*vh);
		/* Double tags are never ours: the trunk program drops and counts them. */
		if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
			return -1;
	}
	p->l3proto = proto;
	return 0;
}

/* Ports of a TCP/UDP header at l4; NEXT_PASS-style negative on truncation. */
static __always_inline int parse_ports(void *l4, void *data_end, __u8 proto, struct pkt *p)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > data_end || th->doff < 5)
			return -1;
		p->flow.sport = th->source;
		p->flow.dport = th->dest;
		p->syn_only = th->syn && !th->ack;
		return 0;
	}
	struct udphdr *uh = l4;
	if ((void *)(uh + 1) > data_end || bpf_ntohs(uh->len) < sizeof(*uh))
		return -1;
	p->flow.sport = uh->source;
	p->flow.dport = uh->dest;
	return 0;
}

/* Parse IPv4 up to the flow key. Returns 0 to continue, else an XDP verdict. */
static __always_inline int parse_ipv4(struct xdp_md *ctx, struct pkt *p, __u64 bytes)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *iph = data + (p->l2len == 18 ? 18 : 14);
	if ((void *)(iph + 1) > data_end)
		return XDP_PASS;
	p->flow.family = LB_AF_INET;
	p->flow.src[0] = iph->saddr;
	p->flow.dst[0] = iph->daddr;
	p->tos = iph->tos;
	__u32 ihl = iph->ihl * 4;
	__u32 avail = (long)data_end - (long)iph;
	p->iplen = bpf_ntohs(iph->tot_len);
	if (iph->version != 4 || ihl < sizeof(*iph) || p->iplen < ihl || p->iplen > avail)
		return bad_header(p, bytes);

	if (iph->frag_off & bpf_htons(IP_MF_OFFSET)) {
		if (is_vip_addr(&p->flow))
			return count_drop(DROP_FRAGMENT, bytes);
		return XDP_PASS;
	}
	/* IPv4 options to a VIP are not balanced (Katran does the same): every host on the way
	 * would act on them, and the backend's host would answer a malformed one itself. */
	if (ihl != sizeof(*iph) && is_vip_addr(&p->flow))
		return count_drop(DROP_UNSUPPORTED, bytes);
	p->l4off = p->l2len + ihl;
	void *l4 = (void *)iph + ihl;
	if (l4 > data_end)
		return bad_header(p, bytes);

	if (iph->protocol == IPPROTO_TCP || iph->protocol == IPPROTO_UDP) {
		p->flow.proto = iph->protocol;
		if (parse_ports(l4, data_end, iph->protocol, p))
			return bad_header(p, bytes);
		return 0;
	}
	if (iph->protocol != IPPROTO_ICMP)
		return XDP_PASS;

	/* ICMP: only frag-needed about a VIP flow is ours; echo and the rest go to the kernel. */
	struct icmphdr *ic = l4;
	if ((void *)(ic + 1) > data_end)
		return bad_header(p, bytes);
	if (ic->type != ICMP_DEST_UNREACH || ic->code != ICMP_FRAG_NEEDED)
		return XDP_PASS;
	if (!is_vip_addr(&p->flow))
		return XDP_PASS;
	struct iphdr *in = (void *)(ic + 1);
	if ((void *)(in + 1) > data_end || in->ihl < 5 || in->version != 4)
		return count_drop(DROP_MALFORMED, bytes);
	__u16 *ports = (void *)in + in->ihl * 4;
	if ((void *)(ports + 2) > data_end)
		return count_drop(DROP_MALFORMED, bytes);
	if (in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP)
		return count_drop(DROP_UNSUPPORTED, bytes);
	/* The embedded packet went VIP -> client; the flow is client -> VIP. */
	p->flow.src[0] = in->daddr;
	p->flow.dst[0] = in->saddr;
	p->flow.sport = ports[1];
	p->flow.dport = ports[0];
	p->flow.proto = in->protocol;
	p->icmp = 1;
	return 0;
}

static __always_inline int parse_ipv6(struct xdp_md *ctx, struct pkt *p, __u64 bytes)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = data + (p->l2len == 18 ? 18 : 14);
	if ((void *)(ip6 + 1) > data_end)
		return XDP_PASS;
	p->flow.family = LB_AF_INET6;
	__builtin_memcpy(p->flow.src, &ip6->saddr, 16);
	__builtin_memcpy(p->flow.dst, &ip6->daddr, 16);
	p->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
	__u32 avail = (long)data_end - (long)ip6;
	p->iplen = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
	if (ip6->version != 6 || p->iplen > avail)
		return bad_header(p, bytes);

	p->l4off = p->l2len + sizeof(*ip6);
	void *l4 = (void *)(ip6 + 1);
	switch (ip6->nexthdr) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		p->flow.proto = ip6->nexthdr;
		if (parse_ports(l4, data_end, ip6->nexthdr, p))
			return bad_header(p, bytes);
		return 0;
	case NEXTHDR_FRAGMENT:
		if (is_vip_addr(&p->flow))
			return count_drop(DROP_FRAGMENT, bytes);
		return XDP_PASS;
	case IPPROTO_ICMPV6:
		break;
	default:
		/* Extension headers before L4 are not parsed: never guess the ports of a VIP flow. */
		if (is_vip_addr(&p->flow))
			return count_drop(DROP_UNSUPPORTED, bytes);
		return XDP_PASS;
	}

	struct icmp6hdr *ic = l4;
	if ((void *)(ic + 1) > data_end)
		return bad_header(p, bytes);
	if (ic->icmp6_type != ICMPV6_PKT_TOOBIG || !is_vip_addr(&p->flow))
		return XDP_PASS;
	struct ipv6hdr *in = (void *)(ic + 1);
	__u16 *ports = (void *)(in + 1);
	if ((void *)(ports + 2) > data_end || in->version != 6)
		return count_drop(DROP_MALFORMED, bytes);
	if (in->nexthdr != IPPROTO_TCP && in->nexthdr != IPPROTO_UDP)
		return count_drop(DROP_UNSUPPORTED, bytes);
	__builtin_memcpy(p->flow.src, &in->daddr, 16);
	__builtin_memcpy(p->flow.dst, &in->saddr, 16);
	p->flow.sport = ports[1];
	p->flow.dport = ports[0];
	p->flow.proto = in->nexthdr;
	p->icmp = 1;
	return 0;
}

#endif
