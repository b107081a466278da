/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* lb_consts.h — constants of the XDP load balancer. Each can be overridden with -D. */
#ifndef GOVCLOUD_LB_CONSTS_H
#define GOVCLOUD_LB_CONSTS_H

/* Most VIPs (department, address, port, protocol) one host serves. Also the size of the
 * outer Maglev map: each VIP id indexes one inner table. */
#ifndef LB_MAX_VIPS
#define LB_MAX_VIPS 4096
#endif

/* Most backends across all VIPs. Backend id 0 is never used: it marks an empty slot. */
#ifndef LB_MAX_BACKENDS
#define LB_MAX_BACKENDS 16384
#endif

/* Default Maglev table size (a prime). The loader overrides the inner map's max_entries
 * and lb_config.ring_size together, so one object serves any configured size. */
#ifndef LB_RING_SIZE
#define LB_RING_SIZE 65537
#endif

/* Default connection-table capacity; the loader may override max_entries. */
#ifndef LB_CT_SIZE
#define LB_CT_SIZE 65536
#endif

/* Capacity of the NAT reverse table (replies from backends in nat mode). */
#ifndef LB_NAT_SIZE
#define LB_NAT_SIZE 65536
#endif

/* Local addresses whose IPIP/IP6IP6 traffic this host decapsulates (dsr backends here). */
#ifndef LB_MAX_DECAP
#define LB_MAX_DECAP 64
#endif

/* (outer source, local tunnel endpoint) pairs accepted for decapsulation: the fabric address of
 * every host that runs the load balancer, with each endpoint of this host of the same family. */
#ifndef LB_MAX_TUNNELS
#define LB_MAX_TUNNELS 4096
#endif

/* VIPs (domain, address, port, protocol) with a dsr backend on this host: the only inner
 * destinations a decapsulated packet may have. */
/* IPv4 (LB host, endpoint, local VIP port) combinations accepted in one lookup. */
#ifndef LB_MAX_DECAP_ALLOW4
#define LB_MAX_DECAP_ALLOW4 65536
#endif

#ifndef LB_MAX_LOCAL_VIPS
#define LB_MAX_LOCAL_VIPS LB_MAX_VIPS
#endif

/* IPv6 extension headers walked behind an outer IPv6 header to this host's tunnel endpoint
 * before the packet is dropped as malformed (the LB never sends any). */
#ifndef LB_DECAP_MAX_EXTHDRS
#define LB_DECAP_MAX_EXTHDRS 4
#endif

/* IPv6 extension headers (hop-by-hop, destination options, routing, fragment, AH) walked
 * before the upper-layer header of a packet to a VIP (RFC 8200 §4, RFC 7045); a longer chain
 * to a VIP is dropped as unsupported. */
#ifndef LB_MAX_EXTHDRS
#define LB_MAX_EXTHDRS 6
#endif

/* Header offsets kept in struct pkt are masked with this before use (the verifier's bound; the
 * walk of ipv6_ext.h stays far below it). */
#define LB_OFF_MASK 0x3fff

/* dsr encapsulation (lb_config.encap_mode). */
#define LB_ENCAP_IPIP 0 /* IPIP / IP6IP6 / 4in6 / 6in4 (RFC 2003, RFC 2473, RFC 4213) */
#define LB_ENCAP_GUE 1  /* IP in UDP, GUE variant 1 (RFC 8086-style hashed source port) */

/* GUE source ports come from the dynamic range 49152-65535, 14 bits of flow hash
 * (RFC 8086 §3.2.1). */
#define LB_GUE_SPORT_BASE 49152
#define LB_GUE_SPORT_MASK 0x3fff

/* Bytes of the offending packet quoted in a generated frag-needed / packet-too-big: as much
 * as fits in 576 (ICMPv4, RFC 1812 §4.3.2.3) and 1280 (ICMPv6, RFC 4443 §2.4) bytes. */
#define LB_ICMP4_QUOTE 548
#define LB_ICMP6_QUOTE 1232

/* Tries to find a free SNAT source port before the packet is dropped. */
#define LB_SNAT_TRIES 4
#define LB_SNAT_PORT_MIN 1024

#define LB_TTL 64

/* How long a cached backend next hop is trusted before the FIB is asked again. */
#ifndef LB_NEXTHOP_TTL_NS
#define LB_NEXTHOP_TTL_NS 1000000000ULL
#endif

/* (VIP, backend) memberships: every backend of every VIP, drained ones included. */
#ifndef LB_MAX_MEMBERS
#define LB_MAX_MEMBERS 65536
#endif

/* How long a connection-table entry lives without a packet, by state (Cilium's defaults):
 * an established TCP flow 6 h, anything else (UDP) 60 s, a TCP flow after a FIN or RST 10 s.
 * An entry past its life is treated as absent; dataplane/lbmap.ExpireFlows deletes it. */
#ifndef LB_CT_TCP_LIFE_NS
#define LB_CT_TCP_LIFE_NS (21600ULL * 1000000000ULL)
#endif
#ifndef LB_CT_OTHER_LIFE_NS
#define LB_CT_OTHER_LIFE_NS (60ULL * 1000000000ULL)
#endif
#ifndef LB_CT_CLOSE_LIFE_NS
#define LB_CT_CLOSE_LIFE_NS (10ULL * 1000000000ULL)
#endif
/* An entry's access time is rewritten at most this often (one store per flow per grain, not
 * one per packet). */
#ifndef LB_CT_ATIME_GRAIN_NS
#define LB_CT_ATIME_GRAIN_NS 500000000ULL
#endif

/* ct_entry.flags */
#define CT_F_CLOSING (1U << 0) /* a FIN or RST was seen from the client: short life */
#define CT_F_TAKES_NEW (1U << 1) /* at generation gen the backend took new connections (weight > 0) */

/* vip_member flags */
#define F_MEMBER_NEW (1U << 0) /* weight > 0: may take new connections (clear: draining) */

/* vip_meta.flags */
#define F_VIP_NAT (1U << 0) /* full DNAT+SNAT at the LB host; otherwise dsr (IPIP/IP6IP6) */

/* backend.flags */
#define F_BACKEND_ACTIVE (1U << 0) /* connections may stay on it (weight may still be 0: drain) */
#define F_BACKEND_LOCAL (1U << 1)  /* dsr endpoint is this host: pass the packet up unchanged */

/* Address families as stored in keys. */
#define LB_AF_INET 4
#define LB_AF_INET6 6

/* Drop reasons: index into drop_stats. dataplane/lbmap names them from
 * this enum's BTF: DROP_NO_BACKEND is reported as "no_backend". */
enum drop_reason {
	DROP_NONE = 0,
	DROP_NO_BACKEND = 1,    /* VIP has no backend with weight > 0 and no existing flow */
	DROP_FRAGMENT = 2,      /* IP fragment addressed to a VIP: ports unknown, never guessed */
	DROP_MALFORMED = 3,     /* header to a VIP truncated or inconsistent */
	DROP_NO_ROUTE = 4,      /* no route to the backend (fib lookup failed) */
	DROP_SNAT_EXHAUSTED = 5,/* nat mode: no free source port after LB_SNAT_TRIES */
	DROP_UNSUPPORTED = 6,   /* a VIP packet the LB cannot forward (e.g. ICMP too-big in nat mode) */
	DROP_ENCAP = 7,         /* headroom could not be grown or shrunk */
	DROP_NO_NEIGHBOR = 8,   /* next hop's MAC not resolved yet (the agent resolves backend hosts) */
	/* Tunnelled to this host's endpoint but not what a load balancer sends (bpf/lb/decap.h): */
	DROP_DECAP_FRAGMENT = 9,      /* outer or inner packet is a fragment */
	DROP_DECAP_SOURCE = 10,       /* outer source is not a load-balancer host (tunnel_srcs) */
	DROP_DECAP_MALFORMED = 11,    /* outer or inner header truncated, inconsistent or with options */
	DROP_DECAP_NOT_LOCAL_VIP = 12,/* inner packet is not TCP/UDP (or ICMP too-big) to a local VIP */
	/* Encapsulated, the packet would exceed the egress MTU: the sender got ICMP frag-needed /
	 * packet-too-big from the program (encap.h, icmp_gen.h), the packet was not sent. */
	DROP_TOO_BIG = 13,
	DROP_DECAP_ECN = 14,    /* outer CE over a not-ECN-capable inner packet (RFC 6040 §4.2) */
	DROP_MAX = 15,
};

/* Entries of drop_stats: room for reasons added later without re-creating a pinned map. */
#define LB_MAX_DROP_REASONS 32
_Static_assert(DROP_MAX <= LB_MAX_DROP_REASONS, "drop_stats too small for enum drop_reason");

#endif
