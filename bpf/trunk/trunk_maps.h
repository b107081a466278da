/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* trunk_maps.h — every map of the VLAN trunk program, one comment each. All are pinned by name
 * under the loader's pin path, so an agent restart keeps the mappings and the counters. */
#ifndef GOVCLOUD_TRUNK_MAPS_H
#define GOVCLOUD_TRUNK_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "trunk_consts.h"
#include "trunk_structs.h"

/* VLAN id -> segment (port ifindex, department, segment, gateway addresses). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TRUNK_MAX_VLANS);
	__type(key, __u32);
	__type(value, struct trunk_segment);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trunk_segments SEC(".maps");

/* Segment-side port ifindex -> its VLAN. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TRUNK_MAX_PORTS);
	__type(key, __u32);
	__type(value, struct trunk_port);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trunk_ports SEC(".maps");

/* Global settings: the uplink. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct trunk_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trunk_cfg SEC(".maps");

/* Per-department traffic across the trunk. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, TRUNK_MAX_COUNTERS);
	__type(key, struct trunk_stat_key);
	__type(value, struct trunk_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trunk_stats SEC(".maps");

/* Drops by department, segment and reason. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, TRUNK_MAX_COUNTERS);
	__type(key, struct trunk_drop_key);
	__type(value, struct trunk_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trunk_drops SEC(".maps");

/* Guest port ifindex -> department and segment, for the ports of departments with a limit. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TRUNK_MAX_PORTS);
	__type(key, __u32);
	__type(value, struct trunk_guest);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trunk_guests SEC(".maps");

/* Department id -> its bandwidth limit on this host (absent: unlimited). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TRUNK_MAX_DEPTS);
	__type(key, __u32);
	__type(value, struct trunk_rate);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trunk_rates SEC(".maps");

/* (department, direction) -> token bucket, shared by all CPUs under its spin lock. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * TRUNK_MAX_DEPTS);
	__type(key, struct trunk_bucket_key);
	__type(value, struct trunk_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trunk_buckets SEC(".maps");

#endif
