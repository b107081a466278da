/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* decap.h — decapsulation for dsr backends on this host, shared by xdp_lb and xdp_decap.
 *
 * A frame is a tunnel to this host when its outer destination is one of the host's tunnel
 * endpoints (decap_addrs) and its outer protocol is IPIP (4) or IPv6 (41): IPIP, 6in4, 4in6,
 * IP6IP6 (for IPv6 also behind extension headers); or UDP to lb_config.gue_port (an outer IPv4
 * header without options, or an IPv6 header right before UDP) carrying GUE variant 1, the inner
 * packet right behind the UDP header, its version nibble naming it (the UDP checksum is not
 * verified, RFC 6936: the inner headers carry their own). Such a frame is decapsulated or dropped here,
 * in XDP, so the kernel never gets to reassemble, decapsulate or route it. It is decapsulated
 * only when it is what a load balancer sends (bpf/lb/lb.bpf.c encap()):
 *   outer  not a fragment (IPv4 MF or offset; an IPv6 fragment header) -> else DROP_DECAP_FRAGMENT;
 *          IPv4: version 4, no options (IHL 5), total length within the frame (the header
 *          checksum is not verified: the addresses are checked against the maps, and the
 *          header is gone after decapsulation);
 *          IPv6: version 6, the tunnel protocol as the first next header, payload within the
 *          frame; GUE: UDP length equal to the outer payload, inner version 4 or 6 (not a GUE
 *          header, variant 0) -> else DROP_DECAP_MALFORMED;
 *          (source, destination) in tunnel_srcs4/tunnel_srcs (from a load-balancer host) -> else
 *          DROP_DECAP_SOURCE;
 *   inner  version matching the outer protocol, IPv4 without options (IHL 5), length equal to the outer
 *          payload, TCP/UDP header complete -> else DROP_DECAP_MALFORMED; not a fragment ->
 *          else DROP_DECAP_FRAGMENT; TCP or UDP to (domain, address, port, protocol) in
 *          local_vips4/local_vips, or an ICMP frag-needed / ICMPv6 packet-too-big to a local VIP quoting
 *          that VIP's flow (the LB forwards those for path MTU discovery) -> else
 *          DROP_DECAP_NOT_LOCAL_VIP (nested tunnels, ICMP echo, guest addresses, other ports).
 *          An inner IPv6 extension-header chain is walked as the LB walks it (ipv6_ext.h).
 *   ECN    the outer ECN field is merged into the inner header (RFC 6040 §4.2; the inner IPv4
 *          checksum follows); outer CE over a Not-ECT inner packet -> DROP_DECAP_ECN.
 * Frames of several buffers (xdp.frags) are judged by their whole length.
 * The domain is the frame's: its VLAN's (vlan_domain) or, untagged, lb_config.untagged_domain;
 * a VLAN without a domain matches no local VIP.
 *
 * Built with -DLB_NO_DECAP_CHECKS it decapsulates as before these checks existed (destination
 * and protocol only; IPv4 fragments and options, IPv6 extension headers pass untouched): only
 * for the benchmark that prices the checks.
 *
 * Included by lb.bpf.c after its maps and count_drop / restore_l2 helpers.
 */
#ifndef GOVCLOUD_LB_DECAP_H
#define GOVCLOUD_LB_DECAP_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_maps.h"
#include "ipv6_ext.h"

/* decap_tunnel's answer for a frame that is no tunnel to this host: the caller goes on. */
#define DECAP_NONE (-1)

#ifndef IP_MF_OFFSET
#define IP_MF_OFFSET 0x3fff
#endif
#define DECAP_NEXTHDR_HOP 0
#define DECAP_NEXTHDR_ROUTING 43
#define DECAP_NEXTHDR_FRAGMENT 44
#define DECAP_NEXTHDR_AUTH 51
#define DECAP_NEXTHDR_DEST 60
#define DECAP_ICMP_DEST_UNREACH 3
#define DECAP_ICMP_FRAG_NEEDED 4

/* The fields of an ICMPv4 header the checks read (linux/icmp.h pulls in libc headers). */
struct decap_icmphdr {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__u32 rest;
};

static __always_inline int is_decap_addr(__u8 family, const void *addr)
{
	struct vip_addr_key k = {};
	k.family = family;
	__builtin_memcpy(k.addr, addr, family == LB_AF_INET ? 4 : 16);
	return bpf_map_lookup_elem(&decap_addrs, &k) != NULL;
}

/* RFC 6040 §4.2's table for the outer ECN codepoints decapsulation acts on (CE = 3, ECT(1) = 1):
 * the inner packet's new ECN field, or -1 for CE over Not-ECT (drop). */
static __always_inline int ecn_merge(__u8 outer_ecn, __u8 iecn)
{
	if (outer_ecn == 3)
		return iecn == 0 ? -1 : 3;
	return iecn == 2 ? 1 : iecn;
}

/* RFC 6040 §4.2: merge the outer ECN field (outer_ecn, 0-3) into the inner header at in
 * (inner_proto, network order) before the outer header goes: outer CE marks an ECN-capable
 * inner CE, outer ECT(1) turns inner ECT(0) into ECT(1); the inner IPv4 checksum follows.
 * -1: outer CE over a Not-ECT inner packet, which must be dropped. */
static __always_inline int ecn_decap(void *in, void *data_end, __u16 inner_proto, __u8 outer_ecn)
{
	if (outer_ecn != 3 && outer_ecn != 1)
		return 0; /* Not-ECT and ECT(0) leave the inner header as it is */
	if (inner_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ih = in;
		if ((void *)(ih + 1) > data_end)
			return 0;
		__u8 iecn = ih->tos & 3;
		int ecn = ecn_merge(outer_ecn, iecn);
		if (ecn < 0)
			return -1;
		if (ecn != iecn) {
			__u16 old = *(__u16 *)ih;
			ih->tos = (ih->tos & ~3) | ecn;
			csum_replace2(&ih->check, old, *(__u16 *)ih);
		}
		return 0;
	}
	__u8 *b = in;
	if ((void *)(b + 2) > data_end)
		return 0;
	int ecn = ecn_merge(outer_ecn, (b[1] >> 4) & 3);
	if (ecn < 0)
		return -1;
	b[1] = (b[1] & 0xcf) | (ecn << 4);
	return 0;
}

/* Strip an outer header (IPv4/IPv6, and the UDP header of GUE) of outer_len bytes whose payload
 * is an inner_proto packet, after merging the outer ECN field (outer_ecn) into it; the L2 header
 * (and its tag) is kept. */
static __always_inline int decap(struct xdp_md *ctx, __u32 l2len, __u32 outer_len, __u16 inner_proto, __u8 outer_ecn)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 l2[18];
	if (data + 18 > data_end)
		return XDP_DROP;
	if (outer_ecn && ecn_decap(data + (l2len == 18 ? 18 : 14) + (outer_len & 0x3f), data_end, inner_proto, outer_ecn))
		return count_drop(DROP_DECAP_ECN, (long)data_end - (long)data);
	__builtin_memcpy(l2, data, 18);
	if (bpf_xdp_adjust_head(ctx, (int)outer_len))
		return count_drop(DROP_ENCAP, 0);
	if (restore_l2(ctx, l2, l2len, inner_proto))
		return XDP_DROP;
	__u32 zero = 0;
	struct lb_counter *c = bpf_map_lookup_elem(&decap_stats, &zero);
	if (c) {
		c->packets++;
		c->bytes += (long)ctx->data_end - (long)ctx->data;
	}
	return XDP_PASS;
}

/* GUE (lb_config.gue_port) behind an outer header: the inner protocol as a tunnel protocol
 * (IPPROTO_IPIP, IPPROTO_IPV6) read from the version nibble right behind the UDP header (GUE
 * variant 1), GUE_BAD for GUE of another form (variant 0, a control message), 0 when the UDP
 * datagram is no GUE (another port, no GUE port configured). */
#define GUE_BAD 255
static __always_inline __u8 gue_inner(struct udphdr *uh, void *data_end)
{
	__u32 zero = 0;
	if ((void *)(uh + 1) + 1 > data_end)
		return 0;
	struct lb_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || cfg->gue_port == 0 || uh->dest != cfg->gue_port)
		return 0;
	__u8 v = *(__u8 *)(uh + 1) >> 4;
	return v == 4 ? IPPROTO_IPIP : v == 6 ? IPPROTO_IPV6 : GUE_BAD;
}

static __always_inline int is_ipv6_exthdr(__u8 nh)
{
	return nh == DECAP_NEXTHDR_HOP || nh == DECAP_NEXTHDR_ROUTING || nh == DECAP_NEXTHDR_FRAGMENT ||
	       nh == DECAP_NEXTHDR_AUTH || nh == DECAP_NEXTHDR_DEST;
}

#ifndef LB_NO_DECAP_CHECKS

/* The UDP length of a GUE header (0 when the header is not inside the frame). */
static __always_inline __u32 gue_len(struct udphdr *uh, void *data_end)
{
	if ((void *)(uh + 1) > data_end)
		return 0;
	return bpf_ntohs(uh->len);
}

/* A tunnel from an LB host to this host: (src, dst) in tunnel_srcs. */
static __always_inline int is_lb_tunnel(__u8 family, const void *src, const void *dst)
{
	if (family == LB_AF_INET) {
		struct tunnel4_key k4 = {*(const __u32 *)src, *(const __u32 *)dst};
		return bpf_map_lookup_elem(&tunnel_srcs4, &k4) != NULL;
	}
	struct tunnel_key k = {};
	k.family = family;
	__builtin_memcpy(k.src, src, family == LB_AF_INET ? 4 : 16);
	__builtin_memcpy(k.dst, dst, family == LB_AF_INET ? 4 : 16);
	return bpf_map_lookup_elem(&tunnel_srcs, &k) != NULL;
}

/* 0 when (domain, addr, port, proto) is a VIP with a backend here, else the drop reason. */
static __always_inline __u32 local_vip_reason(__u32 domain, __u8 family, const void *addr, __u16 port, __u8 proto)
{
	if (family == LB_AF_INET) {
		struct vip4_key k4 = {.domain = domain, .addr = *(const __u32 *)addr, .port = port, .proto = proto};
		return bpf_map_lookup_elem(&local_vips4, &k4) ? 0 : DROP_DECAP_NOT_LOCAL_VIP;
	}
	struct vip_key k = {};
	k.domain = domain;
	__builtin_memcpy(k.addr, addr, family == LB_AF_INET ? 4 : 16);
	k.port = port;
	k.proto = proto;
	k.family = family;
	return bpf_map_lookup_elem(&local_vips, &k) ? 0 : DROP_DECAP_NOT_LOCAL_VIP;
}

/* The TCP/UDP header at l4 (l4len bytes of inner packet left) and its VIP: 0 or a reason. */
static __always_inline __u32 l4_reason(void *l4, void *data_end, __u32 l4len, __u8 proto, __u32 domain,
				       __u8 family, const void *dst)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > data_end || l4len < sizeof(*th) || th->doff < 5 || th->doff * 4U > l4len)
			return DROP_DECAP_MALFORMED;
		return local_vip_reason(domain, family, dst, th->dest, IPPROTO_TCP);
	}
	struct udphdr *uh = l4;
	if ((void *)(uh + 1) > data_end || l4len < sizeof(*uh) || bpf_ntohs(uh->len) < sizeof(*uh) ||
	    bpf_ntohs(uh->len) > l4len)
		return DROP_DECAP_MALFORMED;
	return local_vip_reason(domain, family, dst, uh->dest, IPPROTO_UDP);
}

/* The common case, IPv4 in IPv4 (directly or in GUE, hl 20 or 28 bytes of outer headers) from
 * an LB host to a local IPv4 VIP, in one lookup: 1 when o (an outer IPv4 header in the frame,
 * tot bytes long by its header, avail bytes in the frame) is such a tunnel, well formed by
 * every check below; 0 sends it through the full checks (which decide and name the drop
 * reason). */
static __always_inline int fast4_accept(struct iphdr *o, void *data_end, __u32 domain, __u32 hl, __u32 tot, __u32 avail)
{
	struct iphdr *in = (void *)o + (hl & 0x3f);
	if ((void *)(in + 1) > data_end || (o->frag_off & bpf_htons(IP_MF_OFFSET)) || *(__u8 *)o != 0x45 ||
	    tot > avail || *(__u8 *)in != 0x45 || bpf_ntohs(in->tot_len) + hl != tot ||
	    (in->frag_off & bpf_htons(IP_MF_OFFSET)))
		return 0;
	if (hl != sizeof(*o) && gue_len((void *)(o + 1), data_end) != tot - sizeof(*o))
		return 0;
	struct decap4_key k = {.src = o->saddr, .dst = o->daddr, .domain = domain, .vip = in->daddr, .proto = in->protocol};
	__u32 l4len = tot - hl - sizeof(*o);
	if (in->protocol == IPPROTO_TCP) {
		struct tcphdr *th = (void *)(in + 1);
		if ((void *)(th + 1) > data_end || l4len < sizeof(*th) || th->doff < 5 || th->doff * 4U > l4len)
			return 0;
		k.port = th->dest;
	} else if (in->protocol == IPPROTO_UDP) {
		struct udphdr *uh = (void *)(in + 1);
		if ((void *)(uh + 1) > data_end || bpf_ntohs(uh->len) < sizeof(*uh) || bpf_ntohs(uh->len) > l4len)
			return 0;
		k.port = uh->dest;
	} else {
		return 0;
	}
	return bpf_map_lookup_elem(&decap_allow4, &k) != NULL;
}

/* The inner IPv4 packet at in, len bytes by the outer header (all inside the frame): 0 when it
 * is what the LB sends to a local VIP, else the drop reason. */
static __always_inline __u32 inner4_reason(struct iphdr *in, void *data_end, __u32 len, __u32 domain)
{
	if ((void *)(in + 1) > data_end)
		return DROP_DECAP_MALFORMED;
	__u32 ihl = in->ihl * 4;
	/* No options: the load balancer never forwards them (parse.h), and this host's stack would
	 * act on them on the way to the backend. */
	if (in->version != 4 || ihl != sizeof(*in) || bpf_ntohs(in->tot_len) != len || len < ihl)
		return DROP_DECAP_MALFORMED;
	if (in->frag_off & bpf_htons(IP_MF_OFFSET))
		return DROP_DECAP_FRAGMENT;
	void *l4 = (void *)in + ihl;
	__u32 l4len = len - ihl;
	if (in->protocol == IPPROTO_TCP || in->protocol == IPPROTO_UDP)
		return l4_reason(l4, data_end, l4len, in->protocol, domain, LB_AF_INET, &in->daddr);
	if (in->protocol != IPPROTO_ICMP)
		return DROP_DECAP_NOT_LOCAL_VIP; /* nested tunnels and every other protocol */

	/* Frag-needed to a VIP about its own flow (VIP -> client), as xdp_lb forwards it. */
	struct decap_icmphdr *ic = l4;
	if ((void *)(ic + 1) > data_end || l4len < sizeof(*ic))
		return DROP_DECAP_MALFORMED;
	if (ic->type != DECAP_ICMP_DEST_UNREACH || ic->code != DECAP_ICMP_FRAG_NEEDED)
		return DROP_DECAP_NOT_LOCAL_VIP;
	struct iphdr *q = (void *)(ic + 1);
	if ((void *)(q + 1) > data_end || q->version != 4 || q->ihl < 5)
		return DROP_DECAP_MALFORMED;
	__u32 qhl = q->ihl * 4;
	__u16 *ports = (void *)q + qhl;
	if ((void *)(ports + 2) > data_end || l4len < sizeof(*ic) + qhl + 4)
		return DROP_DECAP_MALFORMED;
	if (q->saddr != in->daddr || (q->protocol != IPPROTO_TCP && q->protocol != IPPROTO_UDP))
		return DROP_DECAP_NOT_LOCAL_VIP;
	return local_vip_reason(domain, LB_AF_INET, &q->saddr, ports[0], q->protocol);
}

/* The inner IPv6 packet at in: as inner4_reason. */
static __always_inline __u32 inner6_reason(struct ipv6hdr *in, void *data_end, __u32 len, __u32 domain)
{
	if ((void *)(in + 1) > data_end)
		return DROP_DECAP_MALFORMED;
	if (in->version != 6 || bpf_ntohs(in->payload_len) + sizeof(*in) != len)
		return DROP_DECAP_MALFORMED;
	/* The same chain the load balancer walked (ipv6_ext.h) before it sent the packet. */
	__u32 off = 0;
	__u8 nh = 0;
	switch (ipv6_walk(in, data_end, len - sizeof(*in), &off, &nh)) {
	case EXT_OK:
		break;
	case EXT_FRAGMENT:
		return DROP_DECAP_FRAGMENT;
	case EXT_TRUNCATED:
	case EXT_MALFORMED:
		return DROP_DECAP_MALFORMED;
	default:
		return DROP_DECAP_NOT_LOCAL_VIP; /* not its final destination, a chain too long */
	}
	off &= 0x3fff;
	void *l4 = (void *)in + off;
	__u32 l4len = len - off;
	switch (nh) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		return l4_reason(l4, data_end, l4len, nh, domain, LB_AF_INET6, &in->daddr);
	case IPPROTO_ICMPV6:
		break;
	default:
		return DROP_DECAP_NOT_LOCAL_VIP; /* nested tunnels, the rest */
	}
	struct icmp6hdr *ic = l4;
	if ((void *)(ic + 1) > data_end || l4len < sizeof(*ic))
		return DROP_DECAP_MALFORMED;
	if (ic->icmp6_type != ICMPV6_PKT_TOOBIG)
		return DROP_DECAP_NOT_LOCAL_VIP;
	struct ipv6hdr *q = (void *)(ic + 1);
	__u16 *ports = (void *)(q + 1);
	if ((void *)(ports + 2) > data_end || l4len < sizeof(*ic) + sizeof(*q) + 4 || q->version != 6)
		return DROP_DECAP_MALFORMED;
	const __u32 *qs = (const __u32 *)&q->saddr, *d = (const __u32 *)&in->daddr;
	if (qs[0] != d[0] || qs[1] != d[1] || qs[2] != d[2] || qs[3] != d[3] ||
	    (q->nexthdr != IPPROTO_TCP && q->nexthdr != IPPROTO_UDP))
		return DROP_DECAP_NOT_LOCAL_VIP;
	return local_vip_reason(domain, LB_AF_INET6, &q->saddr, ports[0], q->nexthdr);
}

/* Extension headers behind an outer IPv6 header to a tunnel endpoint: 0 when the chain ends in
 * another protocol (not a tunnel), else the drop reason. Up to LB_DECAP_MAX_EXTHDRS are walked;
 * a longer or truncated chain is malformed. */
static __always_inline __u32 exthdr_reason(struct ipv6hdr *o, void *data_end)
{
	__u8 nh = o->nexthdr;
	__u8 *h = (void *)(o + 1);
#pragma unroll
	for (int i = 0; i < LB_DECAP_MAX_EXTHDRS; i++) {
		if (nh == IPPROTO_IPIP || nh == IPPROTO_IPV6)
			return DROP_DECAP_MALFORMED; /* the LB never puts extension headers in front */
		if (!is_ipv6_exthdr(nh))
			return 0;
		if ((void *)(h + 8) > data_end)
			return DROP_DECAP_MALFORMED;
		if (nh == DECAP_NEXTHDR_FRAGMENT) {
			/* Later fragments hold no header of the fragmentable part: a fragment that may
			 * carry a tunnel is dropped before anything can reassemble it. */
			if (h[0] == IPPROTO_IPIP || h[0] == IPPROTO_IPV6 || is_ipv6_exthdr(h[0]))
				return DROP_DECAP_FRAGMENT;
			return 0;
		}
		__u32 len = nh == DECAP_NEXTHDR_AUTH ? (h[1] + 2) * 4U : (h[1] + 1) * 8U;
		nh = h[0];
		h += len;
	}
	if (nh == IPPROTO_IPIP || nh == IPPROTO_IPV6 || is_ipv6_exthdr(nh))
		return DROP_DECAP_MALFORMED;
	return 0;
}

#endif /* LB_NO_DECAP_CHECKS */

/* Decapsulate or drop a tunnel to this host (see the top of this file). l2len is 14 or 18,
 * l3proto the ethertype (network order), domain the frame's routing domain, valid when
 * domain_ok. Returns DECAP_NONE for any other frame, else the XDP verdict.
 * With the checks, IPv4 in IPv4 (direct or GUE) to a local IPv4 VIP is accepted by one lookup
 * (fast4_accept); everything else, and every drop, goes through the full checks, where the
 * pair lookup in tunnel_srcs4/tunnel_srcs answers "ours, from an LB host" and only a miss asks
 * decap_addrs whether the frame is ours at all (then its source is wrong). */
static __always_inline int decap_tunnel(struct xdp_md *ctx, __u32 l2len, __u16 l3proto, __u32 domain, int domain_ok)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *l3 = data + (l2len == 18 ? 18 : 14);
	__u64 bytes = (long)data_end - (long)data;
#ifndef LB_NO_DECAP_CHECKS
	__u32 reason = 0;
#endif

	if (l3proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *o = l3;
		if ((void *)(o + 1) > data_end)
			return DECAP_NONE;
		__u8 tp = o->protocol;
		__u32 hl = sizeof(*o);
		if (tp == IPPROTO_UDP) {
			if (*(__u8 *)o != 0x45 || !(tp = gue_inner((void *)(o + 1), data_end)))
				return DECAP_NONE;
			hl += sizeof(struct udphdr);
		} else if (tp != IPPROTO_IPIP && tp != IPPROTO_IPV6) {
			return DECAP_NONE;
		}
		__u16 inner = tp == IPPROTO_IPIP ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);
		__u8 ecn = o->tos & 3;
		__u32 tot = bpf_ntohs(o->tot_len);
		__u32 avail = (long)data_end - (long)o;
		if (tot > avail) {
			bytes = bpf_xdp_get_buff_len(ctx);
			avail = bytes - (l2len == 18 ? 18 : 14);
		}
#ifdef LB_NO_DECAP_CHECKS
		if (!is_decap_addr(LB_AF_INET, &o->daddr))
			return DECAP_NONE;
		if (o->ihl != 5 || (o->frag_off & bpf_htons(IP_MF_OFFSET)) || tp == GUE_BAD)
			return DECAP_NONE;
		(void)tot;
		(void)avail;
#else
		if (tp == IPPROTO_IPIP && domain_ok && fast4_accept(o, data_end, domain, hl, tot, avail))
			return decap(ctx, l2len, hl, inner, ecn);
		int from_lb = is_lb_tunnel(LB_AF_INET, &o->saddr, &o->daddr);
		if (!from_lb && !is_decap_addr(LB_AF_INET, &o->daddr))
			return DECAP_NONE;
		if (o->frag_off & bpf_htons(IP_MF_OFFSET))
			reason = DROP_DECAP_FRAGMENT;
		else if (o->version != 4 || o->ihl != 5 || tot < hl || tot > avail || tp == GUE_BAD ||
			 (hl != sizeof(*o) && gue_len((void *)(o + 1), data_end) != tot - sizeof(*o)))
			reason = DROP_DECAP_MALFORMED;
		else if (!from_lb)
			reason = DROP_DECAP_SOURCE;
		else if (!domain_ok)
			reason = DROP_DECAP_NOT_LOCAL_VIP;
		else if (tp == IPPROTO_IPIP)
			reason = inner4_reason((void *)o + (hl & 0x3f), data_end, tot - hl, domain);
		else
			reason = inner6_reason((void *)o + (hl & 0x3f), data_end, tot - hl, domain);
		if (reason)
			return count_drop(reason, bytes);
#endif
		return decap(ctx, l2len, hl, inner, ecn);
	}
	if (l3proto != bpf_htons(ETH_P_IPV6))
		return DECAP_NONE;

	struct ipv6hdr *o = l3;
	if ((void *)(o + 1) > data_end)
		return DECAP_NONE;
	__u8 nh = o->nexthdr;
	__u32 hl = sizeof(*o);
	if (nh == IPPROTO_UDP) {
		if (!(nh = gue_inner((void *)(o + 1), data_end)))
			return DECAP_NONE;
		hl += sizeof(struct udphdr);
	} else if (nh != IPPROTO_IPIP && nh != IPPROTO_IPV6 && !is_ipv6_exthdr(nh)) {
		return DECAP_NONE;
	}
	__u8 ecn = (o->flow_lbl[0] >> 4) & 3;
#ifdef LB_NO_DECAP_CHECKS
	if (!is_decap_addr(LB_AF_INET6, &o->daddr))
		return DECAP_NONE;
	if (nh != IPPROTO_IPIP && nh != IPPROTO_IPV6)
		return DECAP_NONE;
#else
	int from_lb = is_lb_tunnel(LB_AF_INET6, &o->saddr, &o->daddr);
	if (!from_lb && !is_decap_addr(LB_AF_INET6, &o->daddr))
		return DECAP_NONE;
	if (nh != IPPROTO_IPIP && nh != IPPROTO_IPV6 && nh != GUE_BAD) {
		reason = exthdr_reason(o, data_end);
		return reason ? count_drop(reason, bytes) : DECAP_NONE;
	}
	__u32 plen = bpf_ntohs(o->payload_len);
	__u32 avail = (long)data_end - (long)o;
	if (plen + sizeof(*o) > avail) {
		bytes = bpf_xdp_get_buff_len(ctx);
		avail = bytes - (l2len == 18 ? 18 : 14);
	}
	if (o->version != 6 || plen + sizeof(*o) > avail || plen + sizeof(*o) < hl || nh == GUE_BAD ||
	    (hl != sizeof(*o) && gue_len((void *)(o + 1), data_end) != plen))
		reason = DROP_DECAP_MALFORMED;
	else if (!from_lb)
		reason = DROP_DECAP_SOURCE;
	else if (!domain_ok)
		reason = DROP_DECAP_NOT_LOCAL_VIP;
	else if (nh == IPPROTO_IPIP)
		reason = inner4_reason((void *)o + (hl & 0x3f), data_end, plen + sizeof(*o) - hl, domain);
	else
		reason = inner6_reason((void *)o + (hl & 0x3f), data_end, plen + sizeof(*o) - hl, domain);
	if (reason)
		return count_drop(reason, bytes);
#endif
	return decap(ctx, l2len, hl, nh == IPPROTO_IPIP ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6), ecn);
}

#endif
