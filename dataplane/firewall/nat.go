package firewall

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// FloatingIP maps public address Public 1:1 to a guest's address Private in department Dept
// (IPv4): what arrives on the uplink for Public is translated to Private (DNAT) and routed in
// the department's table; Private's connections leaving through the uplink take Public as
// source (SNAT) instead of the department's egress address.
type FloatingIP struct {
	Dept    uint32
	Public  netip.Addr
	Private netip.Addr
}

// ipsDstNAT is IPS_DST_NAT of the conntrack status bits (include/uapi/linux/netfilter/
// nf_conntrack_common.h): the connection's destination was translated.
const ipsDstNAT = 1 << 5

// natDept is a department with public addresses on this host, as the NAT rules need it.
type natDept struct {
	Department
	fips []FloatingIP
}

// natDepartments lists the departments with an egress address or a floating IP, in cfg's
// (sorted) order.
func natDepartments(cfg Config) []natDept {
	var out []natDept
	for _, d := range cfg.Departments {
		nd := natDept{Department: d}
		for _, f := range cfg.FloatingIPs {
			if f.Dept == d.ID {
				nd.fips = append(nd.fips, f)
			}
		}
		if d.SNAT.IsValid() || len(nd.fips) > 0 {
			out = append(out, nd)
		}
	}
	return out
}

// validateNAT checks what egress and floating IPs need: an uplink, IPv4 addresses, a
// department with a mark (its table routes the return traffic) and an ID that fits a conntrack
// zone (16 bits; the zone keeps overlapping departments' connections apart).
func validateNAT(cfg Config) error {
	depts := map[uint32]Department{}
	for _, d := range cfg.Departments {
		depts[d.ID] = d
	}
	need := func(what string, id uint32) error {
		d, ok := depts[id]
		switch {
		case !ok:
			return fmt.Errorf("%s: unknown department %d", what, id)
		case d.Mark == 0:
			return fmt.Errorf("%s: department %d has no mark (its table routes the return traffic)", what, id)
		case id == 0 || id > 0xffff:
			return fmt.Errorf("%s: department id %d does not fit a conntrack zone (1-65535)", what, id)
		case cfg.Uplink == "" || len(cfg.Uplink) > 15:
			return fmt.Errorf("%s: uplink interface %q: want a name of 1-15 bytes", what, cfg.Uplink)
		}
		return nil
	}
	seen := map[netip.Addr]string{}
	claim := func(a netip.Addr, what string) error {
		if o, ok := seen[a]; ok {
			return fmt.Errorf("%s: address %s already used by %s", what, a, o)
		}
		seen[a] = what
		return nil
	}
	for _, d := range cfg.Departments {
		if !d.SNAT.IsValid() {
			continue
		}
		what := fmt.Sprintf("department %d egress %s", d.ID, d.SNAT)
		if !d.SNAT.Is4() {
			return fmt.Errorf("%s: want an IPv4 address", what)
		}
		if err := need(what, d.ID); err != nil {
			return err
		}
		if err := claim(d.SNAT, what); err != nil {
			return err
		}
	}
	for _, f := range cfg.FloatingIPs {
		what := fmt.Sprintf("floating IP %s -> %s", f.Public, f.Private)
		if !f.Public.Is4() || !f.Private.Is4() {
			return fmt.Errorf("%s: want IPv4 addresses", what)
		}
		if err := need(what, f.Dept); err != nil {
			return err
		}
		if err := claim(f.Public, what); err != nil {
			return err
		}
	}
	return nil
}

// buildNAT adds egress and floating IPs to the inet table (it.Chains must not yet end in
// "state"):
//   - chain zone (raw prerouting): a department's connections to beyond its segments and the
//     management prefixes, and what the uplink brings to its public addresses, are tracked in
//     conntrack zone <department id>, so two departments with the same prefixes never share an
//     entry (the reply to an egress address is found in the department's zone and de-NATed);
//   - prerouting: what the uplink brings to a floating IP takes the department's mark (meta
//     and ct), so it is routed in the department's table once translated;
//   - chain dnat (nat prerouting): floating IP -> guest;
//   - chain snat (nat postrouting): a guest with a floating IP leaves as it, the department's
//     other segment addresses as its egress address, matched by the department's mark so
//     overlapping prefixes are told apart;
//
// natForward adds the forward rules.
//
// Connections a department receives from the uplink by other means (VIP delivery) are left
// out of the zones: their replies' sources are VIPs, never a segment address.
func buildNAT(cfg Config, in *nftables.Table, it *TablePlan, pre *ChainPlan) {
	nds := natDepartments(cfg)
	if len(nds) == 0 {
		return
	}
	zone := &ChainPlan{Chain: &nftables.Chain{Name: "zone", Table: in, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw}}
	dnat := &ChainPlan{Chain: &nftables.Chain{Name: "dnat", Table: in, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest}}
	snat := &ChainPlan{Chain: &nftables.Chain{Name: "snat", Table: in, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource}}
	v4 := nfproto(unix.NFPROTO_IPV4)
	for _, d := range nds {
		setZone := []expr.Any{&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint16(uint16(d.ID))},
			&expr.Ct{Key: expr.CtKeyZONE, Register: 1, SourceRegister: true}}
		segs := fmt.Sprintf("segments4-%d", d.ID)
		zone.Rules = append(zone.Rules, rule(iifInSet(fmt.Sprintf("dept-%d", d.ID), false), v4,
			payloadNet(12, 4), lookup(segs), payloadNet(16, 4), lookupNot(segs), payloadNet(16, 4), lookupNot("management4"), setZone))
		mark := binaryutil.NativeEndian.PutUint32(d.Mark)
		for _, a := range publicAddrs(d) {
			zone.Rules = append(zone.Rules, rule(matchIif(cfg.Uplink), v4, payloadNet(16, 4), eq(a.AsSlice()), setZone))
		}
		for _, f := range d.fips {
			pre.Rules = append(pre.Rules, rule(matchIif(cfg.Uplink), v4, payloadNet(16, 4), eq(f.Public.AsSlice()),
				[]expr.Any{&expr.Immediate{Register: 1, Data: mark},
					&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
					&expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true}}))
			dnat.Rules = append(dnat.Rules, rule(matchIif(cfg.Uplink), v4, payloadNet(16, 4), eq(f.Public.AsSlice()), natTo(expr.NATTypeDestNAT, f.Private)))
			snat.Rules = append(snat.Rules, rule(matchOif(cfg.Uplink), v4, metaMark(), eq(mark), payloadNet(12, 4), eq(f.Private.AsSlice()), natTo(expr.NATTypeSourceNAT, f.Public)))
		}
		if d.SNAT.IsValid() {
			snat.Rules = append(snat.Rules, rule(matchOif(cfg.Uplink), v4, metaMark(), eq(mark), payloadNet(12, 4), lookup(segs), natTo(expr.NATTypeSourceNAT, d.SNAT)))
		}
	}
	it.Chains = append(it.Chains, zone, dnat, snat)
}

// natForward lets connections translated to a floating IP's guest (ct status dnat, the
// department's ct mark) from non-tenant interfaces into the department's bridges.
func natForward(cfg Config) [][]expr.Any {
	var out [][]expr.Any
	for _, d := range natDepartments(cfg) {
		if len(d.fips) > 0 {
			out = append(out, rule(iifInSet("tenant", true), oifInSet(fmt.Sprintf("dept-%d", d.ID), false), ctMark(d.Mark),
				[]expr.Any{&expr.Ct{Key: expr.CtKeySTATUS, Register: 1}}, masked(binaryutil.NativeEndian.PutUint32(ipsDstNAT)),
				neq(make([]byte, 4)), accept()))
		}
	}
	return out
}

// publicAddrs is a department's egress address and floating IPs.
func publicAddrs(d natDept) []netip.Addr {
	var out []netip.Addr
	if d.SNAT.IsValid() {
		out = append(out, d.SNAT)
	}
	for _, f := range d.fips {
		out = append(out, f.Public)
	}
	return out
}

func matchOif(n string) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(n)}}
}

// lookupNot matches register 1 not in a named set.
func lookupNot(set string) []expr.Any {
	return []expr.Any{&expr.Lookup{SourceRegister: 1, SetName: set, Invert: true}}
}

// natTo translates the source (SNAT) or destination (DNAT) to IPv4 address a, ports kept.
func natTo(t expr.NATType, a netip.Addr) []expr.Any {
	return []expr.Any{&expr.Immediate{Register: 1, Data: a.AsSlice()},
		&expr.NAT{Type: t, Family: unix.NFPROTO_IPV4, RegAddrMin: 1}}
}
