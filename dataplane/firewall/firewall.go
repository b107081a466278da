// Package firewall renders and applies the host's nftables rules (the only google/nftables
// import in the repository): isolation between departments, anti-spoofing on guest ports, the
// management plane kept out of reach of tenant segments, and the fabric kept out of them.
//
// Two tables named "govcloud" are managed as a whole. A bridge-family table whitelists what
// each guest port may send (its own MAC and addresses, no tags). An inet-family table
//   - marks every connection a tenant bridge opens with its department (ct mark and meta mark,
//     so the host's replies and ICMP errors are routed in the department's table);
//   - lets a tenant reach the host only on its own gateway address with ICMP echo, plus
//     ND/RS/MLD and explicit TenantAllow exceptions;
//   - drops forwarding between departments and toward management prefixes;
//   - lets nothing from a non-tenant interface into a tenant bridge except replies of
//     connections the bridge's department opened and VIP delivery to local backends;
//   - drops tunnel protocols (IPIP, IPv6-in-IP, GRE) and anything addressed to a segment from
//     non-tenant interfaces before the host's stack acts on them;
//   - lets the host itself send into a tenant bridge only packets marked with the bridge's
//     department (replies, health probes) and ND/MLD;
//   - in front of guests a security policy selects (Guards), lets through from the tenant
//     bridges only what a rule allows, and established or related connections.
//
// Every drop counts in a named counter "drop-<department id>-<reason>" (Reasons); Counters
// reads them and Apply carries their values into a replaced rule set, so they never go
// backwards. Plan builds the rules as data (so they can be checked without root); Apply
// replaces both tables in one netlink transaction, or does nothing when the kernel already
// holds the same plan; Update, given the plan the kernel holds, sends only the chains, sets and
// counters that differ, also in one transaction.
package firewall

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the name of both managed tables.
const TableName = "govcloud"

// Drop reasons: the <reason> of a counter "drop-<department id>-<reason>".
const (
	// ReasonSpoofed: a guest port sent from a MAC or address that is not its own, a tag or
	// another ethertype (bridge table).
	ReasonSpoofed = "spoofed"
	// ReasonCrossDepartment: forwarding from a tenant bridge into another department's.
	ReasonCrossDepartment = "cross_department"
	// ReasonToManagement: forwarding from a tenant bridge toward a management prefix.
	ReasonToManagement = "to_management"
	// ReasonToHost: a tenant bridge to the host, other than echo to its own gateway, ND/MLD
	// and TenantAllow.
	ReasonToHost = "to_host"
	// ReasonFromFabric: from a non-tenant interface into a tenant bridge (not a reply, not VIP
	// delivery), or to a segment address of the department on the host.
	ReasonFromFabric = "from_fabric"
	// ReasonFromHost: the host itself sending into a tenant bridge without the department's
	// mark (not a reply, not a probe of the department).
	ReasonFromHost = "from_host"
	// ReasonTunnel: IPIP, IPv6-in-IP or GRE reaching the host's stack from a non-tenant
	// interface (department 0: not attributable).
	ReasonTunnel = "tunnel"
	// ReasonIPOptions: IPv4 with options from a guest. The kernel acts on options (and answers
	// malformed ones with ICMP from the host's own address) before any input rule can drop
	// the packet, so they stop at the guest's port.
	ReasonIPOptions = "ip_options"
)

// Reasons lists every drop reason, in a fixed order.
var Reasons = []string{ReasonSpoofed, ReasonCrossDepartment, ReasonToManagement, ReasonToHost, ReasonFromFabric, ReasonFromHost, ReasonTunnel, ReasonIPOptions, ReasonPolicy}

// CounterName is the named counter of department dept's drops for reason.
func CounterName(dept uint32, reason string) string { return fmt.Sprintf("drop-%d-%s", dept, reason) }

// ParseCounterName splits a CounterName; ok is false for other names.
func ParseCounterName(name string) (dept uint32, reason string, ok bool) {
	rest, ok := strings.CutPrefix(name, "drop-")
	if !ok {
		return 0, "", false
	}
	id, reason, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, "", false
	}
	n, err := strconv.ParseUint(id, 10, 32)
	if err != nil || !slices.Contains(Reasons, reason) {
		return 0, "", false
	}
	return uint32(n), reason, true
}

// Department is a set of segment bridges that may forward to each other.
type Department struct {
	ID      uint32
	Bridges []string
	// Mark (the department's routing table, non-zero) is put on connections that tenants open
	// (and on their packets), and on the host's replies, so "fwmark <Mark> lookup <table>"
	// routes the replies in the department's table: with overlapping prefixes the main table
	// could send them into another department's bridge. 0: no marking; then replies from the
	// fabric are let in by direction alone and the host's own output is not filtered.
	Mark uint32
	// Prefixes are the department's segment prefixes (IPv4 and IPv6): nothing from a
	// non-tenant interface may be addressed to them on the host.
	Prefixes []netip.Prefix
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
	Dept   uint32       // department id its drops count for
}

// FabricPort is the trunk's port into one segment bridge. Frames arriving there come from the
// fabric: they may carry only a remote guest's own MAC with its own addresses (ARP included),
// or be IP routed by a peer host's distributed gateway (Config.GatewayMAC). Anything else (a
// local guest's MAC, a remote guest's MAC with another address, ARP claiming a guest's
// address) is dropped, so nothing on the fabric can poison a guest's ARP cache or the bridge.
type FabricPort struct {
	Ifname string
	Dept   uint32   // department id its drops count for
	Guests []Remote // the segment's guests on other hosts
	// Prefixes are the department's segment prefixes: what a peer host's gateway routes here
	// comes from one of its guests, so from one of these (a frame with the gateway's MAC and
	// any other source is a forgery).
	Prefixes []netip.Prefix
}

// Remote is a guest on another host: its MAC and the addresses it may send from (its own and
// the VIPs it answers from).
type Remote struct {
	MAC   net.HardwareAddr
	Addrs []netip.Addr
}

// VIPPort is VIP delivery to a local backend: traffic from non-tenant interfaces to VIP
// proto/port may be forwarded into Bridge.
type VIPPort struct {
	Bridge string
	VIP    netip.Addr
	Proto  uint8 // unix.IPPROTO_TCP or unix.IPPROTO_UDP
	Port   uint16
}

// Allow is an explicit exception for tenants: Proto (TCP or UDP) to Addr:Port is let through
// (forwarded even into a management prefix, or delivered to the host).
type Allow struct {
	Proto uint8
	Addr  netip.Addr
	Port  uint16
}

// Config is the whole wanted rule set.
type Config struct {
	Departments []Department
	Gateways    []Gateway
	Ports       []Port
	Management  []netip.Prefix // never reachable from tenant bridges
	VIPPorts    []VIPPort
	TenantAllow []Allow
	FabricPorts []FabricPort
	GatewayMAC  net.HardwareAddr // the distributed gateway's MAC, the same on every host
	// Guards are the security policies' filters in front of local guests (Guard).
	Guards []Guard
}

// Plan is the rule set as nftables objects, before any are sent.
type Plan struct {
	Tables []*TablePlan
	Hash   string // of the rendered plan; stored in the kernel to recognise it
}

// TablePlan is one table with its named counters, sets and chains.
type TablePlan struct {
	Table    *nftables.Table
	Counters []string
	Sets     []*SetPlan
	Chains   []*ChainPlan
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

// counters collects the named counters a table's rules use.
type counters struct{ names []string }

func (c *counters) drop(dept uint32, reason string) []expr.Any {
	n := CounterName(dept, reason)
	if !slices.Contains(c.names, n) {
		c.names = append(c.names, n)
	}
	return []expr.Any{&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: n}, &expr.Verdict{Kind: expr.VerdictDrop}}
}

// Build turns a Config into a Plan. The result only depends on cfg (sorted internally).
func Build(cfg Config) (*Plan, error) {
	if err := validate(cfg); err != nil {
		return nil, err
	}
	cfg = normalize(cfg)
	br := &nftables.Table{Name: TableName, Family: nftables.TableFamilyBridge}
	in := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	bt := &TablePlan{Table: br}
	it := &TablePlan{Table: in}
	bc, ic := &counters{}, &counters{}

	// Bridge table: every guest port jumps to its own whitelist chain.
	guests := &ChainPlan{Chain: &nftables.Chain{Name: "guests", Table: br, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-200)}}
	bt.Chains = append(bt.Chains, guests)
	for _, p := range cfg.Ports {
		c := &ChainPlan{Chain: &nftables.Chain{Name: "port-" + p.Ifname, Table: br}}
		guests.Rules = append(guests.Rules, rule(matchIif(p.Ifname), jump(c.Chain.Name)))
		c.Rules = append(c.Rules, rule(etherSaddr(), neq(p.MAC), bc.drop(p.Dept, ReasonSpoofed)),
			rule(etherType(unix.ETH_P_IP), payloadNet(0, 1), masked([]byte{0x0f}), neq([]byte{5}), bc.drop(p.Dept, ReasonIPOptions)))
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
			rule(bc.drop(p.Dept, ReasonSpoofed)))
		bt.Chains = append(bt.Chains, c)
	}

	buildFabricPorts(cfg, br, bt, guests, bc)

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
	// Interval sets: management prefixes, and each department's segment prefixes.
	mgmt4 := intervalSet(in, "management4", cfg.Management, false)
	mgmt6 := intervalSet(in, "management6", cfg.Management, true)
	it.Sets = append(it.Sets, mgmt4, mgmt6)
	segSets := map[uint32][2]*SetPlan{}
	otherSets := map[uint32][2]*SetPlan{} // every other department's segment prefixes
	for _, d := range cfg.Departments {
		s4 := intervalSet(in, fmt.Sprintf("segments4-%d", d.ID), d.Prefixes, false)
		s6 := intervalSet(in, fmt.Sprintf("segments6-%d", d.ID), d.Prefixes, true)
		segSets[d.ID] = [2]*SetPlan{s4, s6}
		it.Sets = append(it.Sets, s4, s6)
	}
	for _, d := range cfg.Departments {
		var others []netip.Prefix
		for _, o := range cfg.Departments {
			if o.ID != d.ID {
				others = append(others, o.Prefixes...)
			}
		}
		o4 := intervalSet(in, fmt.Sprintf("others4-%d", d.ID), others, false)
		o6 := intervalSet(in, fmt.Sprintf("others6-%d", d.ID), others, true)
		otherSets[d.ID] = [2]*SetPlan{o4, o6}
		it.Sets = append(it.Sets, o4, o6)
	}
	// VIP delivery: (bridge . VIP . protocol . port), and the tenants' explicit exceptions.
	vip4 := &SetPlan{Set: &nftables.Set{Table: in, Name: "vip4", Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)}}
	vip6 := &SetPlan{Set: &nftables.Set{Table: in, Name: "vip6", Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService)}}
	for _, v := range cfg.VIPPorts {
		key := append(ifname(v.Bridge), v.VIP.AsSlice()...)
		key = append(key, v.Proto, 0, 0, 0, byte(v.Port>>8), byte(v.Port), 0, 0)
		if v.VIP.Is4() {
			vip4.Elems = append(vip4.Elems, nftables.SetElement{Key: key})
		} else {
			vip6.Elems = append(vip6.Elems, nftables.SetElement{Key: key})
		}
	}
	allow4 := &SetPlan{Set: &nftables.Set{Table: in, Name: "allow4", Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)}}
	allow6 := &SetPlan{Set: &nftables.Set{Table: in, Name: "allow6", Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService)}}
	for _, a := range cfg.TenantAllow {
		key := append(a.Addr.AsSlice(), a.Proto, 0, 0, 0, byte(a.Port>>8), byte(a.Port), 0, 0)
		if a.Addr.Is4() {
			allow4.Elems = append(allow4.Elems, nftables.SetElement{Key: key})
		} else {
			allow6.Elems = append(allow6.Elems, nftables.SetElement{Key: key})
		}
	}
	it.Sets = append(it.Sets, vip4, vip6, allow4, allow6)

	// prerouting: a tenant's packets and connections carry its department's mark.
	if len(ours.Elems) > 0 {
		pre := &ChainPlan{Chain: &nftables.Chain{Name: "prerouting", Table: in, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle}}
		pre.Rules = append(pre.Rules, rule([]expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: "bridge-mark"},
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true},
		}))
		// Replies to a department's connections arriving from elsewhere are routed in its
		// table too, never by the main table.
		pre.Rules = append(pre.Rules, rule(iifInSet("tenant", true), ctDirection(ctDirReply), []expr.Any{
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
			&expr.Lookup{SourceRegister: 1, SetName: "marks"},
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true},
		}))
		it.Chains = append(it.Chains, pre)
	}

	input := &ChainPlan{Chain: &nftables.Chain{Name: "input", Table: in, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter}}
	// From tenants: replies to the host's own connections (health probes), echo to the own
	// gateway, ND/RS/MLD, explicit exceptions; nothing else.
	input.Rules = append(input.Rules,
		rule(iifInSet("tenant", false), ctDirection(ctDirReply), accept()),
		rule(nfproto(unix.NFPROTO_IPV4), concatIifDaddr(16, 4, "gateway4"), l4proto(unix.IPPROTO_ICMP), payloadTransport(0, 1), eq([]byte{8}), accept()),
		rule(nfproto(unix.NFPROTO_IPV6), concatIifDaddr(24, 16, "gateway6"), l4proto(unix.IPPROTO_ICMPV6), payloadTransport(0, 1), eq([]byte{128}), accept()))
	for _, t := range ndTypes {
		input.Rules = append(input.Rules, rule(iifInSet("tenant", false), l4proto(unix.IPPROTO_ICMPV6), payloadTransport(0, 1), eq([]byte{t}), accept()))
	}
	input.Rules = append(input.Rules,
		rule(iifInSet("tenant", false), nfproto(unix.NFPROTO_IPV4), concatDaddrProtoPort(16, 4, "allow4"), accept()),
		rule(iifInSet("tenant", false), nfproto(unix.NFPROTO_IPV6), concatDaddrProtoPort(24, 16, "allow6"), accept()))
	for _, d := range cfg.Departments {
		input.Rules = append(input.Rules, rule(iifInSet(fmt.Sprintf("dept-%d", d.ID), false), ic.drop(d.ID, ReasonToHost)))
	}
	// From anything else (not a tenant bridge, not loopback): no tunnel packet reaches the
	// stack (the XDP program decapsulates what is legitimate before it), and nothing is
	// addressed to a department's segment.
	for _, p := range []byte{unix.IPPROTO_IPIP, unix.IPPROTO_IPV6, unix.IPPROTO_GRE} {
		input.Rules = append(input.Rules, rule(outside(), l4proto(p), ic.drop(0, ReasonTunnel)))
	}
	for _, d := range cfg.Departments {
		s := segSets[d.ID]
		if len(s[0].Elems) > 0 {
			input.Rules = append(input.Rules, rule(outside(), nfproto(unix.NFPROTO_IPV4), payloadNet(16, 4), lookup(s[0].Set.Name), ic.drop(d.ID, ReasonFromFabric)))
		}
		if len(s[1].Elems) > 0 {
			input.Rules = append(input.Rules, rule(outside(), nfproto(unix.NFPROTO_IPV6), payloadNet(24, 16), lookup(s[1].Set.Name), ic.drop(d.ID, ReasonFromFabric)))
		}
	}
	it.Chains = append(it.Chains, input)

	forward := &ChainPlan{Chain: &nftables.Chain{Name: "forward", Table: in, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter}}
	for _, d := range cfg.Departments {
		set := fmt.Sprintf("dept-%d", d.ID)
		forward.Rules = append(forward.Rules, rule(iifInSet(set, false), oifInSet("tenant", false), oifInSet(set, true), ic.drop(d.ID, ReasonCrossDepartment)))
	}
	forward.Rules = append(forward.Rules,
		rule(iifInSet("tenant", false), nfproto(unix.NFPROTO_IPV4), concatDaddrProtoPort(16, 4, "allow4"), accept()),
		rule(iifInSet("tenant", false), nfproto(unix.NFPROTO_IPV6), concatDaddrProtoPort(24, 16, "allow6"), accept()))
	for _, d := range cfg.Departments {
		set := fmt.Sprintf("dept-%d", d.ID)
		if len(mgmt4.Elems) > 0 {
			forward.Rules = append(forward.Rules, rule(iifInSet(set, false), nfproto(unix.NFPROTO_IPV4), payloadNet(16, 4), lookup("management4"), ic.drop(d.ID, ReasonToManagement)))
		}
		if len(mgmt6.Elems) > 0 {
			forward.Rules = append(forward.Rules, rule(iifInSet(set, false), nfproto(unix.NFPROTO_IPV6), payloadNet(24, 16), lookup("management6"), ic.drop(d.ID, ReasonToManagement)))
		}
		// Toward another department's segments by way of the egress (its own prefixes are
		// routed to its bridges): never deliverable, so dropped and counted here rather than
		// lost unseen further on.
		if o := otherSets[d.ID]; len(o[0].Elems) > 0 {
			forward.Rules = append(forward.Rules, rule(iifInSet(set, false), oifInSet("tenant", true), nfproto(unix.NFPROTO_IPV4), payloadNet(16, 4), lookup(o[0].Set.Name), ic.drop(d.ID, ReasonCrossDepartment)))
		}
		if o := otherSets[d.ID]; len(o[1].Elems) > 0 {
			forward.Rules = append(forward.Rules, rule(iifInSet(set, false), oifInSet("tenant", true), nfproto(unix.NFPROTO_IPV6), payloadNet(24, 16), lookup(o[1].Set.Name), ic.drop(d.ID, ReasonCrossDepartment)))
		}
	}
	// Into tenant bridges from anything else: replies of the department's own connections,
	// VIP delivery to local backends; nothing else.
	for _, d := range cfg.Departments {
		set := fmt.Sprintf("dept-%d", d.ID)
		r := rule(iifInSet("tenant", true), oifInSet(set, false), ctDirection(ctDirReply))
		if d.Mark != 0 {
			r = rule(r, ctMark(d.Mark))
		}
		forward.Rules = append(forward.Rules, rule(r, accept()))
	}
	forward.Rules = append(forward.Rules,
		rule(iifInSet("tenant", true), nfproto(unix.NFPROTO_IPV4), concatOifDaddrProtoPort(16, 4, "vip4"), accept()),
		rule(iifInSet("tenant", true), nfproto(unix.NFPROTO_IPV6), concatOifDaddrProtoPort(24, 16, "vip6"), accept()))
	for _, d := range cfg.Departments {
		forward.Rules = append(forward.Rules, rule(iifInSet("tenant", true), oifInSet(fmt.Sprintf("dept-%d", d.ID), false), ic.drop(d.ID, ReasonFromFabric)))
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
		// The host sends into a tenant bridge only what carries that bridge's department
		// mark (replies, the agent's health probes) and ND/MLD: nothing it could be made to
		// reflect into a department.
		hostOut := &ChainPlan{Chain: &nftables.Chain{Name: "host-output", Table: in, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter}}
		for _, t := range ndTypes {
			hostOut.Rules = append(hostOut.Rules, rule(oifInSet("tenant", false), l4proto(unix.IPPROTO_ICMPV6), payloadTransport(0, 1), eq([]byte{t}), accept()))
		}
		for _, d := range cfg.Departments {
			if d.Mark == 0 {
				continue
			}
			set := fmt.Sprintf("dept-%d", d.ID)
			hostOut.Rules = append(hostOut.Rules, rule(oifInSet(set, false), metaMark(), neq(binaryutil.NativeEndian.PutUint32(d.Mark)), ic.drop(d.ID, ReasonFromHost)))
		}
		it.Chains = append(it.Chains, hostOut)
	}
	buildGuards(cfg, in, it, ic)
	it.Chains = append(it.Chains, &ChainPlan{Chain: &nftables.Chain{Name: "state", Table: in}})
	bt.Counters, it.Counters = bc.names, ic.names
	slices.Sort(bt.Counters)
	slices.Sort(it.Counters)

	p := &Plan{Tables: []*TablePlan{bt, it}}
	h := sha256.New()
	w := bufio.NewWriterSize(h, 64<<10)
	p.render(w)
	w.Flush()
	p.Hash = hex.EncodeToString(h.Sum(nil)[:8])
	st := it.Chains[len(it.Chains)-1]
	st.Rules = append(st.Rules, rule(counter())) // carries the hash as its comment (Apply)
	return p, nil
}

// ndTypes are the ICMPv6 types a tenant and the host exchange on a segment without a
// connection: MLD query/report/done, router solicitation, neighbour solicitation/advert,
// MLDv2 report. Router adverts (134) and redirects (137) from guests are not among them.
var ndTypes = []byte{130, 131, 132, 133, 135, 136, 143}

func validate(cfg Config) error {
	for _, p := range cfg.Ports {
		if len(p.MAC) != 6 {
			return fmt.Errorf("guest port %s: MAC %q is not a 6-byte Ethernet address", p.Ifname, p.MAC)
		}
		if p.Ifname == "" || len(p.Ifname) > 15 {
			return fmt.Errorf("guest port %q: bad interface name", p.Ifname)
		}
	}
	if cfg.GatewayMAC != nil && len(cfg.GatewayMAC) != 6 {
		return fmt.Errorf("gateway MAC %q is not a 6-byte Ethernet address", cfg.GatewayMAC)
	}
	for _, fp := range cfg.FabricPorts {
		if fp.Ifname == "" || len(fp.Ifname) > 15 {
			return fmt.Errorf("fabric port %q: bad interface name", fp.Ifname)
		}
		for _, g := range fp.Guests {
			if len(g.MAC) != 6 {
				return fmt.Errorf("fabric port %s: remote guest MAC %q is not a 6-byte Ethernet address", fp.Ifname, g.MAC)
			}
		}
	}
	for _, v := range cfg.VIPPorts {
		switch {
		case v.Bridge == "" || len(v.Bridge) > 15:
			return fmt.Errorf("VIP %s port %d: bad bridge name %q", v.VIP, v.Port, v.Bridge)
		case !v.VIP.IsValid():
			return fmt.Errorf("VIP port on %s: no VIP address", v.Bridge)
		case v.Proto != unix.IPPROTO_TCP && v.Proto != unix.IPPROTO_UDP:
			return fmt.Errorf("VIP %s port %d: protocol %d is neither TCP nor UDP", v.VIP, v.Port, v.Proto)
		}
	}
	for _, a := range cfg.TenantAllow {
		switch {
		case !a.Addr.IsValid():
			return fmt.Errorf("tenant exception port %d: no address", a.Port)
		case a.Proto != unix.IPPROTO_TCP && a.Proto != unix.IPPROTO_UDP:
			return fmt.Errorf("tenant exception %s port %d: protocol %d is neither TCP nor UDP", a.Addr, a.Port, a.Proto)
		}
	}
	return validateGuards(cfg.Guards)
}

// intervalSet makes an interval set of the IPv4 (or IPv6) prefixes among ps: overlapping and
// adjacent prefixes are merged, each range is a start element and an end element one past it
// (none when the range reaches the last address).
func intervalSet(t *nftables.Table, name string, ps []netip.Prefix, v6 bool) *SetPlan {
	kt := nftables.TypeIPAddr
	if v6 {
		kt = nftables.TypeIP6Addr
	}
	s := &SetPlan{Set: &nftables.Set{Table: t, Name: name, KeyType: kt, Interval: true}}
	type rng struct{ lo, hi netip.Addr }
	var rs []rng
	for _, p := range ps {
		if !p.IsValid() || p.Addr().Is6() != v6 || p.Addr().Is4In6() {
			continue
		}
		p = p.Masked()
		rs = append(rs, rng{p.Addr(), lastAddr(p)})
	}
	slices.SortFunc(rs, func(a, b rng) int { return a.lo.Compare(b.lo) })
	var merged []rng
	for _, r := range rs {
		if n := len(merged); n > 0 {
			last := &merged[n-1]
			if next := last.hi.Next(); !next.IsValid() || r.lo.Compare(next) <= 0 {
				if r.hi.Compare(last.hi) > 0 {
					last.hi = r.hi
				}
				continue
			}
		}
		merged = append(merged, r)
	}
	for _, r := range merged {
		s.Elems = append(s.Elems, nftables.SetElement{Key: r.lo.AsSlice()})
		if end := r.hi.Next(); end.IsValid() {
			s.Elems = append(s.Elems, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return s
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func normalize(cfg Config) Config {
	out := Config{Management: slices.Clone(cfg.Management)}
	for _, d := range cfg.Departments {
		b := slices.Clone(d.Bridges)
		slices.Sort(b)
		ps := slices.Clone(d.Prefixes)
		slices.SortFunc(ps, comparePrefix)
		out.Departments = append(out.Departments, Department{ID: d.ID, Bridges: slices.Compact(b), Mark: d.Mark, Prefixes: slices.Compact(ps)})
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
		out.Ports = append(out.Ports, Port{Ifname: p.Ifname, MAC: p.MAC, Addrs: a, Dept: p.Dept})
	}
	slices.SortFunc(out.Ports, func(a, b Port) int { return strings.Compare(a.Ifname, b.Ifname) })
	slices.SortFunc(out.Management, comparePrefix)
	out.VIPPorts = slices.Clone(cfg.VIPPorts)
	slices.SortFunc(out.VIPPorts, func(a, b VIPPort) int {
		if c := strings.Compare(a.Bridge, b.Bridge); c != 0 {
			return c
		}
		if c := a.VIP.Compare(b.VIP); c != 0 {
			return c
		}
		if c := int(a.Proto) - int(b.Proto); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	out.VIPPorts = slices.Compact(out.VIPPorts)
	out.TenantAllow = slices.Clone(cfg.TenantAllow)
	slices.SortFunc(out.TenantAllow, func(a, b Allow) int {
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c
		}
		if c := int(a.Proto) - int(b.Proto); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	out.TenantAllow = slices.Compact(out.TenantAllow)
	out.GatewayMAC = slices.Clone(cfg.GatewayMAC)
	for _, fp := range cfg.FabricPorts {
		ps := slices.Clone(fp.Prefixes)
		slices.SortFunc(ps, comparePrefix)
		n := FabricPort{Ifname: fp.Ifname, Dept: fp.Dept, Prefixes: slices.Compact(ps)}
		for _, g := range fp.Guests {
			a := slices.Clone(g.Addrs)
			slices.SortFunc(a, func(x, y netip.Addr) int { return x.Compare(y) })
			n.Guests = append(n.Guests, Remote{MAC: slices.Clone(g.MAC), Addrs: slices.Compact(a)})
		}
		slices.SortFunc(n.Guests, func(x, y Remote) int { return bytes.Compare(x.MAC, y.MAC) })
		out.FabricPorts = append(out.FabricPorts, n)
	}
	slices.SortFunc(out.FabricPorts, func(a, b FabricPort) int { return strings.Compare(a.Ifname, b.Ifname) })
	out.Guards = normalizeGuards(cfg.Guards)
	return out
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
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

// outside matches packets that came in neither on a tenant bridge nor on loopback.
func outside() []expr.Any {
	return rule(iifInSet("tenant", true), []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname("lo")}})
}

// lookup matches register 1 against a named set.
func lookup(set string) []expr.Any { return []expr.Any{&expr.Lookup{SourceRegister: 1, SetName: set}} }

// concatDaddrProtoPort looks up (destination address . l4 protocol . destination port): the
// address from register 8, the protocol and the port each padded to a 32-bit register.
func concatDaddrProtoPort(off, n uint32, set string) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 8, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 8 + n/4},
		&expr.Payload{DestRegister: 9 + n/4, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 8, SetName: set},
	}
}

// concatOifDaddrProtoPort looks up (oifname . destination address . l4 protocol . destination
// port): the name in registers 8-11, the rest from register 12 on.
func concatOifDaddrProtoPort(off, n uint32, set string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 8},
		&expr.Payload{DestRegister: 12, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 12 + n/4},
		&expr.Payload{DestRegister: 13 + n/4, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 8, SetName: set},
	}
}

func ctDirection(dir byte) []expr.Any {
	return []expr.Any{&expr.Ct{Key: expr.CtKeyDIRECTION, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{dir}}}
}

func ctMark(m uint32) []expr.Any {
	return []expr.Any{&expr.Ct{Key: expr.CtKeyMARK, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(m)}}
}

func metaMark() []expr.Any { return []expr.Any{&expr.Meta{Key: expr.MetaKeyMARK, Register: 1}} }

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
func accept() []expr.Any      { return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}} }
func jump(c string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: c}}
}

// ctDirReply is IP_CT_DIR_REPLY: the packet goes the way the connection's replies go.
const ctDirReply = 1

// buildFabricPorts adds, for each trunk port into a segment bridge, the check of what may come
// from the fabric (FabricPort): sets of the remote guests' (MAC . address) and MACs, and a
// chain the bridge's prerouting jumps to for frames arriving on the port.
func buildFabricPorts(cfg Config, br *nftables.Table, bt *TablePlan, guests *ChainPlan, bc *counters) {
	etherIP4 := nftables.MustConcatSetType(nftables.TypeEtherAddr, nftables.TypeIPAddr)
	etherIP6 := nftables.MustConcatSetType(nftables.TypeEtherAddr, nftables.TypeIP6Addr)
	mac8 := func(m net.HardwareAddr) []byte { return append(slices.Clone([]byte(m)), 0, 0) } // padded to a register
	ll := netip.MustParseAddr("fe80::").As16()
	llMask := netip.MustParseAddr("ffc0::").As16()
	unspec := netip.IPv6Unspecified().As16()
	// The gateway's sources are the department's prefixes, the same on each of its ports: one
	// pair of sets per distinct list (per department, normally), not per port, which at 4094
	// segments of 30 departments was 4094 sets of ~136 prefixes each.
	fabnets, perDept := map[string][2]string{}, map[uint32]int{}
	fabnetOf := func(fp FabricPort) [2]string {
		key := fmt.Sprint(fp.Dept, fp.Prefixes)
		if n, ok := fabnets[key]; ok {
			return n
		}
		perDept[fp.Dept]++
		suffix := fmt.Sprintf("d%d", fp.Dept)
		if n := perDept[fp.Dept]; n > 1 {
			suffix += fmt.Sprintf("-%d", n)
		}
		n4 := intervalSet(br, "fabnet4-"+suffix, fp.Prefixes, false)
		n6 := intervalSet(br, "fabnet6-"+suffix, fp.Prefixes, true)
		bt.Sets = append(bt.Sets, n4, n6)
		fabnets[key] = [2]string{n4.Set.Name, n6.Set.Name}
		return fabnets[key]
	}
	for _, fp := range cfg.FabricPorts {
		s4 := &SetPlan{Set: &nftables.Set{Table: br, Name: "fab4-" + fp.Ifname, KeyType: etherIP4, Concatenation: true}}
		s6 := &SetPlan{Set: &nftables.Set{Table: br, Name: "fab6-" + fp.Ifname, KeyType: etherIP6, Concatenation: true}}
		sm := &SetPlan{Set: &nftables.Set{Table: br, Name: "fabmac-" + fp.Ifname, KeyType: nftables.TypeEtherAddr}}
		for _, g := range fp.Guests {
			sm.Elems = append(sm.Elems, nftables.SetElement{Key: slices.Clone([]byte(g.MAC))})
			for _, a := range g.Addrs {
				if a.Is4() {
					b := a.As4()
					s4.Elems = append(s4.Elems, nftables.SetElement{Key: append(mac8(g.MAC), b[:]...)})
				} else if a.Is6() {
					b := a.As16()
					s6.Elems = append(s6.Elems, nftables.SetElement{Key: append(mac8(g.MAC), b[:]...)})
				}
			}
		}
		bt.Sets = append(bt.Sets, s4, s6, sm)
		c := &ChainPlan{Chain: &nftables.Chain{Name: "fabric-" + fp.Ifname, Table: br}}
		guests.Rules = append(guests.Rules, rule(matchIif(fp.Ifname), jump(c.Chain.Name)))
		lookup2 := func(off1, n1, off2, n2 uint32, base1 expr.PayloadBase, set string) []expr.Any {
			return []expr.Any{
				&expr.Payload{DestRegister: 8, Base: base1, Offset: off1, Len: n1},
				&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseNetworkHeader, Offset: off2, Len: n2},
				&expr.Lookup{SourceRegister: 8, SetName: set},
			}
		}
		macIn := rule(etherSaddr(), []expr.Any{&expr.Lookup{SourceRegister: 1, SetName: sm.Set.Name}})
		c.Rules = append(c.Rules,
			// A remote guest's IPv4 from its own MAC and address.
			rule(etherType(unix.ETH_P_IP), lookup2(6, 6, 12, 4, expr.PayloadBaseLLHeader, s4.Set.Name), accept()),
			// ARP from a remote guest's MAC, claiming a remote guest's own (MAC, address).
			rule(etherType(unix.ETH_P_ARP), macIn, lookup2(8, 6, 14, 4, expr.PayloadBaseNetworkHeader, s4.Set.Name), accept()),
			rule(etherType(unix.ETH_P_IPV6), lookup2(6, 6, 8, 16, expr.PayloadBaseLLHeader, s6.Set.Name), accept()),
			rule(etherType(unix.ETH_P_IPV6), macIn, payloadNet(8, 16), masked(llMask[:]), eq(ll[:]), accept()),
			rule(etherType(unix.ETH_P_IPV6), macIn, payloadNet(8, 16), eq(unspec[:]), accept()))
		if len(cfg.GatewayMAC) == 6 {
			// IP a peer host's gateway routed to a guest here (it never ARPs across the trunk),
			// from one of the department's guests.
			n := fabnetOf(fp)
			c.Rules = append(c.Rules,
				rule(etherType(unix.ETH_P_IP), etherSaddr(), eq(cfg.GatewayMAC), payloadNet(12, 4), []expr.Any{&expr.Lookup{SourceRegister: 1, SetName: n[0]}}, accept()),
				rule(etherType(unix.ETH_P_IPV6), etherSaddr(), eq(cfg.GatewayMAC), payloadNet(8, 16), []expr.Any{&expr.Lookup{SourceRegister: 1, SetName: n[1]}}, accept()))
		}
		c.Rules = append(c.Rules, rule(bc.drop(fp.Dept, ReasonFromFabric)))
		bt.Chains = append(bt.Chains, c)
	}
}
