package firewall

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

// String renders the plan in an nft-like text, straight from the expressions that Apply
// sends. It is what the hash covers and what unprivileged tests compare.
func (p *Plan) String() string {
	var b strings.Builder
	for _, t := range p.Tables {
		fmt.Fprintf(&b, "table %s %s\n", family(t.Table.Family), t.Table.Name)
		for _, s := range t.Sets {
			var el []string
			for _, e := range s.Elems {
				name := fmt.Sprintf("%q", strings.TrimRight(string(e.Key[:min(16, len(e.Key))]), "\x00"))
				if s.Set.Concatenation && len(e.Key) > 16 {
					a, _ := netip.AddrFromSlice(e.Key[16:])
					name += " . " + a.String()
				}
				if s.Set.KeyType.Name == "mark" {
					name = fmt.Sprint(binaryutil.NativeEndian.Uint32(e.Key))
				}
				if s.Set.IsMap {
					name += fmt.Sprintf(" : %d", binaryutil.NativeEndian.Uint32(e.Val))
				}
				el = append(el, name)
			}
			typ := s.Set.KeyType.Name
			if s.Set.IsMap {
				typ += " : " + s.Set.DataType.Name
			}
			fmt.Fprintf(&b, "  set %s { type %s; elements = { %s } }\n", s.Set.Name, typ, strings.Join(el, ", "))
		}
		for _, c := range t.Chains {
			fmt.Fprintf(&b, "  chain %s", c.Chain.Name)
			if c.Chain.Hooknum != nil {
				fmt.Fprintf(&b, " { hook %s priority %d }", hook(t.Table.Family, *c.Chain.Hooknum), *c.Chain.Priority)
			}
			b.WriteString("\n")
			for _, r := range c.Rules {
				fmt.Fprintf(&b, "    %s\n", renderRule(r))
			}
		}
	}
	return b.String()
}

func family(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyINet:
		return "inet"
	}
	return fmt.Sprintf("family%d", f)
}

func hook(f nftables.TableFamily, h nftables.ChainHook) string {
	switch h {
	case *nftables.ChainHookPrerouting:
		return "prerouting"
	case *nftables.ChainHookInput:
		return "input"
	case *nftables.ChainHookForward:
		return "forward"
	case *nftables.ChainHookOutput:
		return "output"
	}
	return fmt.Sprintf("hook%d", h)
}

// renderRule prints the expressions this package uses; a loaded register is printed when the
// expression that consumes it comes.
func renderRule(r []expr.Any) string {
	var parts []string
	regs := map[uint32]string{}
	for _, e := range r {
		switch x := e.(type) {
		case *expr.Meta:
			if x.SourceRegister {
				parts = append(parts, fmt.Sprintf("meta mark set %s", regs[x.Register]))
				continue
			}
			regs[x.Register] = map[expr.MetaKey]string{expr.MetaKeyIIFNAME: "iifname", expr.MetaKeyOIFNAME: "oifname",
				expr.MetaKeyNFPROTO: "meta nfproto", expr.MetaKeyL4PROTO: "meta l4proto"}[x.Key]
		case *expr.Payload:
			regs[x.DestRegister] = payloadName(x)
		case *expr.Bitwise:
			regs[x.DestRegister] = fmt.Sprintf("%s & %s", regs[x.SourceRegister], value(regs[x.SourceRegister], x.Mask))
		case *expr.Cmp:
			op := "=="
			if x.Op == expr.CmpOpNeq {
				op = "!="
			}
			parts = append(parts, fmt.Sprintf("%s %s %s", regs[x.Register], op, value(regs[x.Register], x.Data)))
		case *expr.Ct:
			if x.SourceRegister {
				parts = append(parts, fmt.Sprintf("ct mark set %s", regs[x.Register]))
			} else {
				regs[x.Register] = "ct mark"
			}
		case *expr.Lookup:
			if x.IsDestRegSet {
				regs[x.DestRegister] = fmt.Sprintf("%s map @%s", regs[x.SourceRegister], x.SetName)
				continue
			}
			op := ""
			if x.Invert {
				op = "!= "
			}
			key := regs[x.SourceRegister]
			if x.SourceRegister == 8 {
				key += " . " + regs[12]
			}
			parts = append(parts, fmt.Sprintf("%s %s@%s", key, op, x.SetName))
		case *expr.Counter:
			parts = append(parts, "counter")
		case *expr.Verdict:
			switch x.Kind {
			case expr.VerdictDrop:
				parts = append(parts, "drop")
			case expr.VerdictAccept:
				parts = append(parts, "accept")
			case expr.VerdictJump:
				parts = append(parts, "jump "+x.Chain)
			}
		default:
			parts = append(parts, fmt.Sprintf("%T", e))
		}
	}
	return strings.Join(parts, " ")
}

func payloadName(p *expr.Payload) string {
	switch p.Base {
	case expr.PayloadBaseLLHeader:
		switch p.Offset {
		case 6:
			return "ether saddr"
		case 12:
			return "ether type"
		}
	case expr.PayloadBaseNetworkHeader:
		switch {
		case p.Offset == 12 && p.Len == 4:
			return "ip saddr"
		case p.Offset == 16 && p.Len == 4:
			return "ip daddr"
		case p.Offset == 8 && p.Len == 6:
			return "arp saddr ether"
		case p.Offset == 14 && p.Len == 4:
			return "arp saddr ip"
		case p.Offset == 8 && p.Len == 16:
			return "ip6 saddr"
		case p.Offset == 24 && p.Len == 16:
			return "ip6 daddr"
		}
	case expr.PayloadBaseTransportHeader:
		if p.Offset == 0 && p.Len == 1 {
			return "icmpv6 type"
		}
	}
	return fmt.Sprintf("payload(%d,%d,%d)", p.Base, p.Offset, p.Len)
}

func value(reg string, b []byte) string {
	switch {
	case strings.HasPrefix(reg, "iifname"), strings.HasPrefix(reg, "oifname"):
		return fmt.Sprintf("%q", strings.TrimRight(string(b), "\x00"))
	case strings.HasPrefix(reg, "ether type"):
		return fmt.Sprintf("0x%02x%02x", b[0], b[1])
	case len(b) == 6:
		return net.HardwareAddr(b).String()
	case len(b) == 4 || len(b) == 16:
		a, _ := netip.AddrFromSlice(b)
		return a.String()
	}
	return fmt.Sprintf("%d", b)
}
