/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* lb_pkt.h — what the parser learns about a packet (struct pkt), the protocol constants and
 * headers the programs spell out, and the flow hash that picks a backend (Maglev index, nexthop
 * cache). Included by lb.bpf.c. */
#ifndef GOVCLOUD_LB_PKT_H
#define GOVCLOUD_LB_PKT_H

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


#define AF_INET 2
#define AF_INET6 10
#define IP_MF_OFFSET 0x3fff
#define IP_DF 0x4000
#define NEXTHDR_FRAGMENT 44

/* linux/icmp.h pulls in libc socket headers; the two fields needed are spelled out here. */
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
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
	__u8 toobig;  /* that error is frag-needed / packet-too-big */
	__u16 quote;  /* ICMP errors: offset of the quoted IP header from the frame start */
	__u16 quote_l4;/* ICMP errors: offset of the quoted TCP/UDP header from the frame start */
	__u32 len;    /* multi-buffer frames: the frame's length over all buffers (else 0) */
	__u8 tflags;  /* the TCP flags of the client's segment (0: UDP, or a flow from an ICMP error) */
	__u8 df;      /* IPv4 DF set (the outer header copies it) */
	__u8 pad[2];
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

#endif
