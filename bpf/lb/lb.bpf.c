// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* lb.bpf.c — govcloud's XDP L4 load balancer.
 *
 * On the host uplink: parse Ethernet (untagged or one 802.1Q tag), IPv4/IPv6, TCP/UDP; for a
 * packet to a VIP — keyed by (department routing domain, address, port, protocol) — pick a
 * backend (connection table first, then the VIP's Maglev table) and forward it:
 *   dsr: encapsulate (GUE with a per-flow source port by default, or IPIP; IPv4 or IPv6 outer
 *        header by backend family, RFC 2003/2473/4213/6040 fields) to the backend's host,
 *        whose agent decapsulates (xdp_decap, or this program for local tunnel endpoints)
 *        only what a load-balancer host sent to a VIP with a backend there (decap.h); a
 *        packet that would not fit the egress MTU is answered with frag-needed /
 *        packet-too-big (icmp_gen.h);
 *   nat: rewrite to the backend (DNAT) from the host's SNAT address (SNAT), and rewrite the
 *        backend's replies back; ICMP errors are translated both ways (RFC 5508).
 * ICMP frag-needed / packet-too-big about a dsr VIP flow follows the flow (hash of the embedded
 * header, swapped). Fragments to a VIP (by offset and M; IPv6 behind its extension-header
 * chain) are counted and dropped, never misrouted. Truncated or
 * inconsistent headers to a VIP are counted and dropped; anything not to a VIP passes untouched.
 *
 * One header per job (Katran's split): lb_consts.h, lb_structs.h, lb_maps.h; lb_pkt.h (the
 * parsed packet, flow hash), parse.h (parsing), ipv6_ext.h (the IPv6 extension-header chain),
 * icmp_gen.h (too-big answers, IP IDs), encap.h (next hop, transmit, dsr encapsulation),
 * decap.h (decapsulation and its checks), nat.h (nat rewrites, ICMP translation). This file
 * holds the counters, the per-packet decision (process) and the programs, all multi-buffer
 * (SEC("xdp.frags")) so they attach to MTU 9000 uplinks.
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

#include "lb_pkt.h"

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

#include "icmp_gen.h"
#include "encap.h"
#include "decap.h"
#include "nat.h"
#include "parse.h"

/* TCP flag bits (byte 13 of the TCP header; struct pkt.tflags). */
#define TH_FIN 0x01
#define TH_RST 0x04

/* Whether a connection-table entry is within its life: LB_CT_CLOSE_LIFE_NS after a FIN or RST,
 * else LB_CT_TCP_LIFE_NS for TCP and LB_CT_OTHER_LIFE_NS for UDP, since its last packet. */
static __always_inline int ct_live(const struct ct_entry *ct, __u8 proto, __u64 now)
{
	__s64 idle = (__s64)(now - ct->atime_ns); /* another CPU may have stored a later time */
	if (ct->flags & CT_F_CLOSING)
		return idle <= (__s64)LB_CT_CLOSE_LIFE_NS;
	return idle <= (__s64)(proto == IPPROTO_TCP ? LB_CT_TCP_LIFE_NS : LB_CT_OTHER_LIFE_NS);
}

/* Whether the entry's backend is still a member of the VIP (for a bare SYN: one with weight
 * > 0). The generation changes whenever a backend leaves the VIP or is drained, so an entry
 * checked at the current one needs no lookup (a SYN: if the backend took new connections
 * then); a checked entry is stamped with it. */
static __always_inline int ct_member(struct ct_entry *ct, __u32 vip_id, __u32 gen, int syn)
{
	if (gen && ct->gen == gen && (!syn || (ct->flags & CT_F_TAKES_NEW)))
		return 1;
	struct member_key mk = {.vip_id = vip_id, .backend_id = ct->backend_id};
	__u32 *m = bpf_map_lookup_elem(&vip_members, &mk);
	if (!m)
		return 0;
	__u8 f = *m & F_MEMBER_NEW ? ct->flags | CT_F_TAKES_NEW : ct->flags & ~CT_F_TAKES_NEW;
	if (ct->gen != gen || ct->flags != f) {
		ct->gen = gen;
		ct->flags = f;
	}
	return !syn || (f & CT_F_TAKES_NEW);
}

/* Record a packet of the flow: FIN or RST starts the short close life, a new SYN on the
 * 5-tuple ends it; the access time moves in LB_CT_ATIME_GRAIN_NS steps. */
static __always_inline void ct_touch(struct ct_entry *ct, __u8 tflags, int syn, __u64 now)
{
	__u8 f = ct->flags;
	if (tflags & (TH_FIN | TH_RST))
		f |= CT_F_CLOSING;
	else if (syn)
		f &= ~CT_F_CLOSING;
	if (f != ct->flags || (__s64)(now - ct->atime_ns) > (__s64)LB_CT_ATIME_GRAIN_NS) {
		ct->flags = f;
		ct->atime_ns = now;
	}
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
	if (p.len)
		bytes = p.len; /* a multi-buffer frame (xdp.frags) */

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
	/* dsr follows only too-big errors (path MTU); nat translates every error (nat.h). */
	if (p.icmp && !nat && !p.toobig)
		return XDP_PASS;

	__u32 hash = 0; /* only needed when the connection table has no answer */
	__u32 ehash = 0; /* dsr outer-header entropy: kept in the entry, else encap computes it */
	__u32 bid = 0;
	__u16 snat_port = 0;
	struct backend *be = NULL;
	__u64 now = bpf_ktime_get_coarse_ns();
	__u8 tflags = p.tflags;
	__u32 *genp = bpf_map_lookup_elem(&vip_gen, &vip_id);
	__u32 gen = genp ? *genp : 0;
	struct ct_entry *ct = bpf_map_lookup_elem(&conntrack, &p.flow);
	/* An entry is followed while it lives and its backend is still the VIP's (a bare SYN: one
	 * that takes new connections); otherwise the flow is scheduled afresh and the entry
	 * rewritten, so the rest of the flow follows the new choice. */
	if (ct && ct_live(ct, p.flow.proto, now) && ct_member(ct, vip_id, gen, p.syn_only)) {
		bid = ct->backend_id;
		snat_port = ct->snat_port;
		ehash = ct->ehash;
		be = bpf_map_lookup_elem(&backends, &bid);
		if (be && !(be->flags & F_BACKEND_ACTIVE)) {
			be = NULL;
			barrier(); /* keeps a branch: a select would mask the pointer, which the verifier refuses */
		}
		if (be && !p.icmp)
			ct_touch(ct, tflags, p.syn_only, now);
	}
	if (!be && nat && p.icmp) /* an error about no known flow: no port to translate it to */
		return count_drop(DROP_NO_BACKEND, bytes);
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
		/* SYN-flood guard: a bare SYN is scheduled by Maglev (deterministic) but not remembered
		 * (unless it replaces a stale entry); the flow is inserted on its first non-SYN
		 * packet. ICMP errors never insert. */
		if (!p.icmp && (nat || !p.syn_only || ct)) {
			/* Maglev tables hold only backends with weight > 0. */
			struct ct_entry ne = {.backend_id = bid, .snat_port = snat_port, .atime_ns = now, .gen = gen, .flags = CT_F_TAKES_NEW};
			if (tflags & (TH_FIN | TH_RST))
				ne.flags |= CT_F_CLOSING;
			if (!nat)
				ne.ehash = ehash = entropy_hash(&p.flow);
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
	if (!nat) {
		/* The backend's host is this one: the kernel's VIP route delivers it locally. */
		if (be->flags & F_BACKEND_LOCAL) {
			count(&backend_stats, bid, bytes);
			return XDP_PASS;
		}
		return encap(ctx, &p, bid, be, cfg, ehash, now, bytes);
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
	rc = backend_nexthop(ctx, bid, be, snat, &nh, now, bytes);
	if (rc)
		return rc;
	__u16 bport = be->port ? be->port : p.flow.dport;
	/* An error about the flow: its quote (VIP -> client) becomes backend -> snat (nat.h). */
	if (p.icmp ? icmp_xlate(ctx, &p, snat, baddr, bport | ((__u32)snat_port << 16))
		   : rewrite(ctx, &p, snat, baddr, snat_port, bport))
		return count_drop(DROP_MALFORMED, bytes);
	count(&backend_stats, bid, bytes);
	return transmit(ctx, &nh);
}

/* The load balancer, attached to the host uplink. */
SEC("xdp.frags")
int xdp_lb(struct xdp_md *ctx)
{
	return process(ctx);
}

/* Decapsulation only, for hosts that serve dsr backends but balance nothing: the same checks
 * as xdp_lb (decap.h); every other frame passes untouched. */
SEC("xdp.frags")
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
SEC("xdp.frags")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
