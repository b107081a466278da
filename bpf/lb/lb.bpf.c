// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* lb.bpf.c — govcloud's XDP L4 load balancer.
 *
 * On the host uplink: parse Ethernet (untagged or one 802.1Q tag), IPv4/IPv6, TCP/UDP; for a
 * packet to a VIP — keyed by (department routing domain, address, port, protocol) — pick a
 * backend (connection table first, then the VIP's Maglev table) and forward it:
 *   dsr: encapsulate (IPIP, IP6IP6, 4in6, 6in4 by backend family) to the backend's host, whose
 *        agent decapsulates (xdp_decap, or this program for local tunnel endpoints) only
 *        what a load-balancer host sent to a VIP with a backend there (decap.h);
 *   nat: rewrite to the backend (DNAT) from the host's SNAT address (SNAT), and rewrite the
 *        backend's replies back.
 * ICMP frag-needed / packet-too-big about a VIP flow follows the flow (hash of the embedded
 * header, swapped). Fragments to a VIP are counted and dropped, never misrouted. Truncated or
 * inconsistent headers to a VIP are counted and dropped; anything not to a VIP passes untouched.
 */
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

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define IP_MF_OFFSET 0x3fff
#define NEXTHDR_FRAGMENT 44

/* linux/icmp.h pulls in libc socket headers; the two fields needed are spelled out here. */
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
struct icmphdr {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__u32 rest;
};

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

/* What the parser learnt about one packet. */
struct pkt {
	__u32 l2len;  /* 14 or 18 */
	__u32 l4off;  /* offset of the L4 header from the frame start */
	__u32 iplen;  /* the IP packet's length from its own header */
	__u16 vlan;   /* 0: untagged */
	__u16 l3proto;/* ETH_P_* in network order */
	__u8 tos;
	__u8 syn_only;/* TCP SYN without ACK */
	__u8 icmp;    /* the flow was taken from an ICMP error's embedded header */
	__u8 pad;
	struct flow_key flow;
};

enum verdict_next {
	NEXT_PASS = -1,
};

static __always_inline __u32 hash_step(__u32 h, __u32 w)
{
	h ^= w;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* flow_hash is mirrored in dataplane/lbmap.FlowHash; change both together. The domain is not
 * hashed: VIP keys already separate domains. */
static __always_inline __u32 flow_hash(const struct flow_key *f)
{
	__u32 h = 0x9e3779b9;
#pragma unroll
	for (int i = 0; i < 4; i++)
		h = hash_step(h, f->src[i]);
#pragma unroll
	for (int i = 0; i < 4; i++)
		h = hash_step(h, f->dst[i]);
	h = hash_step(h, (__u32)f->sport | ((__u32)f->dport << 16));
	h = hash_step(h, f->proto);
	return h;
}

/* LB_NO_COUNTERS builds the program without its counters: only for the benchmark that prices
 * them (counters on versus off, same maps, same run). */
static __always_inline int count_drop(__u32 reason, __u64 bytes)
{
#ifndef LB_NO_COUNTERS
	struct lb_counter *c = bpf_map_lookup_elem(&drop_stats, &reason);
	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
#endif
	return XDP_DROP;
}

static __always_inline int is_vip_addr(const struct flow_key *f)
{
	struct vip_addr_key k = {};
	k.domain = f->domain;
	k.family = f->family;
	__builtin_memcpy(k.addr, f->dst, sizeof(k.addr));
	return bpf_map_lookup_elem(&vip_addrs, &k) != NULL;
}

/* A packet to a VIP address that cannot be parsed is dropped; anything else passes. */
static __always_inline int bad_header(struct pkt *p, __u64 bytes)
{
	if (is_vip_addr(&p->flow))
		return count_drop(DROP_MALFORMED, bytes);
	return XDP_PASS;
}

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

#include "decap.h"

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

/* L4 checksum field of the packet, or NULL for UDP over IPv4 without a checksum. */
static __always_inline __u16 *l4_csum(void *data, void *data_end, struct pkt *p)
{
	void *l4 = data + (p->l4off & 0xff);
	if (p->flow.proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > data_end)
			return NULL;
		return &th->check;
	}
	struct udphdr *uh = l4;
	if ((void *)(uh + 1) > data_end)
		return NULL;
	if (p->flow.family == LB_AF_INET && uh->check == 0)
		return NULL;
	return &uh->check;
}

/* Rewrite addresses and ports in place (nat both ways), fixing IP and L4 checksums. */
static __always_inline int rewrite(struct xdp_md *ctx, struct pkt *p, const __u32 *nsrc, const __u32 *ndst,
				   __u16 nsport, __u16 ndport)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u16 *csum = l4_csum(data, data_end, p);
	void *l4 = data + (p->l4off & 0xff);
	__u16 *ports = l4;
	if ((void *)(ports + 2) > data_end)
		return -1;

	if (p->flow.family == LB_AF_INET) {
		struct iphdr *iph = data + (p->l2len == 18 ? 18 : 14);
		if ((void *)(iph + 1) > data_end)
			return -1;
		csum_replace4(&iph->check, iph->saddr, nsrc[0]);
		csum_replace4(&iph->check, iph->daddr, ndst[0]);
		if (csum) {
			csum_replace4(csum, iph->saddr, nsrc[0]);
			csum_replace4(csum, iph->daddr, ndst[0]);
		}
		iph->saddr = nsrc[0];
		iph->daddr = ndst[0];
	} else {
		struct ipv6hdr *ip6 = data + (p->l2len == 18 ? 18 : 14);
		if ((void *)(ip6 + 1) > data_end)
			return -1;
		if (csum) {
			csum_replace16(csum, (__u32 *)&ip6->saddr, nsrc);
			csum_replace16(csum, (__u32 *)&ip6->daddr, ndst);
		}
		__builtin_memcpy(&ip6->saddr, nsrc, 16);
		__builtin_memcpy(&ip6->daddr, ndst, 16);
	}
	if (csum) {
		csum_replace2(csum, ports[0], nsport);
		csum_replace2(csum, ports[1], ndport);
		if (p->flow.proto == IPPROTO_UDP && *csum == 0)
			*csum = 0xffff;
	}
	ports[0] = nsport;
	ports[1] = ndport;
	return 0;
}

/* nat: pick a free source port toward the backend and record the reverse mapping. */
static __always_inline int snat_reserve(struct pkt *p, const struct backend *be, const __u32 *snat,
					__u16 bport, __u32 hash, __u16 *port_out)
{
	struct flow_key rk = {};
	struct nat_entry ne = {};
	rk.domain = p->flow.domain;
	__builtin_memcpy(rk.src, be->addr, 16);
	__builtin_memcpy(rk.dst, snat, 16);
	rk.sport = bport;
	rk.proto = p->flow.proto;
	rk.family = p->flow.family;
	__builtin_memcpy(ne.client, p->flow.src, 16);
	__builtin_memcpy(ne.vip, p->flow.dst, 16);
	ne.client_port = p->flow.sport;
	ne.vip_port = p->flow.dport;
	ne.family = p->flow.family;

#pragma unroll
	for (int i = 0; i < LB_SNAT_TRIES; i++) {
		__u32 port = LB_SNAT_PORT_MIN + (hash + i * 7919) % (65536 - LB_SNAT_PORT_MIN);
		rk.dport = bpf_htons((__u16)port);
		if (bpf_map_update_elem(&nat_rev, &rk, &ne, BPF_NOEXIST) == 0) {
			*port_out = rk.dport;
			return 0;
		}
		/* Taken: by this very flow (a retransmitted first packet) is fine. */
		struct nat_entry *old = bpf_map_lookup_elem(&nat_rev, &rk);
		if (old && old->client_port == ne.client_port && old->client[0] == ne.client[0] &&
		    old->client[1] == ne.client[1] && old->client[2] == ne.client[2] &&
		    old->client[3] == ne.client[3]) {
			*port_out = rk.dport;
			return 0;
		}
	}
	return -1;
}

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

/* A reply from a nat backend to our SNAT address: rewrite it back to VIP -> client. */
static __always_inline int nat_reply(struct xdp_md *ctx, struct pkt *p, const struct lb_config *cfg, __u64 bytes)
{
	if (p->icmp)
		return XDP_PASS;
	if (p->flow.family == LB_AF_INET) {
		if (p->flow.dst[0] != cfg->snat_src4 || cfg->snat_src4 == 0)
			return XDP_PASS;
	} else if (p->flow.dst[0] != cfg->snat_src6[0] || p->flow.dst[1] != cfg->snat_src6[1] ||
		   p->flow.dst[2] != cfg->snat_src6[2] || p->flow.dst[3] != cfg->snat_src6[3]) {
		return XDP_PASS;
	}
	struct nat_entry *ne = bpf_map_lookup_elem(&nat_rev, &p->flow);
	if (!ne)
		return XDP_PASS;
	__u32 vip[4], client[4];
	struct nexthop nh;
	__builtin_memcpy(vip, ne->vip, 16);
	__builtin_memcpy(client, ne->client, 16);
	int rc = lookup_nexthop(ctx, p->flow.family, vip, client, &nh, bytes);
	if (rc)
		return rc;
	if (rewrite(ctx, p, vip, client, ne->vip_port, ne->client_port))
		return count_drop(DROP_MALFORMED, bytes);
	return transmit(ctx, &nh);
}

static __always_inline void count(void *map, __u32 id, __u64 bytes)
{
#ifndef LB_NO_COUNTERS
	struct lb_counter *c = bpf_map_lookup_elem(map, &id);
	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
#endif
}

/* The frame's routing domain: its VLAN's, or the untagged domain. 0 when a tagged frame's VLAN
 * belongs to no department (such frames are not the LB's). */
static __always_inline int frame_domain(struct pkt *p, const struct lb_config *cfg)
{
	if (!p->vlan) {
		p->flow.domain = cfg->untagged_domain;
		return 1;
	}
	__u32 vid = p->vlan;
	__u32 *dom = bpf_map_lookup_elem(&vlan_domain, &vid);
	if (!dom || *dom == 0)
		return 0;
	p->flow.domain = *dom;
	return 1;
}

static __always_inline int process(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 bytes = (long)data_end - (long)data;
	struct pkt p = {};
	__u32 zero = 0;

	if (parse_l2(data, data_end, &p))
		return XDP_PASS;
	if (p.l3proto != bpf_htons(ETH_P_IP) && p.l3proto != bpf_htons(ETH_P_IPV6))
		return XDP_PASS;

	struct lb_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return XDP_PASS;
	int domain_ok = frame_domain(&p, cfg);
	/* Tunnelled to this host (a dsr backend lives here): decapsulated or dropped. */
	int rc = decap_tunnel(ctx, p.l2len, p.l3proto, p.flow.domain, domain_ok);
	if (rc != DECAP_NONE)
		return rc;
	if (!domain_ok)
		return XDP_PASS;

	rc = p.l3proto == bpf_htons(ETH_P_IP) ? parse_ipv4(ctx, &p, bytes) : parse_ipv6(ctx, &p, bytes);
	if (rc)
		return rc;

	struct vip_key vk = {};
	vk.domain = p.flow.domain;
	__builtin_memcpy(vk.addr, p.flow.dst, 16);
	vk.port = p.flow.dport;
	vk.proto = p.flow.proto;
	vk.family = p.flow.family;
	struct vip_meta *vm = bpf_map_lookup_elem(&vips, &vk);
	if (!vm)
		return nat_reply(ctx, &p, cfg, bytes);

	__u32 vip_id = vm->id;
	__u32 nat = vm->flags & F_VIP_NAT;
	if (nat && p.icmp)
		return count_drop(DROP_UNSUPPORTED, bytes);

	__u32 hash = 0; /* only needed when the connection table has no answer */
	__u32 bid = 0;
	__u16 snat_port = 0;
	struct backend *be = NULL;
	struct ct_entry *ct = bpf_map_lookup_elem(&conntrack, &p.flow);
	if (ct) {
		bid = ct->backend_id;
		snat_port = ct->snat_port;
		be = bpf_map_lookup_elem(&backends, &bid);
		if (be && !(be->flags & F_BACKEND_ACTIVE))
			be = NULL;
	}
	if (!be) {
		hash = flow_hash(&p.flow);
		void *ring = bpf_map_lookup_elem(&rings, &vip_id);
		if (!ring || cfg->ring_size == 0)
			return count_drop(DROP_NO_BACKEND, bytes);
		__u32 slot = hash % cfg->ring_size;
		__u32 *b = bpf_map_lookup_elem(ring, &slot);
		if (!b || *b == 0)
			return count_drop(DROP_NO_BACKEND, bytes);
		bid = *b;
		be = bpf_map_lookup_elem(&backends, &bid);
		if (!be || !(be->flags & F_BACKEND_ACTIVE))
			return count_drop(DROP_NO_BACKEND, bytes);

		__u16 bport = be->port ? be->port : p.flow.dport;
		if (nat && snat_reserve(&p, be, p.flow.family == LB_AF_INET ? (__u32[4]){cfg->snat_src4} : cfg->snat_src6,
					bport, hash, &snat_port))
			return count_drop(DROP_SNAT_EXHAUSTED, bytes);
		/* SYN-flood guard: a bare SYN is scheduled by Maglev (deterministic) but not remembered;
		 * the flow is inserted on its first non-SYN packet. ICMP errors never insert. */
		if (!p.icmp && (nat || !p.syn_only)) {
			struct ct_entry ne = {.backend_id = bid, .snat_port = snat_port, .atime_ns = bpf_ktime_get_ns()};
			if (bpf_map_update_elem(&conntrack, &p.flow, &ne, BPF_ANY) == 0) {
#ifndef LB_NO_COUNTERS
				struct vip_counter *vc = bpf_map_lookup_elem(&vip_stats, &vip_id);
				if (vc)
					vc->conns++;
#endif
			}
		}
	}

#ifndef LB_NO_COUNTERS
	struct vip_counter *vc = bpf_map_lookup_elem(&vip_stats, &vip_id);
	if (vc) {
		vc->packets++;
		vc->bytes += bytes;
	}
#endif
	count(&backend_stats, bid, bytes);

	if (!nat) {
		/* The backend's host is this one: the kernel's VIP route delivers it locally. */
		if (be->flags & F_BACKEND_LOCAL)
			return XDP_PASS;
		return encap(ctx, &p, bid, be, cfg, hash, bytes);
	}

	if (be->family != p.flow.family)
		return count_drop(DROP_UNSUPPORTED, bytes);
	__u32 baddr[4], snat[4] = {};
	__builtin_memcpy(baddr, be->addr, 16);
	if (p.flow.family == LB_AF_INET)
		snat[0] = cfg->snat_src4;
	else
		__builtin_memcpy(snat, cfg->snat_src6, 16);
	struct nexthop nh;
	rc = backend_nexthop(ctx, bid, be, snat, &nh, bytes);
	if (rc)
		return rc;
	if (rewrite(ctx, &p, snat, baddr, snat_port, be->port ? be->port : p.flow.dport))
		return count_drop(DROP_MALFORMED, bytes);
	return transmit(ctx, &nh);
}

/* The load balancer, attached to the host uplink. */
SEC("xdp")
int xdp_lb(struct xdp_md *ctx)
{
	return process(ctx);
}

/* Decapsulation only, for hosts that serve dsr backends but balance nothing: the same checks
 * as xdp_lb (decap.h); every other frame passes untouched. */
SEC("xdp")
int xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct pkt p = {};
	__u32 zero = 0;
	if (parse_l2(data, data_end, &p))
		return XDP_PASS;
	struct lb_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return XDP_PASS;
	int domain_ok = frame_domain(&p, cfg);
	int rc = decap_tunnel(ctx, p.l2len, p.l3proto, p.flow.domain, domain_ok);
	return rc == DECAP_NONE ? XDP_PASS : rc;
}

/* The cheapest possible program: the baseline the benchmarks print next to xdp_lb's cost. */
SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
