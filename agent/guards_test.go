package agent

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/dataplane/hostnet"
)

// TestHostNetworkGuards: a VM's guard lands on its guest port with numeric protocols and
// ports, and the host network plans it; bad rules are refused naming the VM and value.
func TestHostNetworkGuards(t *testing.T) {
	st := labState()
	src := []netip.Prefix{netip.MustParsePrefix("198.18.20.3/32")}
	st.Guards = []desired.Guard{{VM: "lands-web-1", Policies: []string{"db"}, Rules: []desired.GuardRule{
		{Policy: "db", Sources: src, Protocol: "tcp", Ports: []desired.PortRange{{First: 5432, Last: 5432}}},
		{Policy: "db", Sources: src, Protocol: "icmp"},
		{Policy: "db", Sources: src, Protocol: "any"},
	}}}
	hn, err := hostNetwork(st)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("[{Ifname:%s Rules:[{Sources:[198.18.20.3/32] Proto:6 Ports:[{First:5432 Last:5432}]} {Sources:[198.18.20.3/32] Proto:1 Ports:[]} {Sources:[198.18.20.3/32] Proto:0 Ports:[]}]}]", GuestPort("lands-web-1", "lands-web"))
	if got := fmt.Sprintf("%+v", hn.Guards); got != want {
		t.Errorf("guards\n got %s\nwant %s", got, want)
	}
	p, err := hostnet.PlanFor(hn, hostnet.DefaultRulePriority)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Firewall.Guards) != 1 || p.Firewall.Guards[0].Addrs[0] != netip.MustParseAddr("198.18.20.2") {
		t.Errorf("firewall guards %+v", p.Firewall.Guards)
	}
	for _, bad := range []struct {
		r    desired.GuardRule
		want string
	}{
		{desired.GuardRule{Protocol: "sctp"}, `protocol "sctp"`},
		{desired.GuardRule{Protocol: "tcp", Ports: []desired.PortRange{{First: 0, Last: 80}}}, "port range 0-80"},
		{desired.GuardRule{Protocol: "udp", Ports: []desired.PortRange{{First: 80, Last: 70000}}}, "port range 80-70000"},
	} {
		st.Guards[0].Rules = []desired.GuardRule{bad.r}
		if _, err := hostNetwork(st); err == nil || !strings.Contains(err.Error(), bad.want) || !strings.Contains(err.Error(), `"lands-web-1"`) {
			t.Errorf("%+v: error %v, want one naming the VM and %s", bad.r, err, bad.want)
		}
	}
}
