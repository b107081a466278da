/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* trunk_consts.h — constants of the VLAN trunk program. Each can be overridden with -D. */
#ifndef GOVCLOUD_TRUNK_CONSTS_H
#define GOVCLOUD_TRUNK_CONSTS_H

/* VLAN ids 1..4094 are usable; the segment table is indexed by VLAN id directly. */
#ifndef TRUNK_MAX_VLANS
#define TRUNK_MAX_VLANS 4096
#endif

/* Segment-side trunk ports (one veth end per segment). */
#ifndef TRUNK_MAX_PORTS
#define TRUNK_MAX_PORTS 4096
#endif

/* Counter rows: (department, segment, direction) and (department, segment, reason). */
#ifndef TRUNK_MAX_COUNTERS
#define TRUNK_MAX_COUNTERS 16384
#endif

/* Departments with a bandwidth limit (trunk_rates) and their buckets (two each). */
#ifndef TRUNK_MAX_DEPTS
#define TRUNK_MAX_DEPTS 4096
#endif

#define TRUNK_NSEC_PER_SEC 1000000000ULL

/* trunk_stat_key.dir, trunk_bucket_key.dir: traffic leaving a segment onto the trunk (tx) or arriving from it (rx). */
#define TRUNK_DIR_RX 0
#define TRUNK_DIR_TX 1

/* trunk_drop_key.reason. Mirrored by name in dataplane/trunk (DropReason). */
#define TRUNK_DROP_UNKNOWN_VLAN 1 /* uplink: tag maps to no segment on this host (VID 0 is untagged) */
#define TRUNK_DROP_DOUBLE_TAG   2 /* a tag behind a tag (QinQ / 802.1ad) in either direction */
#define TRUNK_DROP_WRONG_VLAN   3 /* segment port: the frame already carries a tag (not VID 0) */
#define TRUNK_DROP_GATEWAY_ND   4 /* ARP / IPv6 ND for the distributed gateway crossing the trunk */
#define TRUNK_DROP_NO_PORT      5 /* program attached to a port that has no segment (stale) */
#define TRUNK_DROP_MALFORMED    6 /* shorter than an Ethernet (+ tag) header */
#define TRUNK_DROP_NO_UPLINK    7 /* no uplink configured, or a helper failed */
#define TRUNK_DROP_RATE_LIMIT   8 /* guest port: the department's bandwidth bucket is empty */

#define ETH_P_8021Q_BE  0x0081 /* htons(0x8100) on little endian, kept for readability below */
#define VLAN_VID_MASK   0x0fff

/* trunk_segment.flags */
#define TRUNK_SEG_GW4 (1U << 0) /* gw4 is set */
#define TRUNK_SEG_GW6 (1U << 1) /* gw6 is set */


#endif
