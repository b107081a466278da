package agent

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/govcloud/govcloud/dataplane/lbmap"
	"github.com/govcloud/govcloud/lb"
)

// The decapsulation policy of each lab host: tunnels only from the other hosts, only to the
// ports of dsr VIPs with a backend here, in the VIP's domain.
func TestDecapPolicy(t *testing.T) {
	st := labState()
	st.Hosts["h3"] = netip.MustParseAddr("2001:db8::13")
	st.Services = append(st.Services,
		st.Services[0], // a nat service with a backend here: never tunnelled to
	)
	st.Services[2].Name, st.Services[2].Mode, st.Services[2].VIP = "lands-nat", "nat", netip.MustParseAddr("198.19.255.3")
	vip := func(dom uint32, a string, port uint16, dept uint32) lbmap.LocalVIP {
		return lbmap.LocalVIP{VIP: lb.VIP{Domain: dom, Addr: netip.MustParseAddr(a), Port: port, Proto: lb.TCP}, Department: dept}
	}
	for _, tc := range []struct {
		host, self string
		srcs       string
		vips       []lbmap.LocalVIP
	}{
		{"h1", "198.18.0.11", "[198.18.0.12 2001:db8::13]", []lbmap.LocalVIP{vip(0, "198.19.255.2", 80, 1001)}},
		// health-api (internal, backend here) is routed, not decapsulated: not listed.
		{"h2", "198.18.0.12", "[198.18.0.11 2001:db8::13]", []lbmap.LocalVIP{vip(0, "198.19.255.2", 80, 1001)}},
		{"h3", "2001:db8::13", "[198.18.0.11 198.18.0.12]", nil},
	} {
		st.Host, st.Address = tc.host, netip.MustParseAddr(tc.self)
		srcs, vips, errs := decapPolicy(st, netip.MustParseAddr(tc.self))
		if len(errs) > 0 {
			t.Fatalf("%s: %v", tc.host, errs)
		}
		if fmt.Sprint(srcs) != tc.srcs {
			t.Errorf("%s: tunnel sources %v, want %s", tc.host, srcs, tc.srcs)
		}
		if fmt.Sprint(vips) != fmt.Sprint(tc.vips) {
			t.Errorf("%s: local VIPs %v, want %v", tc.host, vips, tc.vips)
		}
	}
	st.Hosts["bad"] = netip.Addr{} // no address
	if _, _, errs := decapPolicy(st, netip.Addr{}); len(errs) != 1 || !strings.Contains(errs[0].Error(), `host "bad"`) {
		t.Fatalf("errors %v, want one naming host \"bad\"", errs)
	}
}
