/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* csum.h — Internet checksum helpers for XDP (no skb helpers there). One's-complement sums do
 * not depend on byte order as long as every operand is read the same way, so fields are read
 * as they lie in memory. */
#ifndef GOVCLOUD_CSUM_H
#define GOVCLOUD_CSUM_H

#include <linux/types.h>

static __always_inline __u16 csum_fold32(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* RFC 1624: HC' = ~(~HC + ~m + m'). */
static __always_inline void csum_replace2(__u16 *sum, __u16 from, __u16 to)
{
	__u32 s = (__u16)~*sum;
	s += (__u16)~from;
	s += to;
	*sum = csum_fold32(s);
}

static __always_inline void csum_replace4(__u16 *sum, __u32 from, __u32 to)
{
	__u32 s = (__u16)~*sum;
	s += (__u16)~(__u16)(from & 0xffff);
	s += (__u16)~(__u16)(from >> 16);
	s += to & 0xffff;
	s += to >> 16;
	*sum = csum_fold32(s);
}

static __always_inline void csum_replace16(__u16 *sum, const __u32 *from, const __u32 *to)
{
#pragma unroll
	for (int i = 0; i < 4; i++)
		csum_replace4(sum, from[i], to[i]);
}

/* Differences accumulated and applied once (RFC 1624 eqn. 3 over several fields): acc gains
 * ~from + to per 16-bit word; a few dozen words stay far from overflowing 32 bits. */
static __always_inline __u32 csum_diff2(__u32 acc, __u16 from, __u16 to)
{
	return acc + (__u16)~from + to;
}

static __always_inline __u32 csum_diff4(__u32 acc, __u32 from, __u32 to)
{
	return acc + (__u16)~(__u16)(from & 0xffff) + (__u16)~(__u16)(from >> 16) + (to & 0xffff) + (to >> 16);
}

static __always_inline void csum_apply(__u16 *sum, __u32 acc)
{
	__u32 s = (__u16)~*sum;
	s = (s & 0xffff) + (s >> 16);
	__u64 t = (__u64)s + acc;
	t = (t & 0xffff) + (t >> 16);
	t = (t & 0xffff) + (t >> 16);
	t = (t & 0xffff) + (t >> 16);
	*sum = (__u16)~t;
}

/* Checksum of a fresh 20-byte IPv4 header (check field zero). */
static __always_inline __u16 ipv4_csum(const void *hdr)
{
	const __u16 *w = hdr;
	__u32 s = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		s += w[i];
	return csum_fold32(s);
}

#endif
