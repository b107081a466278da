/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* lb_structs.h — the structs shared with Go (bpf2go -type generates their Go mirrors). */
#ifndef GOVCLOUD_LB_STRUCTS_H
#define GOVCLOUD_LB_STRUCTS_H

#include <linux/types.h>

/* A VIP as the LB sees it. domain is the department's routing domain (0: the public fabric);
 * the same address and port in two domains are two VIPs with disjoint backends.
 * Addresses are network order; IPv4 uses addr[0] and zeroes the rest. */
struct vip_key {
	__u32 domain;
	__u32 addr[4];
	__u16 port; /* network order */
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 family; /* LB_AF_INET or LB_AF_INET6 */
};

struct vip_meta {
	__u32 id;    /* index into rings, vip_stats */
	__u32 flags; /* F_VIP_* */
};

/* (domain, address) of every VIP: lets fragments and ICMP to a VIP be recognised without ports. */
struct vip_addr_key {
	__u32 domain;
	__u32 addr[4];
	__u8 family;
	__u8 pad[3];
};

/* A tunnel this host accepts: outer source (a load-balancer host) and outer destination (one of
 * this host's endpoints), both of family. One key for both checks keeps the accepted path to
 * the one lookup decapsulation needs anyway. */
struct tunnel_key {
	__u32 src[4];
	__u32 dst[4];
	__u8 family;
	__u8 pad[3];
};

/* tunnel_key for IPv4 tunnels: 8 bytes to hash instead of 36 on the common path. */
struct tunnel4_key {
	__u32 src;
	__u32 dst;
};

/* An IPv4 tunnel accepted at once (decap_allow4): LB host, local endpoint, and the inner
 * packet's (domain, VIP, port, protocol). 20 bytes, like the decap_addrs key it replaces. */
struct decap4_key {
	__u32 src;
	__u32 dst;
	__u32 domain;
	__u32 vip;
	__u16 port; /* network order */
	__u8 proto;
	__u8 pad;
};

/* vip_key for IPv4 VIPs (local_vips4): 12 bytes to hash instead of 24. */
struct vip4_key {
	__u32 domain;
	__u32 addr;
	__u16 port; /* network order */
	__u8 proto;
	__u8 pad;
};

/* A backend. dsr: addr is the tunnel endpoint (the backend's host). nat: addr:port is the
 * backend itself (port 0 keeps the VIP's port). */
struct backend {
	__u32 addr[4];
	__u16 port; /* network order */
	__u8 family;
	__u8 flags; /* F_BACKEND_* */
};

/* A flow in one routing domain, as sent by the client (or as replied by a nat backend). */
struct flow_key {
	__u32 domain;
	__u32 src[4];
	__u32 dst[4];
	__u16 sport; /* network order */
	__u16 dport; /* network order */
	__u8 proto;
	__u8 family;
	__u8 pad[2];
};

/* Connection-table entry. It is followed only while backend_id is still a member of the
 * flow's VIP: gen is the VIP's membership generation (vip_gen) when that was last checked. */
struct ct_entry {
	__u32 backend_id;
	__u16 snat_port; /* nat mode: the source port used toward the backend, network order */
	__u8 flags;      /* CT_F_* */
	__u8 pad;
	__u64 atime_ns;  /* last packet, CLOCK_MONOTONIC (bpf_ktime_get_coarse_ns), LB_CT_ATIME_GRAIN_NS steps */
	__u32 gen;
	__u32 ehash;     /* dsr: entropy_hash of the flow (GUE source port, IPv6 flow label), kept so an
			  * established flow does not hash each packet; 0: not kept (computed) */
};

/* (VIP id, backend id): the backend is one of the VIP's (vip_members). */
struct member_key {
	__u32 vip_id;
	__u32 backend_id;
};

/* NAT reverse entry: what a reply from a backend is rewritten back to. */
struct nat_entry {
	__u32 client[4];
	__u32 vip[4];
	__u16 client_port; /* network order */
	__u16 vip_port;    /* network order */
	__u8 family;
	__u8 pad[3];
};

/* Host-wide settings (index 0 of lb_config). */
struct lb_config {
	__u32 ring_size;       /* Maglev table size; equals the inner map's max_entries */
	__u32 untagged_domain; /* routing domain of untagged frames (0: public fabric) */
	__u32 encap_src4;      /* outer IPv4 source for dsr (network order) */
	__u32 encap_src6[4];   /* outer IPv6 source for dsr */
	__u32 snat_src4;       /* nat mode source address toward backends */
	__u32 snat_src6[4];
	__u32 encap_mode;      /* LB_ENCAP_IPIP or LB_ENCAP_GUE (dsr) */
	__u16 gue_port;        /* GUE destination port, sent and decapsulated (network order) */
	__u16 pad;
	__u32 mtu;             /* dsr egress MTU cap in bytes; 0: the egress device's MTU */
};

/* A backend's resolved next hop, cached per CPU so the FIB is consulted once a second per
 * backend rather than per packet. */
struct nexthop_cache {
	__u8 dmac[6];
	__u8 smac[6];
	__u32 ifindex;   /* egress */
	__u32 ingress;   /* the ingress this entry was resolved for */
	__u32 mtu;       /* the egress device's MTU (bytes, L3) */
	__u64 expires_ns;
};

struct lb_counter {
	__u64 packets;
	__u64 bytes;
};

struct vip_counter {
	__u64 packets;
	__u64 bytes;
	__u64 conns; /* new connections scheduled (conntrack misses that were inserted) */
};

#endif
