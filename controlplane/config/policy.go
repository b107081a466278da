package config

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// SecurityPolicySpec restricts traffic between a department's own tiers (Neutron's security
// groups, Kubernetes' NetworkPolicy): the department's VMs whose labels include all of
// Selector are selected, and what the department's segments send to a selected VM's own
// addresses passes only when one of Allow (of any policy selecting it) allows it; replies and
// related packets of an allowed connection always pass. A VM no policy selects takes anything
// from its department, as before. Traffic from outside the department's segments is not the
// policy's: the host firewall already lets in only replies and the ports a Service publishes
// (VIP delivery, dsr or nat, is the department's decision to publish, so it is not filtered
// again). Policies filter what comes in to a selected VM, never what it sends.
type SecurityPolicySpec struct {
	Department string            `yaml:"department" json:"department"`
	Selector   map[string]string `yaml:"selector" json:"selector"`
	Allow      []PolicyRule      `yaml:"allow" json:"allow,omitempty"`
}

// PolicyRule allows Protocol to Ports from From.
type PolicyRule struct {
	// From lists where the traffic may come from; empty: anywhere in the department.
	From []PolicyPeer `yaml:"from" json:"from,omitempty"`
	// Protocol is tcp, udp, icmp (ICMP and ICMPv6) or any (the default).
	Protocol string `yaml:"protocol" json:"protocol,omitempty"`
	// Ports are destination ports (tcp or udp only); empty: every port.
	Ports []PolicyPort `yaml:"ports" json:"ports,omitempty"`
}

// PolicyPeer is one source: exactly one of a segment of the department (its prefixes), a
// CIDR, or the department's VMs whose labels include all of VMLabels (their addresses, as
// the controller knows them at the time).
type PolicyPeer struct {
	Segment  string            `yaml:"segment" json:"segment,omitempty"`
	CIDR     string            `yaml:"cidr" json:"cidr,omitempty"`
	VMLabels map[string]string `yaml:"vmLabels" json:"vmLabels,omitempty"`
}

// PolicyPort is the destination port Port, or the range Port-EndPort when EndPort is set.
type PolicyPort struct {
	Port    int `yaml:"port" json:"port"`
	EndPort int `yaml:"endPort" json:"endPort,omitempty"`
}

func (*SecurityPolicySpec) kind() string { return KindSecurityPolicy }

// PolicyProtocols are the values of PolicyRule.Protocol ("" is any).
var PolicyProtocols = []string{"tcp", "udp", "icmp", "any"}

// Selects reports whether labels include every label of selector (an empty selector selects
// nothing: validation refuses it).
func Selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if w, ok := labels[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// ProtocolName is the rule's protocol, "any" when omitted.
func (r PolicyRule) ProtocolName() string {
	if r.Protocol == "" {
		return "any"
	}
	return r.Protocol
}

func (c *objectCheck) securityPolicy(s *SecurityPolicySpec) {
	c.need("spec.department", s.Department)
	if len(s.Selector) == 0 {
		c.bad("spec.selector", "", "required: the labels of the VMs the policy guards (an empty selector would guard every VM of the department; a policy selecting no VM does nothing)")
	}
	c.labels("spec.selector", s.Selector)
	for i, r := range s.Allow {
		f := fmt.Sprintf("spec.allow[%d]", i)
		proto := r.ProtocolName()
		if !slices.Contains(PolicyProtocols, proto) {
			c.bad(f+".protocol", r.Protocol, "want one of %s", strings.Join(PolicyProtocols, ", "))
		}
		if len(r.Ports) > 0 && proto != "tcp" && proto != "udp" {
			c.bad(f+".ports", "", "ports need protocol tcp or udp, not %s", proto)
		}
		for j, p := range r.Ports {
			pf := fmt.Sprintf("%s.ports[%d]", f, j)
			if p.Port < 1 || p.Port > 65535 {
				c.bad(pf+".port", strconv.Itoa(p.Port), "must be from 1 to 65535")
			}
			if p.EndPort != 0 && (p.EndPort < p.Port || p.EndPort > 65535) {
				c.bad(pf+".endPort", strconv.Itoa(p.EndPort), "must be from port (%d) to 65535", p.Port)
			}
		}
		for j, from := range r.From {
			ff := fmt.Sprintf("%s.from[%d]", f, j)
			n := 0
			for _, set := range []bool{from.Segment != "", from.CIDR != "", from.VMLabels != nil} {
				if set {
					n++
				}
			}
			if n != 1 {
				c.bad(ff, "", "give exactly one of segment, cidr or vmLabels")
				continue
			}
			switch {
			case from.CIDR != "":
				p, err := netip.ParsePrefix(from.CIDR)
				switch {
				case err != nil || p.Addr().Zone() != "" || p.Addr().Is4In6():
					c.bad(ff+".cidr", from.CIDR, "not a CIDR prefix (e.g. 198.18.20.0/24 or 2001:db8::/64)")
				case p.Masked() != p:
					c.bad(ff+".cidr", from.CIDR, "host bits set (did you mean %s?)", p.Masked())
				}
			case from.VMLabels != nil && len(from.VMLabels) == 0:
				c.bad(ff+".vmLabels", "", "at least one label (an empty one would match every VM: leave out from instead)")
			}
			c.labels(ff+".vmLabels", from.VMLabels)
		}
	}
}

// labels refuses empty label keys.
func (c *objectCheck) labels(field string, m map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if strings.TrimSpace(k) == "" {
			c.bad(field, k, "empty label key")
		}
	}
}

// securityPolicies: department and segment references; a source segment is the department's.
func (c *stateCheck) securityPolicies() {
	for _, o := range c.st.List(KindSecurityPolicy) {
		s := o.Spec.(*SecurityPolicySpec)
		c.refDept(o, s.Department)
		for i, r := range s.Allow {
			for j, from := range r.From {
				if from.Segment == "" {
					continue
				}
				f := fmt.Sprintf("spec.allow[%d].from[%d].segment", i, j)
				seg := c.st.Get(KindSegment, from.Segment)
				switch {
				case seg == nil:
					c.add(o, f, from.Segment, "unknown segment")
				case seg.Spec.(*SegmentSpec).Department != s.Department:
					c.addCaused(o, seg, "spec.department", f, from.Segment, "segment belongs to department %q, not %q (departments never reach each other)", seg.Spec.(*SegmentSpec).Department, s.Department)
				}
			}
		}
	}
}
