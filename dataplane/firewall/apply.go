package firewall

import (
	"errors"
	"fmt"
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
			// A netlink attribute is at most 64 KiB: send big sets in chunks.
			const chunk = 512
			set := *s.Set
			first := s.Elems[:min(chunk, len(s.Elems))]
			if err := c.AddSet(&set, first); err != nil {
				return false, fmt.Errorf("nftables set %s: %w", set.Name, err)
			}
			for i := len(first); i < len(s.Elems); i += chunk {
				if err := c.SetAddElements(&set, s.Elems[i:min(i+chunk, len(s.Elems))]); err != nil {
					return false, fmt.Errorf("nftables set %s elements: %w", set.Name, err)
				}
			}
			ids[set.Name] = set.ID
		}
		// Chains first: rules may jump to chains that come later.
		for _, cp := range tp.Chains {
			c.AddChain(cp.Chain)
		}
		for _, cp := range tp.Chains {
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
					nr.UserData = userdata.AppendString(nil, userdata.TypeComment, hashPrefix+plan.Hash)
				}
				c.AddRule(nr)
			}
		}
	}
	if err := c.Flush(); err != nil {
		return false, fmt.Errorf("applying nftables plan %s: %w", plan.Hash, err)
	}
	return true, nil
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
