package firewall

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// ReasonPolicy: a department's security policy selects the destination guest and no rule
// allows the packet (Guard).
const ReasonPolicy = "policy"

// Guard is the security policies' filter in front of one local guest: what a tenant bridge
// forwards to one of the guest's own addresses on Bridge (bridged on the segment, with
// br_netfilter, or routed from another segment of the department; from this host or, over the
// trunk, from another) passes only when a rule allows it or it belongs to a connection already
// let through (ct state established or related). ND to the guest always passes. Traffic from
// non-tenant interfaces (VIP delivery, replies) is not a guard's business: the forward chain
// already admits only VIP ports and replies there.
type Guard struct {
	Name   string       // the guest's port name: its chain is "guard-<Name>"
	Bridge string       // the segment bridge the guest is on
	Addrs  []netip.Addr // the guest's own addresses (IPv4 and/or IPv6)
	Dept   uint32       // department id its drops count for
	Rules  []GuardRule
}

// GuardRule allows packets from Sources (prefixes of either family; none: the rule allows
// nothing) with protocol Proto (0: any; unix.IPPROTO_TCP, IPPROTO_UDP, or IPPROTO_ICMP, which
// means ICMP and ICMPv6) to destination ports Ports (none: every port; TCP and UDP only).
type GuardRule struct {
	Sources []netip.Prefix
	Proto   uint8
	Ports   []PortRange
}

// PortRange is the destination ports First to Last, inclusive.
type PortRange struct{ First, Last uint16 }

// ctStateOK is ct state established|related (IP_CT_ESTABLISHED and IP_CT_RELATED as state bits).
const ctStateOK = 0x02 | 0x04

func validateGuards(gs []Guard) error {
	seen := map[string]bool{}
	for _, g := range gs {
		switch {
		case g.Name == "" || len(g.Name) > 64 || strings.ContainsAny(g.Name, " \"/"):
			return fmt.Errorf("guard %q: bad name", g.Name)
		case seen[g.Name]:
			return fmt.Errorf("guard %q listed twice", g.Name)
		case g.Bridge == "" || len(g.Bridge) > 15:
			return fmt.Errorf("guard %q: bad bridge name %q", g.Name, g.Bridge)
		}
		seen[g.Name] = true
		for i, r := range g.Rules {
			switch r.Proto {
			case 0, unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_ICMP:
			default:
				return fmt.Errorf("guard %q rule %d: protocol %d is not TCP, UDP or ICMP", g.Name, i, r.Proto)
			}
			for _, p := range r.Ports {
				switch {
				case r.Proto != unix.IPPROTO_TCP && r.Proto != unix.IPPROTO_UDP:
					return fmt.Errorf("guard %q rule %d: ports %d-%d need TCP or UDP", g.Name, i, p.First, p.Last)
				case p.First == 0 || p.Last < p.First:
					return fmt.Errorf("guard %q rule %d: bad port range %d-%d", g.Name, i, p.First, p.Last)
				}
			}
		}
	}
	return nil
}

func normalizeGuards(gs []Guard) []Guard {
	var out []Guard
	for _, g := range gs {
		n := Guard{Name: g.Name, Bridge: g.Bridge, Dept: g.Dept, Addrs: slices.Clone(g.Addrs)}
		slices.SortFunc(n.Addrs, func(x, y netip.Addr) int { return x.Compare(y) })
		n.Addrs = slices.Compact(n.Addrs)
		for _, r := range g.Rules {
			n.Rules = append(n.Rules, GuardRule{Sources: slices.Clone(r.Sources), Proto: r.Proto, Ports: slices.Clone(r.Ports)})
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b Guard) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// buildGuards adds the base chain "policy" (forward, after the forward chain) and one chain
// per guard with its source sets to the inet table.
func buildGuards(cfg Config, in *nftables.Table, it *TablePlan, ic *counters) {
	if len(cfg.Guards) == 0 {
		return
	}
	prio := *nftables.ChainPriorityFilter + 1
	pol := &ChainPlan{Chain: &nftables.Chain{Name: "policy", Table: in, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(prio)}}
	mask := binaryutil.NativeEndian.PutUint32(ctStateOK)
	pol.Rules = append(pol.Rules,
		rule([]expr.Any{&expr.Ct{Key: expr.CtKeySTATE, Register: 1}}, masked(mask), neq([]byte{0, 0, 0, 0}), accept()),
		rule(iifInSet("tenant", true), accept()))
	var chains []*ChainPlan
	for _, g := range cfg.Guards {
		gc := &ChainPlan{Chain: &nftables.Chain{Name: "guard-" + g.Name, Table: in}}
		has6 := false
		for _, a := range g.Addrs {
			if a.Is4() {
				b := a.As4()
				pol.Rules = append(pol.Rules, rule(oifname(g.Bridge), nfproto(unix.NFPROTO_IPV4), payloadNet(16, 4), eq(b[:]), jump(gc.Chain.Name)))
			} else {
				has6 = true
				b := a.As16()
				pol.Rules = append(pol.Rules, rule(oifname(g.Bridge), nfproto(unix.NFPROTO_IPV6), payloadNet(24, 16), eq(b[:]), jump(gc.Chain.Name)))
			}
		}
		if has6 {
			for _, t := range ndTypes {
				gc.Rules = append(gc.Rules, rule(l4proto(unix.IPPROTO_ICMPV6), payloadTransport(0, 1), eq([]byte{t}), accept()))
			}
		}
		for i, r := range g.Rules {
			for _, v6 := range []bool{false, true} {
				fam, name, saddr, icmp := byte(unix.NFPROTO_IPV4), fmt.Sprintf("guard-%s-%d-4", g.Name, i), payloadNet(12, 4), byte(unix.IPPROTO_ICMP)
				if v6 {
					fam, name, saddr, icmp = unix.NFPROTO_IPV6, fmt.Sprintf("guard-%s-%d-6", g.Name, i), payloadNet(8, 16), unix.IPPROTO_ICMPV6
				}
				src := intervalSet(in, name, r.Sources, v6)
				if len(src.Elems) == 0 {
					continue
				}
				it.Sets = append(it.Sets, src)
				m := rule(nfproto(fam), saddr, lookup(name))
				switch r.Proto {
				case 0:
				case unix.IPPROTO_ICMP:
					m = rule(m, l4proto(icmp))
				default:
					m = rule(m, l4proto(r.Proto))
				}
				if len(r.Ports) == 0 {
					gc.Rules = append(gc.Rules, rule(m, accept()))
					continue
				}
				for _, p := range r.Ports {
					gc.Rules = append(gc.Rules, rule(m, payloadTransport(2, 2), portMatch(p), accept()))
				}
			}
		}
		gc.Rules = append(gc.Rules, rule(ic.drop(g.Dept, ReasonPolicy)))
		chains = append(chains, gc)
	}
	it.Chains = append(it.Chains, pol)
	it.Chains = append(it.Chains, chains...)
}

func oifname(n string) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(n)}}
}

// portMatch compares register 1 (a port, network order) with p.
func portMatch(p PortRange) []expr.Any {
	lo, hi := binaryutil.BigEndian.PutUint16(p.First), binaryutil.BigEndian.PutUint16(p.Last)
	if p.First == p.Last {
		return eq(lo)
	}
	return []expr.Any{&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: lo, ToData: hi}}
}
