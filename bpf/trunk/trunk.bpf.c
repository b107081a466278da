// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* trunk.bpf.c — 802.1Q trunking between per-segment ports and the host uplink, at TCX ingress.
 *
 * Topology (per segment, see dataplane/netdev): the segment's Linux bridge has one veth end
 * (the bridge-side trunk port) as a member; the other end of that veth (the segment-side port)
 * carries trunk_from_segment. Frames the bridge floods or forwards toward the trunk arrive there
 * untagged, get the segment's VLAN pushed and are redirected out the uplink.
 * trunk_from_uplink runs on the uplink: tagged frames are popped and redirected out the
 * segment-side port of their VLAN, so they enter the bridge through the bridge-side end.
 * Untagged uplink traffic (the host's own underlay) is left alone.
 *
 * The tag of a received frame may be in-band (BPF_PROG_TEST_RUN, some drivers) or already in
 * skb metadata (the kernel untags on receive before TC runs); both are handled. Tag
 * classification agrees with xdp_lb (bpf/lb/parse.h): 802.1Q and 802.1ad outer tags alike,
 * VID 0 (a priority tag) is untagged traffic, a tag behind a tag is never a department's.
 *
 * guest_tx / guest_rx police departments' bandwidth (spec.quotas.bandwidthMbps) on the host
 * side of each guest port, at TCX ingress (what guests send) and egress (what they receive):
 * every guest byte passes there, whether it is bridged within a segment, routed by the host
 * between two segments, or crosses the trunk. One token bucket per (department, direction)
 * per host.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "trunk_consts.h"
#include "trunk_structs.h"
#include "trunk_maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define ETH_HLEN_ 14
#define VLAN_HLEN_ 4

static __always_inline int is_vlan_proto(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

/* TRUNK_NO_COUNTERS builds the programs without counting: only for the benchmark that prices
 * the counters (same maps, same traffic, counters on versus off). */
static __always_inline void count(void *map, void *key, __u64 bytes)
{
#ifdef TRUNK_NO_COUNTERS
	return;
#endif
	struct trunk_counter *c = bpf_map_lookup_elem(map, key);
	if (!c) {
		struct trunk_counter zero = {};
		bpf_map_update_elem(map, key, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(map, key);
		if (!c)
			return;
	}
	/* Per-CPU values: no other CPU writes this copy. */
	c->packets += 1;
	c->bytes += bytes;
}

static __always_inline int drop(__u32 dept, __u32 seg, __u32 reason, __u64 bytes)
{
	struct trunk_drop_key k = { .dept_id = dept, .seg_id = seg, .reason = reason };
	count(&trunk_drops, &k, bytes);
	return TC_ACT_SHOT;
}

static __always_inline void count_traffic(__u32 dept, __u32 seg, __u32 dir, __u64 bytes)
{
	struct trunk_stat_key k = { .dept_id = dept, .seg_id = seg, .dir = dir };
	count(&trunk_stats, &k, bytes);
}

/* is_gateway_nd reports whether an untagged frame is ARP or IPv6 neighbour discovery that names
 * the segment's distributed gateway (as sender or target). Such frames never cross the trunk:
 * every host answers for the gateway itself. */
static __always_inline int is_gateway_nd(struct __sk_buff *skb, const struct trunk_segment *seg)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
		/* arphdr (8) + sender hw (6) + sender ip (4) + target hw (6) + target ip (4) */
		__u8 *arp = data + ETH_HLEN_;
		__be32 spa, tpa;
		if (!(seg->flags & TRUNK_SEG_GW4))
			return 0;
		if ((void *)(arp + 28) > end)
			return 0;
		__builtin_memcpy(&spa, arp + 14, 4);
		__builtin_memcpy(&tpa, arp + 24, 4);
		return spa == seg->gw4 || tpa == seg->gw4;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		/* ipv6hdr (40), then ICMPv6 type (1) code (1) csum (2) reserved (4) target (16) */
		__u8 *ip6 = data + ETH_HLEN_;
		__u8 *icmp = ip6 + 40;
		if (!(seg->flags & TRUNK_SEG_GW6))
			return 0;
		if ((void *)(icmp + 24) > end)
			return 0;
		if (ip6[6] != 58 /* IPPROTO_ICMPV6 */)
			return 0;
		if (icmp[0] != 135 && icmp[0] != 136) /* neighbour solicitation / advertisement */
			return 0;
		/* NS/NA target; also the source of an NA or a gateway-sourced NS. */
		if (__builtin_memcmp(icmp + 8, seg->gw6, 16) == 0)
			return 1;
		return __builtin_memcmp(ip6 + 8, seg->gw6, 16) == 0;
	}
	return 0;
}

/* outer_tag finds the frame's outer tag, 802.1Q or 802.1ad alike, in skb metadata or in-band:
 * 0 untagged, 1 tagged (*tci host order, *next the ethertype after it), -1 truncated. */
static __always_inline int outer_tag(struct __sk_buff *skb, __u16 *tci, __be16 *next)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return -1;
	if (skb->vlan_present) {
		/* The outer tag is already in metadata; data holds the next ethertype. */
		*tci = skb->vlan_tci;
		*next = eth->h_proto;
		return 1;
	}
	if (!is_vlan_proto(eth->h_proto))
		return 0;
	__be16 *tag = data + ETH_HLEN_;
	if ((void *)(tag + 2) > end)
		return -1;
	*tci = bpf_ntohs(tag[0]);
	*next = tag[1];
	return 1;
}

/* trunk_from_segment: on the segment-side port; tag and send out the uplink. */
SEC("tcx/ingress")
int trunk_from_segment(struct __sk_buff *skb)
{
	struct trunk_segment *seg;
	struct trunk_config *cfg;
	struct trunk_port *port;
	__u32 ifindex = skb->ifindex, zero = 0, vlan, dept, segid, uplink;
	__u64 len = skb->len;
	__u16 tci = 0;
	__be16 next = 0;

	port = bpf_map_lookup_elem(&trunk_ports, &ifindex);
	if (!port)
		return drop(0, 0, TRUNK_DROP_NO_PORT, len);
	vlan = port->vlan;
	seg = bpf_map_lookup_elem(&trunk_segments, &vlan);
	if (!seg || seg->ifindex != ifindex)
		return drop(0, 0, TRUNK_DROP_NO_PORT, len);
	dept = seg->dept_id;
	segid = seg->seg_id;

	/* A segment port is an access port: a tag on it is foreign, two tags are QinQ. A priority
	 * tag (VID 0, any PCP) is untagged traffic, as Linux delivers it: it is removed. */
	int tagged = outer_tag(skb, &tci, &next);
	if (tagged < 0)
		return drop(dept, segid, TRUNK_DROP_MALFORMED, len);
	if (tagged) {
		if (is_vlan_proto(next))
			return drop(dept, segid, TRUNK_DROP_DOUBLE_TAG, len);
		if (tci & VLAN_VID_MASK)
			return drop(dept, segid, TRUNK_DROP_WRONG_VLAN, len);
		if (!skb->vlan_present)
			len -= VLAN_HLEN_;
		if (bpf_skb_vlan_pop(skb))
			return drop(dept, segid, TRUNK_DROP_MALFORMED, len);
	}
	if (is_gateway_nd(skb, seg))
		return drop(dept, segid, TRUNK_DROP_GATEWAY_ND, len);

	cfg = bpf_map_lookup_elem(&trunk_cfg, &zero);
	uplink = cfg ? cfg->uplink_ifindex : 0;
	if (!uplink)
		return drop(dept, segid, TRUNK_DROP_NO_UPLINK, len);
	if (bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), vlan & VLAN_VID_MASK))
		return drop(dept, segid, TRUNK_DROP_NO_UPLINK, len);
	count_traffic(dept, segid, TRUNK_DIR_TX, len);
	return bpf_redirect(uplink, 0);
}

/* trunk_from_uplink: on the uplink; untag and deliver to the VLAN's segment. 802.1Q and
 * 802.1ad outer tags are treated alike (as xdp_lb does); a priority tag (VID 0, any PCP) is
 * untagged traffic, the host's own, as Linux delivers it: removed and passed on. */
SEC("tcx/ingress")
int trunk_from_uplink(struct __sk_buff *skb)
{
	struct trunk_segment *seg;
	__u32 vid, dept, segid, ifindex;
	__u64 len = skb->len;
	__u16 tci = 0;
	__be16 next = 0;

	int tagged = outer_tag(skb, &tci, &next);
	if (tagged == 0)
		return TC_ACT_UNSPEC; /* untagged: the host's own traffic (TCX_NEXT) */
	if (tagged < 0) {
		if (len < ETH_HLEN_)
			return TC_ACT_UNSPEC;
		return drop(0, 0, TRUNK_DROP_MALFORMED, len);
	}
	if (is_vlan_proto(next))
		return drop(0, 0, TRUNK_DROP_DOUBLE_TAG, len);
	if (!skb->vlan_present)
		len -= VLAN_HLEN_;
	vid = tci & VLAN_VID_MASK;
	if (vid == 0) {
		if (bpf_skb_vlan_pop(skb))
			return drop(0, 0, TRUNK_DROP_MALFORMED, len);
		return TC_ACT_UNSPEC;
	}

	seg = bpf_map_lookup_elem(&trunk_segments, &vid);
	if (!seg || !seg->ifindex)
		return drop(0, 0, TRUNK_DROP_UNKNOWN_VLAN, len);
	dept = seg->dept_id;
	segid = seg->seg_id;
	ifindex = seg->ifindex;

	if (bpf_skb_vlan_pop(skb))
		return drop(dept, segid, TRUNK_DROP_MALFORMED, len);
	if (is_gateway_nd(skb, seg))
		return drop(dept, segid, TRUNK_DROP_GATEWAY_ND, len);
	count_traffic(dept, segid, TRUNK_DIR_RX, len);
	return bpf_redirect(ifindex, 0);
}

/* police charges a frame on a policed guest port to its department's bucket for dir:
 * TC_ACT_UNSPEC (pass on, TCX_NEXT) when the port or its department has no limit or the
 * bucket holds the frame, TC_ACT_SHOT (counted as rate_limit) when it does not. ARP passes
 * uncharged: a guest that lost its neighbours at the limit would stall its own recovery.
 *
 * A policer, not a shaper (this kernel has no fq for EDT pacing): an empty bucket drops and
 * TCP backs off. The bucket is shared by all CPUs under a spin lock, so the limit holds
 * however many queues the department's traffic is spread over. */
static __always_inline int police(struct __sk_buff *skb, __u32 dir)
{
	__u32 ifindex = skb->ifindex;
	struct trunk_guest *g = bpf_map_lookup_elem(&trunk_guests, &ifindex);
	if (!g)
		return TC_ACT_UNSPEC;
	__u32 dept = g->dept_id, segid = g->seg_id;
	struct trunk_rate *r = bpf_map_lookup_elem(&trunk_rates, &dept);
	if (!r || !r->rate)
		return TC_ACT_UNSPEC;
	if (skb->protocol == bpf_htons(ETH_P_ARP))
		return TC_ACT_UNSPEC;
	__u64 rate = r->rate, fill_ns = r->fill_ns;
	__u64 cap = r->burst * TRUNK_NSEC_PER_SEC;
	__u64 len = skb->len;
	__u64 cost = len * TRUNK_NSEC_PER_SEC;
	__u64 now = bpf_ktime_get_ns();

	struct trunk_bucket_key k = { .dept_id = dept, .dir = dir };
	struct trunk_bucket *b = bpf_map_lookup_elem(&trunk_buckets, &k);
	if (!b) {
		struct trunk_bucket fresh = { .tokens = cap, .last_ns = now };
		bpf_map_update_elem(&trunk_buckets, &k, &fresh, BPF_NOEXIST);
		b = bpf_map_lookup_elem(&trunk_buckets, &k);
		if (!b)
			return TC_ACT_UNSPEC;
	}

	int pass = 0;
	bpf_spin_lock(&b->lock);
	__u64 tokens = b->tokens;
	if (now > b->last_ns) {
		/* Another CPU may have refilled after our clock read: then nothing elapsed. */
		__u64 elapsed = now - b->last_ns;
		/* elapsed < fill_ns keeps elapsed * rate below cap: no overflow at any rate. */
		tokens = elapsed >= fill_ns ? cap : tokens + elapsed * rate;
		b->last_ns = now;
	}
	if (tokens > cap) /* also after a lowered limit */
		tokens = cap;
	if (tokens >= cost) {
		tokens -= cost;
		pass = 1;
	}
	b->tokens = tokens;
	bpf_spin_unlock(&b->lock);

	if (pass)
		return TC_ACT_UNSPEC;
	return drop(dept, segid, TRUNK_DROP_RATE_LIMIT, len);
}

/* guest_tx: TCX ingress of a guest port, i.e. what the guest sends (the department's tx). */
SEC("tcx/ingress")
int guest_tx(struct __sk_buff *skb)
{
	return police(skb, TRUNK_DIR_TX);
}

/* guest_rx: TCX egress of a guest port, i.e. what is delivered to the guest (its rx). */
SEC("tcx/egress")
int guest_rx(struct __sk_buff *skb)
{
	return police(skb, TRUNK_DIR_RX);
}
