package firewall

import (
	"fmt"
	"io"
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
	p.render(&b)
	return b.String()
}

// render writes String's text to w piece by piece: the hash of a plan for thousands of
// segments streams through sha256 instead of holding the text (tens of MB) in memory.
func (p *Plan) render(b io.Writer) {
	for _, t := range p.Tables {
		fmt.Fprintf(b, "table %s %s\n", family(t.Table.Family), t.Table.Name)
		for _, c := range t.Counters {
			fmt.Fprintf(b, "  counter %s\n", c)
		}
		for _, s := range t.Sets {
			typ := s.Set.KeyType.Name
			if s.Set.IsMap {
				typ += " : " + s.Set.DataType.Name
			}
			flags := ""
			if s.Set.Interval {
				flags = " flags interval;"
			}
			fmt.Fprintf(b, "  set %s { type %s;%s elements = { ", s.Set.Name, typ, flags)
			first := true
			for i := 0; i < len(s.Elems); i++ {
				e := s.Elems[i]
				name := elemString(s.Set, e.Key)
				if s.Set.Interval {
					// start [end): printed as first-last
					hi := "end"
					if i+1 < len(s.Elems) && s.Elems[i+1].IntervalEnd {
						a, _ := netip.AddrFromSlice(s.Elems[i+1].Key)
						hi = a.Prev().String()
						i++
					}
					name += "-" + hi
				}
				if s.Set.IsMap {
					name += fmt.Sprintf(" : %d", binaryutil.NativeEndian.Uint32(e.Val))
				}
				if first {
					io.WriteString(b, name)
					first = false
				} else {
					io.WriteString(b, ", "+name)
				}
			}
			io.WriteString(b, " } }\n")
		}
		for _, c := range t.Chains {
			fmt.Fprintf(b, "  chain %s", c.Chain.Name)
			if c.Chain.Hooknum != nil {
				fmt.Fprintf(b, " { type %s hook %s priority %d }", c.Chain.Type, hook(t.Table.Family, *c.Chain.Hooknum), *c.Chain.Priority)
			}
			io.WriteString(b, "\n")
			for _, r := range c.Rules {
				fmt.Fprintf(b, "    %s\n", renderRule(r))
			}
		}
	}
}

// elemString prints a set key by its (possibly concatenated) type: each part of a
// concatenation is padded to 4 bytes.
func elemString(s *nftables.Set, key []byte) string {
	types := []nftables.SetDatatype{s.KeyType}
	if s.Concatenation {
		types = nftables.ConcatSetTypeElements(s.KeyType)
	}
	var parts []string
	for _, t := range types {
		n := int(t.Bytes)
		if n > len(key) {
			parts = append(parts, fmt.Sprintf("%x", key))
			break
		}
		v := key[:n]
		switch t.Name {
		case "ifname":
			parts = append(parts, fmt.Sprintf("%q", strings.TrimRight(string(v), "\x00")))
		case "ipv4_addr", "ipv6_addr":
			a, _ := netip.AddrFromSlice(v)
			parts = append(parts, a.String())
		case "inet_proto":
			parts = append(parts, protoName(v[0]))
		case "inet_service":
			parts = append(parts, fmt.Sprint(int(v[0])<<8|int(v[1])))
		case "mark":
			parts = append(parts, fmt.Sprint(binaryutil.NativeEndian.Uint32(v)))
		default:
			parts = append(parts, fmt.Sprintf("%x", v))
		}
		if n%4 != 0 {
			n += 4 - n%4
		}
		key = key[min(n, len(key)):]
	}
	return strings.Join(parts, " . ")
}

func protoName(p byte) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	}
	return fmt.Sprint(p)
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
// expression that consumes it comes. Registers 8 and up (32-bit) hold concatenations, printed
// in the order they were loaded.
func renderRule(r []expr.Any) string {
	var parts []string
	regs := map[uint32]string{}
	var concat []string
	load := func(reg uint32, what string) {
		regs[reg] = what
		if reg >= 8 {
			concat = append(concat, what)
		}
	}
	for _, e := range r {
		switch x := e.(type) {
		case *expr.Meta:
			if x.SourceRegister {
				parts = append(parts, fmt.Sprintf("meta mark set %s", regs[x.Register]))
				continue
			}
			load(x.Register, map[expr.MetaKey]string{expr.MetaKeyIIFNAME: "iifname", expr.MetaKeyOIFNAME: "oifname",
				expr.MetaKeyNFPROTO: "meta nfproto", expr.MetaKeyL4PROTO: "meta l4proto", expr.MetaKeyMARK: "meta mark"}[x.Key])
		case *expr.Payload:
			load(x.DestRegister, payloadName(x))
		case *expr.Bitwise:
			regs[x.DestRegister] = fmt.Sprintf("%s & %s", regs[x.SourceRegister], value(regs[x.SourceRegister], x.Mask))
		case *expr.Cmp:
			op := "=="
			if x.Op == expr.CmpOpNeq {
				op = "!="
			}
			parts = append(parts, fmt.Sprintf("%s %s %s", regs[x.Register], op, value(regs[x.Register], x.Data)))
		case *expr.Ct:
			switch {
			case x.SourceRegister:
				parts = append(parts, fmt.Sprintf("ct mark set %s", regs[x.Register]))
			case x.Key == expr.CtKeyDIRECTION:
				load(x.Register, "ct direction")
			case x.Key == expr.CtKeySTATE:
				load(x.Register, "ct state")
			default:
				load(x.Register, "ct mark")
			}
		case *expr.Lookup:
			key := regs[x.SourceRegister]
			if x.SourceRegister >= 8 {
				key = strings.Join(concat, " . ")
				concat = nil
			}
			if x.IsDestRegSet {
				regs[x.DestRegister] = fmt.Sprintf("%s map @%s", key, x.SetName)
				continue
			}
			op := ""
			if x.Invert {
				op = "!= "
			}
			parts = append(parts, fmt.Sprintf("%s %s@%s", key, op, x.SetName))
		case *expr.Range:
			parts = append(parts, fmt.Sprintf("%s %s-%s", regs[x.Register], value(regs[x.Register], x.FromData), value(regs[x.Register], x.ToData)))
		case *expr.Counter:
			parts = append(parts, "counter")
		case *expr.Objref:
			parts = append(parts, fmt.Sprintf("counter name %q", x.Name))
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
		switch {
		case p.Offset == 0 && p.Len == 1:
			return "icmp type"
		case p.Offset == 2 && p.Len == 2:
			return "th dport"
		}
	}
	return fmt.Sprintf("payload(%d,%d,%d)", p.Base, p.Offset, p.Len)
}

func value(reg string, b []byte) string {
	switch {
	case reg == "meta nfproto" && len(b) == 1:
		return map[byte]string{2: "ipv4", 10: "ipv6"}[b[0]]
	case reg == "meta l4proto" && len(b) == 1:
		if n, ok := map[byte]string{1: "icmp", 4: "ipip", 6: "tcp", 17: "udp", 41: "ipv6", 47: "gre", 58: "ipv6-icmp"}[b[0]]; ok {
			return n
		}
		return fmt.Sprint(b[0])
	case reg == "icmp type" && len(b) == 1:
		return fmt.Sprint(b[0])
	case reg == "th dport" && len(b) == 2:
		return fmt.Sprint(int(b[0])<<8 | int(b[1]))
	case strings.HasPrefix(reg, "ct state"):
		return fmt.Sprintf("0x%x", binaryutil.NativeEndian.Uint32(b))
	case reg == "ct direction" && len(b) == 1:
		return map[byte]string{0: "original", 1: "reply"}[b[0]]
	case strings.HasSuffix(reg, "mark") && len(b) == 4:
		return fmt.Sprint(binaryutil.NativeEndian.Uint32(b))
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
