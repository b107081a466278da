/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* nat.h — nat mode: L4 checksums, address and port rewrites (DNAT to the backend, SNAT from
 * the host's address, with a reservation per flow), and the backend's replies rewritten back.
 * Included by lb.bpf.c after encap.h. */
#ifndef GOVCLOUD_LB_NAT_H
#define GOVCLOUD_LB_NAT_H

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

/* L4 checksum field of the packet, or NULL for UDP over IPv4 without a checksum. */
static __always_inline __u16 *l4_csum(void *data, void *data_end, struct pkt *p)
{
	void *l4 = data + (p->l4off & LB_OFF_MASK);
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
	void *l4 = data + (p->l4off & LB_OFF_MASK);
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

/* Translate an ICMP error in place (RFC 5508 §4, REQ-2 to REQ-4) into the view of the other
 * side of the NAT: the error goes to dst (outer destination), about the packet dst sent to
 * peer (the quote becomes dst:ports[15:0] -> peer:ports[31:16], ports in network order); its
 * outer source becomes peer when the error came from the quoted packet's destination itself,
 * a router's address is kept. Fixes the outer IPv4 header checksum, the quoted IPv4 header
 * checksum, the quoted TCP/UDP checksum when the quote holds it (a zero IPv4 UDP checksum stays
 * zero) and the ICMP checksum (for ICMPv6 with its pseudo-header). -1 when a header is not
 * inside the frame. Not inlined: it would take the caller's stack. */
static __noinline int icmp_xlate(struct xdp_md *ctx, struct pkt *p, const __u32 *peer, const __u32 *dst, __u32 ports)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u16 *icsum = data + (p->l4off & LB_OFF_MASK) + 2;
	__u16 *qp = data + (p->quote_l4 & LB_OFF_MASK);
	if ((void *)(icsum + 1) > data_end || (void *)(qp + 2) > data_end)
		return -1;
	/* One's-complement differences, applied at the end: dq of the quoted addresses (in the
	 * quoted IP header, the quoted L4 pseudo-header and the ICMP message), dp of the quoted
	 * ports, di of everything else the ICMP checksum covers. */
	__u32 dp = csum_diff2(0, qp[0], ports & 0xffff);
	dp = csum_diff2(dp, qp[1], ports >> 16);
	qp[0] = ports & 0xffff;
	qp[1] = ports >> 16;
	__u32 dq = 0, di = 0;
	if (p->flow.family == LB_AF_INET) {
		struct iphdr *iph = data + (p->l2len == 18 ? 18 : 14);
		struct iphdr *q = data + (p->quote & LB_OFF_MASK);
		if ((void *)(iph + 1) > data_end || (void *)(q + 1) > data_end)
			return -1;
		dq = csum_diff4(0, q->saddr, dst[0]);
		dq = csum_diff4(dq, q->daddr, peer[0]);
		__u32 nsrc = iph->saddr == q->daddr ? peer[0] : iph->saddr;
		q->saddr = dst[0];
		q->daddr = peer[0];
		__u16 old = q->check;
		csum_apply(&q->check, dq);
		di = csum_diff2(0, old, q->check);
		__u32 dout = csum_diff4(0, iph->saddr, nsrc);
		dout = csum_diff4(dout, iph->daddr, dst[0]);
		iph->saddr = nsrc;
		iph->daddr = dst[0];
		csum_apply(&iph->check, dout);
	} else {
		struct ipv6hdr *ip6 = data + (p->l2len == 18 ? 18 : 14);
		struct ipv6hdr *q = data + (p->quote & LB_OFF_MASK);
		if ((void *)(ip6 + 1) > data_end || (void *)(q + 1) > data_end)
			return -1;
		__u32 *qs = (__u32 *)&q->saddr, *qd = (__u32 *)&q->daddr;
		__u32 *os = (__u32 *)&ip6->saddr, *od = (__u32 *)&ip6->daddr;
		int from_peer = os[0] == qd[0] && os[1] == qd[1] && os[2] == qd[2] && os[3] == qd[3];
#pragma unroll
		for (int i = 0; i < 4; i++) {
			dq = csum_diff4(dq, qs[i], dst[i]);
			dq = csum_diff4(dq, qd[i], peer[i]);
			/* The ICMPv6 pseudo-header: the outer addresses. */
			di = csum_diff4(di, od[i], dst[i]);
			if (from_peer)
				di = csum_diff4(di, os[i], peer[i]);
		}
		__builtin_memcpy(qs, dst, 16);
		__builtin_memcpy(qd, peer, 16);
		__builtin_memcpy(od, dst, 16);
		if (from_peer)
			__builtin_memcpy(os, peer, 16);
	}
	/* The quoted L4 checksum, when the quote reaches it (a zero IPv4 UDP checksum stays). */
	__u16 *qc = NULL;
	if (p->flow.proto == IPPROTO_UDP) {
		if ((void *)(qp + 4) <= data_end && !(p->flow.family == LB_AF_INET && qp[3] == 0))
			qc = &qp[3];
	} else if ((void *)(qp + 9) <= data_end) {
		qc = &qp[8];
	}
	if (qc) {
		__u16 old = *qc;
		csum_apply(qc, dq + dp);
		if (p->flow.proto == IPPROTO_UDP && *qc == 0)
			*qc = 0xffff;
		di = csum_diff2(di, old, *qc);
	}
	csum_apply(icsum, di + dq + dp);
	return 0;
}

/* A packet to the SNAT address that is no VIP's: a nat backend's reply (or an ICMP error
 * quoting what the LB sent it), rewritten back to the VIP's view and sent to the client. */
static __always_inline int nat_reply(struct xdp_md *ctx, struct pkt *p, const struct lb_config *cfg, __u64 bytes)
{
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
	__u16 vport = ne->vip_port, cport = ne->client_port;
	int rc = lookup_nexthop(ctx, p->flow.family, vip, client, &nh, bytes);
	if (rc)
		return rc;
	if (p->icmp) {
		/* The quote went snat:port -> backend: it becomes client -> VIP. */
		if (icmp_xlate(ctx, p, vip, client, cport | ((__u32)vport << 16)))
			return count_drop(DROP_MALFORMED, bytes);
		return transmit(ctx, &nh);
	}
	if (rewrite(ctx, p, vip, client, vport, cport))
		return count_drop(DROP_MALFORMED, bytes);
	return transmit(ctx, &nh);
}

#endif
