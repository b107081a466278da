package agent

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/dataplane/firewall"
	"github.com/govcloud/govcloud/dataplane/hostnet"
)

// guards turns the security policies of the VMs on this host into guards on each of their
// guest ports (one per segment the VM is on).
func guards(st *desired.State) ([]hostnet.Guard, error) {
	ifaces := map[string][]desired.Interface{}
	for _, vm := range st.VMs {
		ifaces[vm.Name] = vm.Interfaces
	}
	var out []hostnet.Guard
	for _, g := range st.Guards {
		var rules []firewall.GuardRule
		for i, r := range g.Rules {
			fr := firewall.GuardRule{Sources: r.Sources}
			switch r.Protocol {
			case "", "any":
			case "tcp":
				fr.Proto = unix.IPPROTO_TCP
			case "udp":
				fr.Proto = unix.IPPROTO_UDP
			case "icmp":
				fr.Proto = unix.IPPROTO_ICMP
			default:
				return nil, fmt.Errorf("vm %q: guard rule %d (policy %q): protocol %q is not tcp, udp, icmp or any", g.VM, i, r.Policy, r.Protocol)
			}
			for _, p := range r.Ports {
				if p.First < 1 || p.Last < p.First || p.Last > 65535 {
					return nil, fmt.Errorf("vm %q: guard rule %d (policy %q): port range %d-%d", g.VM, i, r.Policy, p.First, p.Last)
				}
				fr.Ports = append(fr.Ports, firewall.PortRange{First: uint16(p.First), Last: uint16(p.Last)})
			}
			rules = append(rules, fr)
		}
		for _, ifc := range ifaces[g.VM] {
			out = append(out, hostnet.Guard{Ifname: GuestPort(g.VM, ifc.Segment), Rules: rules})
		}
	}
	return out, nil
}
