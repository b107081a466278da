/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* parse.h — Ethernet (untagged or one 802.1Q tag), IPv4 and IPv6 (the extension-header chain,
 * fragments by offset and M), TCP/UDP ports and the flow an ICMP error is about; frames of
 * several buffers (xdp.frags) by their whole length. Included by lb.bpf.c after count_drop,
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
#include "ipv6_ext.h"

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
		p->tflags = ((__u8 *)th)[13];
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

/* ICMPv4 errors whose quote names a flow (RFC 792, RFC 1812 §4.3.2): destination
 * unreachable (frag-needed among them), time exceeded, parameter problem. */
static __always_inline int icmp4_is_error(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED || type == ICMP_PARAMETERPROB;
}

static __always_inline int icmp6_is_error(__u8 type)
{
	return type == ICMPV6_DEST_UNREACH || type == ICMPV6_PKT_TOOBIG || type == ICMPV6_TIME_EXCEED ||
	       type == ICMPV6_PARAMPROB;
}

/* An ICMP error that could not be read: a too-big to a VIP is the LB's and is dropped with
 * reason; anything else is the kernel's. */
static __always_inline int icmp_unusable(struct pkt *p, int to_vip, __u32 reason, __u64 bytes)
{
	if (p->toobig && to_vip)
		return count_drop(reason, bytes);
	return XDP_PASS;
}

/* The frame's length: the linear part, or all buffers of a multi-buffer frame (xdp.frags),
 * asked only when the IP header claims more than the linear part holds. */
static __always_inline __u32 frame_len(struct xdp_md *ctx, struct pkt *p, __u32 linear)
{
	p->len = bpf_xdp_get_buff_len(ctx);
	return p->len > linear ? p->len : linear;
}

/* Parse IPv4 up to the flow key. Returns 0 to continue, else an XDP verdict. ICMP errors
 * (icmp4_is_error) sent to the source of the packet they quote, whose quote is TCP/UDP, yield
 * the quoted flow swapped (p->icmp); the caller decides whose they are. */
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
	p->df = !!(iph->frag_off & bpf_htons(IP_DF));
	__u32 ihl = iph->ihl * 4;
	__u32 avail = (long)data_end - (long)iph;
	p->iplen = bpf_ntohs(iph->tot_len);
	if (p->iplen > avail) {
		bytes = frame_len(ctx, p, bytes);
		avail = bytes - (p->l2len == 18 ? 18 : 14);
	}
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

	/* ICMP: errors about a flow may be the LB's (frag-needed to a VIP follows the flow; nat
	 * mode translates errors both ways); echo and the rest go to the kernel. */
	struct icmphdr *ic = l4;
	if ((void *)(ic + 1) > data_end)
		return bad_header(p, bytes);
	if (!icmp4_is_error(ic->type))
		return XDP_PASS;
	int to_vip = is_vip_addr(&p->flow);
	p->toobig = ic->type == ICMP_DEST_UNREACH && ic->code == ICMP_FRAG_NEEDED && to_vip;
	struct iphdr *in = (void *)(ic + 1);
	if ((void *)(in + 1) > data_end || in->ihl < 5 || in->version != 4)
		return icmp_unusable(p, to_vip, DROP_MALFORMED, bytes);
	__u32 qhl = in->ihl * 4;
	__u16 *ports = (void *)in + qhl;
	if ((void *)(ports + 2) > data_end)
		return icmp_unusable(p, to_vip, DROP_MALFORMED, bytes);
	if (in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP)
		return icmp_unusable(p, to_vip, DROP_UNSUPPORTED, bytes);
	/* An error goes to the source of the packet it quotes. */
	if (in->saddr != iph->daddr)
		return icmp_unusable(p, to_vip, DROP_MALFORMED, bytes);
	/* The embedded packet went VIP -> client; the flow is client -> VIP. */
	p->flow.src[0] = in->daddr;
	p->flow.dst[0] = in->saddr;
	p->flow.sport = ports[1];
	p->flow.dport = ports[0];
	p->flow.proto = in->protocol;
	p->icmp = 1;
	p->quote = p->l4off + sizeof(*ic);
	p->quote_l4 = p->quote + qhl;
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
	if (p->iplen > avail) {
		bytes = frame_len(ctx, p, bytes);
		avail = bytes - (p->l2len == 18 ? 18 : 14);
	}
	if (ip6->version != 6 || p->iplen > avail)
		return bad_header(p, bytes);

	/* The extension-header chain (ipv6_ext.h): fragments are judged by offset and M, not by
	 * the header's presence; the chain is walked to LB_MAX_EXTHDRS. */
	__u32 off = 0;
	__u8 nh = 0;
	switch (ipv6_walk(ip6, data_end, p->iplen - sizeof(*ip6), &off, &nh)) {
	case EXT_OK:
		break;
	case EXT_FRAGMENT:
		if (is_vip_addr(&p->flow))
			return count_drop(DROP_FRAGMENT, bytes);
		return XDP_PASS;
	case EXT_TRUNCATED:
	case EXT_MALFORMED:
		return bad_header(p, bytes);
	default: /* routing header not at its last segment, chain too long */
		if (is_vip_addr(&p->flow))
			return count_drop(DROP_UNSUPPORTED, bytes);
		return XDP_PASS;
	}
	off &= 0x3fff;
	p->l4off = p->l2len + off;
	void *l4 = (void *)ip6 + off;
	switch (nh) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		p->flow.proto = nh;
		if (parse_ports(l4, data_end, nh, p))
			return bad_header(p, bytes);
		return 0;
	case IPPROTO_ICMPV6:
		break;
	default:
		/* Not TCP/UDP to a VIP (ESP, SCTP, no next header): no ports to balance by. */
		if (is_vip_addr(&p->flow))
			return count_drop(DROP_UNSUPPORTED, bytes);
		return XDP_PASS;
	}

	struct icmp6hdr *ic = l4;
	if ((void *)(ic + 1) > data_end)
		return bad_header(p, bytes);
	if (!icmp6_is_error(ic->icmp6_type))
		return XDP_PASS;
	int to_vip = is_vip_addr(&p->flow);
	p->toobig = ic->icmp6_type == ICMPV6_PKT_TOOBIG && to_vip;
	struct ipv6hdr *in = (void *)(ic + 1);
	__u16 *ports = (void *)(in + 1);
	if ((void *)(ports + 2) > data_end || in->version != 6)
		return icmp_unusable(p, to_vip, DROP_MALFORMED, bytes);
	if (in->nexthdr != IPPROTO_TCP && in->nexthdr != IPPROTO_UDP)
		return icmp_unusable(p, to_vip, DROP_UNSUPPORTED, bytes);
	const __u32 *qs = (const __u32 *)&in->saddr, *d = (const __u32 *)&ip6->daddr;
	if (qs[0] != d[0] || qs[1] != d[1] || qs[2] != d[2] || qs[3] != d[3])
		return icmp_unusable(p, to_vip, DROP_MALFORMED, bytes);
	__builtin_memcpy(p->flow.src, &in->daddr, 16);
	__builtin_memcpy(p->flow.dst, &in->saddr, 16);
	p->flow.sport = ports[1];
	p->flow.dport = ports[0];
	p->flow.proto = in->nexthdr;
	p->icmp = 1;
	p->quote = p->l4off + sizeof(*ic);
	p->quote_l4 = p->quote + sizeof(*in);
	return 0;
}

#endif
