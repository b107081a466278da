// Package firewall renders and applies the host's nftables rules (the only google/nftables
// import in the repository): isolation between departments, anti-spoofing on guest ports and
// management addresses kept out of reach of tenant segments.
//
// Two tables named "govcloud" are managed as a whole. A bridge-family table whitelists what
// each guest port may send (its own MAC and addresses, no tags). An inet-family table drops
// forwarding between bridges of different departments and toward management prefixes, and
// lets tenant bridges reach only their own gateway addresses on the host. Plan builds the rules
// as data (so they can be checked without root); Apply replaces both tables in one netlink
// transaction, or does nothing when the kernel already holds the same plan.
package firewall

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the name of both managed tables.
const TableName = "govcloud"

// Department is a set of segment bridges that may forward to each other.
type Department struct {
	ID      uint32
	Bridges []string
	// Mark (the department's routing table, non-zero) is put on connections that tenants open
	// to the host, and on the host's replies, so "fwmark <Mark> lookup <table>" routes the
	// replies in the department's table: with overlapping prefixes the main table could send
	// them into another department's bridge. 0: no marking.
	Mark uint32
}

// Gateway is a distributed-gateway address on a segment bridge: the only host address a
// tenant on that bridge may talk to.
type Gateway struct {
	Bridge string
	Addr   netip.Addr
}

// Port is a guest's host-side port and what it may send from.
type Port struct {
	Ifname string
	MAC    net.HardwareAddr
	Addrs  []netip.Addr // IPv4 and/or IPv6; link-local IPv6 and :: (DAD) are always allowed
}

// Config is the whole wanted rule set.
type Config struct {
	Departments []Department
	Gateways    []Gateway
	Ports       []Port
	Management  []netip.Prefix // never reachable from tenant bridges
}

// Plan is the rule set as nftables objects, before any are sent.
type Plan struct {
	Tables []*TablePlan
	Hash   string // of the rendered plan; stored in the kernel to recognise it
}

// TablePlan is one table with its sets and chains.
type TablePlan struct {
	Table  *nftables.Table
	Sets   []*SetPlan
	Chains []*ChainPlan
}

// SetPlan is a named set and its elements.
type SetPlan struct {
	Set   *nftables.Set
	Elems []nftables.SetElement
}

// ChainPlan is a chain and its rules in order.
type ChainPlan struct {
	Chain *nftables.Chain
	Rules [][]expr.Any
}

func ifname(n string) []byte {
	b := make([]byte, 16)
	copy(b, n)
	return b
}

// Build turns a Config into a Plan. The result only depends on cfg (sorted internally).
func Build(cfg Config) (*Plan, error) {
	cfg = normalize(cfg)
	br := &nftables.Table{Name: TableName, Family: nftables.TableFamilyBridge}
	in := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	bt := &TablePlan{Table: br}
	it := &TablePlan{Table: in}

	// Bridge table: every guest port jumps to its own whitelist chain.
	guests := &ChainPlan{Chain: &nftables.Chain{Name: "guests", Table: br, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-200)}}
	bt.Chains = append(bt.Chains, guests)
	for _, p := range cfg.Ports {
		if len(p.MAC) != 6 {
			return nil, fmt.Errorf("guest port %s: MAC %q is not a 6-byte Ethernet address", p.Ifname, p.MAC)
		}
		if p.Ifname == "" || len(p.Ifname) > 15 {
			return nil, fmt.Errorf("guest port %q: bad interface name", p.Ifname)
		}
		c := &ChainPlan{Chain: &nftables.Chain{Name: "port-" + p.Ifname, Table: br}}
		guests.Rules = append(guests.Rules, rule(matchIif(p.Ifname), jump(c.Chain.Name)))
		c.Rules = append(c.Rules, rule(etherSaddr(), neq(p.MAC), counter(), drop()))
		for _, a := range p.Addrs {
			if a.Is4() {
				b := a.As4()
				c.Rules = append(c.Rules,
					rule(etherType(unix.ETH_P_IP), payloadNet(12, 4), eq(b[:]), accept()),
					rule(etherType(unix.ETH_P_ARP), payloadNet(8, 6), eq(p.MAC), payloadNet(14, 4), eq(b[:]), accept()))
			} else {
				b := a.As16()
				c.Rules = append(c.Rules, rule(etherType(unix.ETH_P_IPV6), payloadNet(8, 16), eq(b[:]), accept()))
			}
		}
		ll := netip.MustParseAddr("fe80::").As16()
		mask := netip.MustParseAddr("ffc0::").As16()
		unspec := netip.IPv6Unspecified().As16()
		c.Rules = append(c.Rules,
			rule(etherType(unix.ETH_P_IPV6), payloadNet(8, 16), masked(mask[:]), eq(ll[:]), accept()),
			rule(etherType(unix.ETH_P_IPV6), payloadNet(8, 16), eq(unspec[:]), accept()),
			rule(counter(), drop()))
		bt.Chains = append(bt.Chains, c)
	}

	// inet table: sets of tenant bridges, per department.
	tenant := &SetPlan{Set: &nftables.Set{Table: in, Name: "tenant", KeyType: nftables.TypeIFName}}
	it.Sets = append(it.Sets, tenant)
	for _, d := range cfg.Departments {
		s := &SetPlan{Set: &nftables.Set{Table: in, Name: fmt.Sprintf("dept-%d", d.ID), KeyType: nftables.TypeIFName}}
		for _, b := range d.Bridges {
			s.Elems = append(s.Elems, nftables.SetElement{Key: ifname(b)})
			tenant.Elems = append(tenant.Elems, nftables.SetElement{Key: ifname(b)})
		}
		it.Sets = append(it.Sets, s)
	}
	slices.SortFunc(tenant.Elems, func(a, b nftables.SetElement) int { return strings.Compare(string(a.Key), string(b.Key)) })

	// Gateways as (bridge . address) sets: one lookup however many segments there are.
	gw4 := &SetPlan{Set: &nftables.Set{Table: in, Name: "gateway4", Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr)}}
	gw6 := &SetPlan{Set: &nftables.Set{Table: in, Name: "gateway6", Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIP6Addr)}}
	for _, g := range cfg.Gateways {
		if g.Addr.Is4() {
			b := g.Addr.As4()
			gw4.Elems = append(gw4.Elems, nftables.SetElement{Key: append(ifname(g.Bridge), b[:]...)})
		} else {
			b := g.Addr.As16()
			gw6.Elems = append(gw6.Elems, nftables.SetElement{Key: append(ifname(g.Bridge), b[:]...)})
		}
	}
	it.Sets = append(it.Sets, gw4, gw6)
	// Department marks: bridge -> mark, and the set of marks that are ours.
	marks := &SetPlan{Set: &nftables.Set{Table: in, Name: "bridge-mark", IsMap: true,
		KeyType: nftables.TypeIFName, DataType: nftables.TypeMark}}
	ours := &SetPlan{Set: &nftables.Set{Table: in, Name: "marks", KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian}}
	for _, d := range cfg.Departments {
		if d.Mark == 0 {
			continue
		}
		m := binaryutil.NativeEndian.PutUint32(d.Mark)
		ours.Elems = append(ours.Elems, nftables.SetElement{Key: m})
		for _, b := range d.Bridges {
			marks.Elems = append(marks.Elems, nftables.SetElement{Key: ifname(b), Val: m})
		}
	}
	slices.SortFunc(marks.Elems, func(a, b nftables.SetElement) int { return strings.Compare(string(a.Key), string(b.Key)) })
	it.Sets = append(it.Sets, marks, ours)
	input := &ChainPlan{Chain: &nftables.Chain{Name: "input", Table: in, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter}}
	if len(ours.Elems) > 0 {
		input.Rules = append(input.Rules, rule(iifInSet("bridge-mark", false), []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: "bridge-mark"},
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
		}))
	}
	input.Rules = append(input.Rules,
		rule(nfproto(unix.NFPROTO_IPV4), concatIifDaddr(16, 4, "gateway4"), accept()),
		rule(nfproto(unix.NFPROTO_IPV6), concatIifDaddr(24, 16, "gateway6"), accept()))
	for _, t := range []byte{133, 135, 136} { // router solicit, neighbour solicit/advert
		input.Rules = append(input.Rules, rule(iifInSet("tenant", false), l4proto(unix.IPPROTO_ICMPV6), payloadTransport(0, 1), eq([]byte{t}), accept()))
	}
	input.Rules = append(input.Rules, rule(iifInSet("tenant", false), counter(), drop()))
	it.Chains = append(it.Chains, input)

	forward := &ChainPlan{Chain: &nftables.Chain{Name: "forward", Table: in, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter}}
	for _, d := range cfg.Departments {
		set := fmt.Sprintf("dept-%d", d.ID)
		forward.Rules = append(forward.Rules, rule(iifInSet(set, false), oifInSet("tenant", false), oifInSet(set, true), counter(), drop()))
	}
	for _, p := range cfg.Management {
		p = p.Masked()
		if p.Addr().Is4() {
			n, m := p.Addr().As4(), net.CIDRMask(p.Bits(), 32)
			forward.Rules = append(forward.Rules, rule(iifInSet("tenant", false), nfproto(unix.NFPROTO_IPV4), payloadNet(16, 4), masked(m), eq(n[:]), counter(), drop()))
		} else {
			n, m := p.Addr().As16(), net.CIDRMask(p.Bits(), 128)
			forward.Rules = append(forward.Rules, rule(iifInSet("tenant", false), nfproto(unix.NFPROTO_IPV6), payloadNet(24, 16), masked(m), eq(n[:]), counter(), drop()))
		}
	}
	it.Chains = append(it.Chains, forward)
	if len(ours.Elems) > 0 {
		// The host's packets of a tenant's connection carry its department mark, so they are
		// routed (type route: re-routed when the mark changes) in the department's table.
		output := &ChainPlan{Chain: &nftables.Chain{Name: "output", Table: in, Type: nftables.ChainTypeRoute,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityMangle}}
		output.Rules = append(output.Rules, rule([]expr.Any{
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
			&expr.Lookup{SourceRegister: 1, SetName: "marks"},
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true},
		}))
		it.Chains = append(it.Chains, output)
	}
	it.Chains = append(it.Chains, &ChainPlan{Chain: &nftables.Chain{Name: "state", Table: in}})

	p := &Plan{Tables: []*TablePlan{bt, it}}
	sum := sha256.Sum256([]byte(p.String()))
	p.Hash = hex.EncodeToString(sum[:8])
	st := it.Chains[len(it.Chains)-1]
	st.Rules = append(st.Rules, rule(counter())) // carries the hash as its comment (Apply)
	return p, nil
}

func normalize(cfg Config) Config {
	out := Config{Management: slices.Clone(cfg.Management)}
	for _, d := range cfg.Departments {
		b := slices.Clone(d.Bridges)
		slices.Sort(b)
		out.Departments = append(out.Departments, Department{ID: d.ID, Bridges: slices.Compact(b), Mark: d.Mark})
	}
	slices.SortFunc(out.Departments, func(a, b Department) int { return int(a.ID) - int(b.ID) })
	out.Gateways = slices.Clone(cfg.Gateways)
	slices.SortFunc(out.Gateways, func(a, b Gateway) int {
		if c := strings.Compare(a.Bridge, b.Bridge); c != 0 {
			return c
		}
		return a.Addr.Compare(b.Addr)
	})
	for _, p := range cfg.Ports {
		a := slices.Clone(p.Addrs)
		slices.SortFunc(a, func(x, y netip.Addr) int { return x.Compare(y) })
		out.Ports = append(out.Ports, Port{Ifname: p.Ifname, MAC: p.MAC, Addrs: a})
	}
	slices.SortFunc(out.Ports, func(a, b Port) int { return strings.Compare(a.Ifname, b.Ifname) })
	slices.SortFunc(out.Management, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
	return out
}

func rule(e ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, x := range e {
		out = append(out, x...)
	}
	return out
}

func matchIif(n string) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(n)}}
}

func iifInSet(set string, invert bool) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Lookup{SourceRegister: 1, SetName: set, Invert: invert}}
}

// concatIifDaddr looks up (iifname . destination address) in a concatenated set: the name
// fills 32-bit registers 8-11 (NFT_REG32_00..03), the address follows from register 12.
func concatIifDaddr(off, n uint32, set string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 8},
		&expr.Payload{DestRegister: 12, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: 8, SetName: set},
	}
}

func oifInSet(set string, invert bool) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, &expr.Lookup{SourceRegister: 1, SetName: set, Invert: invert}}
}

func etherSaddr() []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6}}
}

func etherType(t uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(t >> 8), byte(t)}},
	}
}

func nfproto(p byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}}}
}

func l4proto(p byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}}}
}

func payloadNet(off, n uint32) []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n}}
}

func payloadTransport(off, n uint32) []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: n}}
}

func masked(mask []byte) []expr.Any {
	return []expr.Any{&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(mask)), Mask: mask, Xor: make([]byte, len(mask))}}
}

func eq(b []byte) []expr.Any  { return []expr.Any{&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b}} }
func neq(b []byte) []expr.Any { return []expr.Any{&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: b}} }
func counter() []expr.Any     { return []expr.Any{&expr.Counter{}} }
func drop() []expr.Any        { return []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}} }
func accept() []expr.Any      { return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}} }
func jump(c string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: c}}
}
