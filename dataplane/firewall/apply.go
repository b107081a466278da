package firewall

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

const hashPrefix = "govcloud plan "

// Applied returns the hash of the plan the kernel holds, or "" when the tables are missing
// or were changed by hand (the marker is gone).
func Applied(c *nftables.Conn) (string, error) {
	tables, err := c.ListTables()
	if err != nil {
		return "", fmt.Errorf("listing nftables tables: %w", err)
	}
	var haveBridge, haveInet bool
	for _, t := range tables {
		if t.Name != TableName {
			continue
		}
		haveBridge = haveBridge || t.Family == nftables.TableFamilyBridge
		haveInet = haveInet || t.Family == nftables.TableFamilyINet
	}
	if !haveBridge || !haveInet {
		return "", nil
	}
	in := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	rules, err := c.GetRules(in, &nftables.Chain{Name: "state", Table: in})
	if err != nil {
		return "", nil // no state chain: not ours or half-made
	}
	for _, r := range rules {
		if s, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok {
			if h, ok := strings.CutPrefix(s, hashPrefix); ok {
				return h, nil
			}
		}
	}
	return "", nil
}

// Apply makes the kernel hold plan. When it already does (same hash), nothing is sent and
// changed is false. Otherwise both tables are replaced in one transaction, so packets never
// see a half-written rule set.
func Apply(c *nftables.Conn, plan *Plan) (changed bool, err error) {
	h, err := Applied(c)
	if err != nil {
		return false, err
	}
	if h == plan.Hash {
		return false, nil
	}
	tables, err := c.ListTables()
	if err != nil {
		return false, fmt.Errorf("listing nftables tables: %w", err)
	}
	// The drop counters carry on from what the replaced tables counted (a Prometheus counter
	// must not go backwards); what is counted between this read and the flush is lost.
	carried := map[nftables.TableFamily]map[string]Counter{}
	for _, tp := range plan.Tables {
		for _, t := range tables {
			if t.Name == TableName && t.Family == tp.Table.Family {
				cs, err := tableCounters(c, t)
				if err != nil {
					return false, err
				}
				carried[t.Family] = cs
				c.DelTable(tp.Table)
			}
		}
	}
	for _, tp := range plan.Tables {
		c.AddTable(tp.Table)
		for _, name := range tp.Counters {
			v := carried[tp.Table.Family][name]
			c.AddObj(&nftables.NamedObj{Table: tp.Table, Name: name, Type: nftables.ObjTypeCounter,
				Obj: &expr.Counter{Packets: v.Packets, Bytes: v.Bytes}})
		}
		ids := map[string]uint32{}
		for _, s := range tp.Sets {
			set := *s.Set
			id, err := addSet(c, &set, s.Elems)
			if err != nil {
				return false, err
			}
			ids[set.Name] = id
		}
		// Chains first: rules may jump to chains that come later.
		for _, cp := range tp.Chains {
			c.AddChain(cp.Chain)
		}
		for _, cp := range tp.Chains {
			addRules(c, tp, cp, ids, plan.Hash)
		}
	}
	if err := c.Flush(); err != nil {
		return false, fmt.Errorf("applying nftables plan %s: %w", plan.Hash, err)
	}
	return true, nil
}

// A netlink attribute is at most 64 KiB: sets are sent in chunks of setChunk elements.
const setChunk = 512

// addSet queues set with elems and returns the ID rules of the same transaction refer to it by.
func addSet(c *nftables.Conn, set *nftables.Set, elems []nftables.SetElement) (uint32, error) {
	first := elems[:min(setChunk, len(elems))]
	if err := c.AddSet(set, first); err != nil {
		return 0, fmt.Errorf("nftables set %s: %w", set.Name, err)
	}
	if err := addElements(c, set, elems[len(first):]); err != nil {
		return 0, err
	}
	return set.ID, nil
}

// addElements queues elems into set, in chunks.
func addElements(c *nftables.Conn, set *nftables.Set, elems []nftables.SetElement) error {
	for i := 0; i < len(elems); i += setChunk {
		if err := c.SetAddElements(set, elems[i:min(i+setChunk, len(elems))]); err != nil {
			return fmt.Errorf("nftables set %s elements: %w", set.Name, err)
		}
	}
	return nil
}

// addRules queues cp's rules; lookups name sets created in this transaction by the IDs in ids
// (others by name), and the "state" chain's rules carry the plan's hash (Applied reads it).
func addRules(c *nftables.Conn, tp *TablePlan, cp *ChainPlan, ids map[string]uint32, hash string) {
	for _, r := range cp.Rules {
		exprs := make([]expr.Any, len(r))
		for i, e := range r {
			if l, ok := e.(*expr.Lookup); ok {
				cp := *l
				cp.SetID = ids[l.SetName]
				e = &cp
			}
			exprs[i] = e
		}
		nr := &nftables.Rule{Table: tp.Table, Chain: cp.Chain, Exprs: exprs}
		if cp.Chain.Name == "state" {
			nr.UserData = userdata.AppendString(nil, userdata.TypeComment, hashPrefix+hash)
		}
		c.AddRule(nr)
	}
}

// BigBuffers is a google/nftables connection option for large rule sets: a whole plan goes
// to the kernel in one batch, and thousands of segments overflow the default socket buffers.
func BigBuffers() nftables.ConnOption {
	return nftables.WithSockOptions(func(c *netlink.Conn) error {
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			for _, o := range []int{unix.SO_SNDBUFFORCE, unix.SO_RCVBUFFORCE} {
				if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o, 64<<20); e != nil {
					serr = e
				}
			}
		}); err != nil {
			return err
		}
		return serr
	})
}

// Exists reports whether either govcloud table is in the kernel.
func Exists(c *nftables.Conn) (bool, error) {
	tables, err := c.ListTables()
	if err != nil {
		return false, fmt.Errorf("listing nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == TableName && (t.Family == nftables.TableFamilyBridge || t.Family == nftables.TableFamilyINet) {
			return true, nil
		}
	}
	return false, nil
}

// Delete removes both tables (missing ones are fine).
func Delete(c *nftables.Conn) error {
	tables, err := c.ListTables()
	if err != nil {
		return fmt.Errorf("listing nftables tables: %w", err)
	}
	n := 0
	for _, t := range tables {
		if t.Name == TableName && (t.Family == nftables.TableFamilyBridge || t.Family == nftables.TableFamilyINet) {
			c.DelTable(t)
			n++
		}
	}
	if n == 0 {
		return nil
	}
	if err := c.Flush(); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return fmt.Errorf("deleting nftables tables %s: %w", TableName, err)
	}
	return nil
}

// Counter is a named counter's value.
type Counter struct {
	Packets uint64
	Bytes   uint64
}

// Counters reads the named counters of both tables, by name ("drop-<department>-<reason>",
// see ParseCounterName); missing tables give none.
func Counters(c *nftables.Conn) (map[string]Counter, error) {
	tables, err := c.ListTables()
	if err != nil {
		return nil, fmt.Errorf("listing nftables tables: %w", err)
	}
	out := map[string]Counter{}
	for _, t := range tables {
		if t.Name != TableName || (t.Family != nftables.TableFamilyBridge && t.Family != nftables.TableFamilyINet) {
			continue
		}
		cs, err := tableCounters(c, t)
		if err != nil {
			return nil, err
		}
		for n, v := range cs {
			o := out[n]
			out[n] = Counter{Packets: o.Packets + v.Packets, Bytes: o.Bytes + v.Bytes}
		}
	}
	return out, nil
}

func tableCounters(c *nftables.Conn, t *nftables.Table) (map[string]Counter, error) {
	objs, err := c.GetNamedObjects(t)
	if err != nil {
		return nil, fmt.Errorf("reading counters of nftables table %s %s: %w", family(t.Family), t.Name, err)
	}
	out := map[string]Counter{}
	for _, o := range objs {
		no, ok := o.(*nftables.NamedObj)
		if !ok || no.Type != nftables.ObjTypeCounter {
			continue
		}
		if ctr, ok := no.Obj.(*expr.Counter); ok {
			out[no.Name] = Counter{Packets: ctr.Packets, Bytes: ctr.Bytes}
		}
	}
	return out, nil
}

// Update makes the kernel hold plan, knowing that prev (the plan last applied here; nil when
// unknown) may be what it holds. When the kernel holds prev and both plans have the same tables
// and the same definitions for the sets and chains they share, only what differs is sent, in one
// transaction: chains whose rules differ are flushed and rewritten, sets whose elements differ are
// flushed and refilled, and chains, sets and counters are added or removed; counters that stay
// keep counting. One changed segment among thousands then costs a few messages instead of both
// tables (issue 13: 21 s for one gateway with 4094 segments). Otherwise it is Apply.
func Update(c *nftables.Conn, prev, plan *Plan) (changed bool, err error) {
	h, err := Applied(c)
	if err != nil {
		return false, err
	}
	if h == plan.Hash {
		return false, nil
	}
	if prev == nil || h != prev.Hash || !sameShape(prev, plan) {
		return Apply(c, plan) // unknown, changed by hand or by another process, or reshaped
	}
	for i, tp := range plan.Tables {
		op := prev.Tables[i]
		oldChains := map[string]*ChainPlan{}
		for _, cp := range op.Chains {
			oldChains[cp.Chain.Name] = cp
		}
		newChains := map[string]*ChainPlan{}
		for _, cp := range tp.Chains {
			newChains[cp.Chain.Name] = cp
		}
		oldSets := map[string]*SetPlan{}
		for _, s := range op.Sets {
			oldSets[s.Set.Name] = s
		}
		newSets := map[string]*SetPlan{}
		for _, s := range tp.Sets {
			newSets[s.Set.Name] = s
		}
		var rewrite []*ChainPlan // new chains and chains whose rules differ, in plan order
		for _, cp := range tp.Chains {
			if o, ok := oldChains[cp.Chain.Name]; !ok || cp.Chain.Name == "state" || !reflect.DeepEqual(o.Rules, cp.Rules) {
				rewrite = append(rewrite, cp)
			}
		}
		// Rules go first, so that what they referred to can be deleted in the same transaction.
		for _, cp := range op.Chains {
			n, kept := newChains[cp.Chain.Name]
			if !kept || slices.Contains(rewrite, n) {
				c.FlushChain(cp.Chain)
			}
		}
		for _, cp := range op.Chains {
			if _, kept := newChains[cp.Chain.Name]; !kept {
				c.DelChain(cp.Chain)
			}
		}
		for _, s := range op.Sets {
			if _, kept := newSets[s.Set.Name]; !kept {
				c.DelSet(s.Set)
			}
		}
		for _, name := range op.Counters {
			if !slices.Contains(tp.Counters, name) {
				c.DeleteObject(&nftables.NamedObj{Table: tp.Table, Name: name, Type: nftables.ObjTypeCounter})
			}
		}
		for _, name := range tp.Counters {
			if !slices.Contains(op.Counters, name) {
				c.AddObj(&nftables.NamedObj{Table: tp.Table, Name: name, Type: nftables.ObjTypeCounter, Obj: &expr.Counter{}})
			}
		}
		ids := map[string]uint32{}
		for _, s := range tp.Sets {
			o, ok := oldSets[s.Set.Name]
			set := *s.Set
			switch {
			case !ok:
				id, err := addSet(c, &set, s.Elems)
				if err != nil {
					return false, err
				}
				ids[set.Name] = id
			case !reflect.DeepEqual(o.Elems, s.Elems):
				c.FlushSet(&set)
				if err := addElements(c, &set, s.Elems); err != nil {
					return false, err
				}
			}
		}
		for _, cp := range tp.Chains {
			if _, ok := oldChains[cp.Chain.Name]; !ok {
				c.AddChain(cp.Chain)
			}
		}
		for _, cp := range rewrite {
			addRules(c, tp, cp, ids, plan.Hash)
		}
	}
	if err := c.Flush(); err != nil {
		return false, fmt.Errorf("updating nftables plan %s to %s: %w", prev.Hash, plan.Hash, err)
	}
	return true, nil
}

// sameShape reports whether b has a's tables and, for every set and chain both have, the same
// definition (elements and rules aside): what Update can change in place.
func sameShape(a, b *Plan) bool {
	if len(a.Tables) != len(b.Tables) {
		return false
	}
	for i, at := range a.Tables {
		bt := b.Tables[i]
		if *at.Table != *bt.Table {
			return false
		}
		sets := map[string]*nftables.Set{}
		for _, s := range at.Sets {
			sets[s.Set.Name] = s.Set
		}
		for _, s := range bt.Sets {
			if o, ok := sets[s.Set.Name]; ok && !reflect.DeepEqual(setDef(o), setDef(s.Set)) {
				return false
			}
		}
		chains := map[string]*nftables.Chain{}
		for _, cp := range at.Chains {
			chains[cp.Chain.Name] = cp.Chain
		}
		for _, cp := range bt.Chains {
			if o, ok := chains[cp.Chain.Name]; ok && !reflect.DeepEqual(o, cp.Chain) {
				return false
			}
		}
	}
	return true
}

// setDef is a set's definition without the ID a connection gives it.
func setDef(s *nftables.Set) nftables.Set {
	d := *s
	d.ID = 0
	return d
}
