/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ipv6_ext.h — the IPv6 extension-header chain (RFC 8200 §4, RFC 7045), walked to a bound:
 * hop-by-hop (first only), destination options, routing, fragment and AH. Shared by the
 * parser (packets to a VIP) and the decapsulation checks (the inner packet of a tunnel), so
 * both judge a chain alike. ESP and unknown headers end the walk: the caller sees them as the
 * upper-layer protocol. */
#ifndef GOVCLOUD_LB_IPV6_EXT_H
#define GOVCLOUD_LB_IPV6_EXT_H

#include <linux/types.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>

#include "lb_consts.h"

#define EXT_NEXTHDR_HOP 0
#define EXT_NEXTHDR_ROUTING 43
#define EXT_NEXTHDR_FRAGMENT 44
#define EXT_NEXTHDR_AUTH 51
#define EXT_NEXTHDR_DEST 60

/* What ipv6_walk found. */
enum ext_verdict {
	EXT_OK = 0,          /* *nh is the upper-layer protocol at *off */
	EXT_FRAGMENT = 1,    /* a real fragment (offset != 0 or M set): no ports to trust */
	EXT_TRUNCATED = 2,   /* a header runs past the packet or the frame */
	EXT_MALFORMED = 3,   /* hop-by-hop other than first */
	EXT_NOT_FINAL = 4,   /* routing header with segments left: the address is not the final one */
	EXT_TOO_LONG = 5,    /* more than LB_MAX_EXTHDRS extension headers */
};

static __always_inline int ext_is_exthdr(__u8 nh)
{
	return nh == EXT_NEXTHDR_HOP || nh == EXT_NEXTHDR_ROUTING || nh == EXT_NEXTHDR_FRAGMENT ||
	       nh == EXT_NEXTHDR_AUTH || nh == EXT_NEXTHDR_DEST;
}

/* Walk the chain behind ip6, plen bytes of payload (by its header) of which the frame holds
 * what lies before data_end. On EXT_OK, *nh is the upper-layer protocol and *off its offset
 * from ip6. An atomic fragment (offset 0, M clear, RFC 8200 §4.5, RFC 6946) is no fragment:
 * the walk goes on behind it. */
static __always_inline int ipv6_walk(struct ipv6hdr *ip6, void *data_end, __u32 plen, __u32 *off, __u8 *nh)
{
	__u8 next = ip6->nexthdr;
	__u32 o = sizeof(*ip6);
#pragma unroll
	for (int i = 0; i < LB_MAX_EXTHDRS; i++) {
		if (!ext_is_exthdr(next))
			break;
		__u8 *h = (void *)ip6 + (o & 0x3fff);
		if ((void *)(h + 8) > data_end || o + 8 > plen + sizeof(*ip6))
			return EXT_TRUNCATED;
		__u32 len;
		switch (next) {
		case EXT_NEXTHDR_HOP:
			if (i != 0)
				return EXT_MALFORMED;
			len = (h[1] + 1) * 8U;
			break;
		case EXT_NEXTHDR_FRAGMENT: {
			__u16 fo = bpf_ntohs(*(__u16 *)(h + 2));
			if ((fo >> 3) != 0 || (fo & 1))
				return EXT_FRAGMENT;
			len = 8;
			break;
		}
		case EXT_NEXTHDR_ROUTING:
			if (h[3] != 0)
				return EXT_NOT_FINAL;
			len = (h[1] + 1) * 8U;
			break;
		case EXT_NEXTHDR_AUTH:
			len = (h[1] + 2) * 4U;
			break;
		default: /* destination options */
			len = (h[1] + 1) * 8U;
			break;
		}
		next = h[0];
		o += len;
	}
	if (ext_is_exthdr(next))
		return EXT_TOO_LONG;
	if (o > plen + sizeof(*ip6))
		return EXT_TRUNCATED;
	*off = o;
	*nh = next;
	return EXT_OK;
}

#endif
