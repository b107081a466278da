/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* lb_maps.h — every map of the load balancer, one comment each. All are pinned by name under
 * the loader's pin path so an agent restart keeps flows, tables and counters. */
#ifndef GOVCLOUD_LB_MAPS_H
#define GOVCLOUD_LB_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lb_consts.h"
#include "lb_structs.h"

/* VIP -> its id and mode. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_VIPS);
	__type(key, struct vip_key);
	__type(value, struct vip_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vips SEC(".maps");

/* (domain, VIP address) -> number of VIPs on it: recognises fragments and ICMP to a VIP. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_VIPS);
	__type(key, struct vip_addr_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_addrs SEC(".maps");

/* One Maglev table: slot -> backend id (0: empty). Memory-mappable so the agent writes a new
 * table with one copy instead of an update per slot (65537 of them; 1200 tables took seconds). */
struct ring {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, LB_RING_SIZE);
	__type(key, __u32);
	__type(value, __u32);
};

/* VIP id -> its Maglev table. A whole table is replaced by swapping this pointer, so no packet
 * ever sees a half-written table. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, LB_MAX_VIPS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct ring);
} rings SEC(".maps");

/* Backend id -> where packets go. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backends SEC(".maps");

/* Connection table: flow -> backend, LRU with per-CPU LRU lists (BPF_F_NO_COMMON_LRU), so
 * established flows keep their backend when the table changes. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB_CT_SIZE);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, struct flow_key);
	__type(value, struct ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack SEC(".maps");

/* (VIP id, backend id) -> F_MEMBER_* for every backend of every VIP (weight 0 included): a
 * connection-table entry is followed only to a backend that is still a member of its VIP, and
 * a bare SYN only to one that takes new connections. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_MEMBERS);
	__type(key, struct member_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_members SEC(".maps");

/* VIP id -> membership generation, bumped (to a value never used before) whenever a backend
 * leaves the VIP or the id is given to a new VIP. An entry whose gen equals it needs no
 * vip_members lookup: the hot path pays one array read. 0: unknown, always look. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_VIPS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_gen SEC(".maps");

/* nat mode: reply tuple (backend -> snat address:port) -> client and VIP. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB_NAT_SIZE);
	__type(key, struct flow_key);
	__type(value, struct nat_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nat_rev SEC(".maps");

/* 802.1Q VLAN id -> routing domain (0: not a department VLAN; such frames pass untouched). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vlan_domain SEC(".maps");

/* Local tunnel endpoints (domain 0): IPIP/IP6IP6/4in6/6in4 to these is decapsulated here when it
 * passes the checks of decap.h (dsr backends on this host). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_DECAP);
	__type(key, struct vip_addr_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} decap_addrs SEC(".maps");

/* (load-balancer host, local endpoint) pairs: the only tunnels decapsulated. Value unused (1).
 * IPv6 pairs here, IPv4 pairs in tunnel_srcs4 (a shorter key on the common path). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_TUNNELS);
	__type(key, struct tunnel_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tunnel_srcs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_TUNNELS);
	__type(key, struct tunnel4_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tunnel_srcs4 SEC(".maps");

/* The common case in one lookup: IPv4 tunnels from an LB host to a local IPv4 VIP, the cross
 * product of tunnel_srcs4 and local_vips4 (the agent keeps it so) -> the department's id. A
 * miss asks decap_addrs, tunnel_srcs4 and local_vips4 why. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_DECAP_ALLOW4);
	__type(key, struct decap4_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} decap_allow4 SEC(".maps");

/* VIPs with a dsr backend on this host -> the owning department's id: the only inner
 * destinations a decapsulated packet may have. IPv6 VIPs here (keyed like vips), IPv4 VIPs in
 * local_vips4. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_LOCAL_VIPS);
	__type(key, struct vip_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} local_vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_LOCAL_VIPS);
	__type(key, struct vip4_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} local_vips4 SEC(".maps");

/* Packets decapsulated for local dsr backends (index 0). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} decap_stats SEC(".maps");

/* Host-wide settings, index 0. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} config SEC(".maps");

/* Backend id -> cached next hop toward it (per CPU; the agent zeroes an id when it reuses it). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct nexthop_cache);
} nexthops SEC(".maps");

/* Index 0: the IPv4 ID of the next outer header or generated ICMP error this CPU sends (per
 * CPU, seeded at random on first use; RFC 6864 asks uniqueness only of fragmentable ones). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} ip_ids SEC(".maps");

/* Index 0: room for the FIB lookup's parameters (64 bytes), off the 512-byte stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct bpf_fib_lookup)); /* no BTF type: bpf2go cannot mirror its unions */
} fib_scratch SEC(".maps");

/* Per-VIP counters by VIP id. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct vip_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_stats SEC(".maps");

/* Per-backend counters by backend id. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct lb_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backend_stats SEC(".maps");

/* Drops by enum drop_reason (index DROP_NONE stays zero). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_MAX_DROP_REASONS);
	__type(key, enum drop_reason); /* also puts the enum in BTF: Go names reasons from it */
	__type(value, struct lb_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} drop_stats SEC(".maps");

#endif
