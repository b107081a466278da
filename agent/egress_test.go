package agent

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/govcloud/govcloud/controlplane/hoststatus"
	"github.com/govcloud/govcloud/dataplane/hostnet"
)

// TestEgressAndFloatingIPs: a department's egress address on this host becomes its SNAT
// address, a local VM's floating IP maps to its first IPv4 address, and both are announced as
// /32s with the department's communities, whether or not the load balancer is attached.
func TestEgressAndFloatingIPs(t *testing.T) {
	st := labState()
	st.Departments[0].Egress = netip.MustParseAddr("198.19.254.1") // lands
	st.Departments[1].Egress = netip.MustParseAddr("198.19.254.2") // health
	st.VMs[0].FloatingIP = netip.MustParseAddr("198.19.254.9")     // lands-web-1
	hn, err := hostNetwork(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := hn.Validate(); err != nil {
		t.Fatal(err)
	}
	if hn.Departments[0].SNAT != st.Departments[0].Egress || hn.Departments[1].SNAT != st.Departments[1].Egress {
		t.Errorf("departments %+v", hn.Departments)
	}
	want := []hostnet.FloatingIP{{Department: "lands", Public: netip.MustParseAddr("198.19.254.9"), Private: netip.MustParseAddr("198.18.20.2")}}
	if !slices.Equal(hn.FloatingIPs, want) {
		t.Errorf("floating IPs %v, want %v", hn.FloatingIPs, want)
	}
	p, _ := loadBalancing(st, st.Address, func(hoststatus.BackendKey) bool { return true }, hostAddrOf(st))
	for _, tc := range []struct {
		attached bool
		want     []string
	}{
		{true, []string{"198.19.255.2/32", "198.19.254.1/32", "198.19.254.2/32", "198.19.254.9/32"}},
		{false, []string{"198.19.254.1/32", "198.19.254.2/32", "198.19.254.9/32"}},
	} {
		var got []string
		comm := map[string]uint16{}
		for _, a := range adverts(st, p, tc.attached) {
			got = append(got, a.Prefix.String())
			comm[a.Prefix.String()] = a.Communities[0].Value
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("attached %v: adverts %v, want %v", tc.attached, got, tc.want)
		}
		if comm["198.19.254.2/32"] != 1000 || comm["198.19.254.9/32"] != 1001 {
			t.Errorf("attached %v: communities %v, want the department tables", tc.attached, comm)
		}
	}
	// A VM with a floating IP but no IPv4 address maps nothing.
	st.VMs[0].Interfaces[0].Prefix4 = netip.Prefix{}
	if hn, err := hostNetwork(st); err != nil || len(hn.FloatingIPs) != 0 {
		t.Errorf("no IPv4 address: floating IPs %v (%v)", hn.FloatingIPs, err)
	}
}
