/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* trunk_structs.h — map keys and values of the VLAN trunk program. Go mirrors are generated
 * by bpf2go (-type), never written by hand. */
#ifndef GOVCLOUD_TRUNK_STRUCTS_H
#define GOVCLOUD_TRUNK_STRUCTS_H

#include <linux/types.h>

/* One segment on this host, indexed by its VLAN id. ifindex 0 marks an unused VLAN. */
struct trunk_segment {
	__u32 ifindex;  /* segment-side trunk port (veth end outside the bridge) */
	__u32 dept_id;  /* department id (counter key) */
	__u32 seg_id;   /* segment id (counter key) */
	__u16 vlan;     /* the segment's VLAN id, equal to the index */
	__u16 flags;    /* TRUNK_SEG_* */
	__be32 gw4;     /* distributed gateway IPv4 address, network order */
	__u8 gw6[16];   /* distributed gateway IPv6 address */
};

/* Segment-side port: which VLAN it belongs to. */
struct trunk_port {
	__u32 vlan;
};

/* Global settings (array of one). */
struct trunk_config {
	__u32 uplink_ifindex; /* where tagged frames leave; 0: drop everything from segments */
};

/* Traffic counters: per department, segment and direction. */
struct trunk_stat_key {
	__u32 dept_id;
	__u32 seg_id;
	__u32 dir; /* TRUNK_DIR_* */
};

/* Drop counters: per department and segment (0/0 when unknown) and reason. */
struct trunk_drop_key {
	__u32 dept_id;
	__u32 seg_id;
	__u32 reason; /* TRUNK_DROP_* */
};

/* Per-CPU packet and byte counts. Bytes are untagged Ethernet frame bytes (header included,
 * no FCS), the same whether the tag travelled in-band or in skb metadata. */
struct trunk_counter {
	__u64 packets;
	__u64 bytes;
};

/* A policed guest port (host side of a guest's tap or veth): whose traffic it carries. */
struct trunk_guest {
	__u32 dept_id; /* department id: the bucket and the drop counter */
	__u32 seg_id;  /* segment id: the drop counter */
};

/* A department's bandwidth limit on this host, the same in each direction. Written whole by
 * the agent (a hash map value is replaced atomically), never by the program. */
struct trunk_rate {
	__u64 rate;    /* bytes per second; 0: unlimited */
	__u64 burst;   /* bucket depth in bytes, at least one maximal (GSO) frame */
	__u64 fill_ns; /* time to fill an empty bucket: burst * 1e9 / rate, rounded up */
};

struct trunk_bucket_key {
	__u32 dept_id;
	__u32 dir; /* TRUNK_DIR_TX: sent by the department's guests; TRUNK_DIR_RX: delivered to them */
};

/* A token bucket. Tokens are in nano-bytes (bytes * 1e9), so a refill is elapsed_ns * rate
 * with no division and no rounding at any rate. Created full by the program on first use; a
 * limit change leaves it alone (flows keep their tokens). */
struct trunk_bucket {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 tokens;  /* nano-bytes, at most burst * 1e9 */
	__u64 last_ns; /* bpf_ktime_get_ns of the last refill */
};

#endif
