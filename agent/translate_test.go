package agent

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
	"github.com/govcloud/govcloud/dataplane/hostnet"
	"github.com/govcloud/govcloud/dataplane/viproute"
	"github.com/govcloud/govcloud/lb"
)

func labState() *desired.State {
	hc := &desired.HealthCheck{Type: "tcp", IntervalMs: 1000, TimeoutMs: 500, HealthyThreshold: 2, UnhealthyThreshold: 2}
	return &desired.State{
		Host: "h1", Address: netip.MustParseAddr("198.18.0.11"), Uplink: "eth0",
		Hosts:       map[string]netip.Addr{"h1": netip.MustParseAddr("198.18.0.11"), "h2": netip.MustParseAddr("198.18.0.12")},
		Departments: []desired.Department{{Name: "lands", TableID: 1001}, {Name: "health", TableID: 1000}},
		Segments: []desired.Segment{
			{Name: "lands-web", Department: "lands", VLAN: 120, Prefix4: netip.MustParsePrefix("198.18.20.0/24"), Gateway4: netip.MustParseAddr("198.18.20.1"), TableID: 1001},
			{Name: "health-web", Department: "health", VLAN: 130, Prefix4: netip.MustParsePrefix("198.18.30.0/24"), Gateway4: netip.MustParseAddr("198.18.30.1"), TableID: 1000},
		},
		Services: []desired.Service{
			{Name: "lands-www", Department: "lands", VIP: netip.MustParseAddr("198.19.255.2"), Scope: "public", Mode: "dsr", TableID: 1001,
				Ports: []desired.Port{{Port: 80, Protocol: "tcp", TargetPort: 80}}, HealthCheck: hc,
				Backends: []desired.Backend{
					{Address: netip.MustParseAddr("198.18.20.2"), Weight: 1, VM: "lands-web-1", Host: "h1", Segment: "lands-web"},
					{Address: netip.MustParseAddr("198.18.20.4"), Weight: 2, VM: "lands-web-3", Host: "h1", Segment: "lands-web"},
					{Address: netip.MustParseAddr("198.18.20.3"), Weight: 1, VM: "lands-web-2", Host: "h2", Segment: "lands-web"},
				}},
			{Name: "health-api", Department: "health", VIP: netip.MustParseAddr("198.19.0.10"), Scope: "internal", Mode: "dsr", TableID: 1000,
				Ports:    []desired.Port{{Port: 443, Protocol: "tcp"}},
				Backends: []desired.Backend{{Address: netip.MustParseAddr("198.18.30.3"), Weight: 1, VM: "health-web-2", Host: "h2", Segment: "health-web"}}},
		},
		BGP: &desired.BGP{ASN: 65001, Peers: []desired.Peer{{Address: netip.MustParseAddr("198.18.0.1"), ASN: 65000}}},
		VMs: []desired.VM{{Name: "lands-web-1", Department: "lands", Interfaces: []desired.Interface{{Segment: "lands-web", VLAN: 120, MAC: "02:00:00:00:20:02", Prefix4: netip.MustParsePrefix("198.18.20.2/24"), Gateway4: netip.MustParseAddr("198.18.20.1")}}}},
	}
}

func hostAddrOf(st *desired.State) func(string) (netip.Addr, bool) {
	return func(h string) (netip.Addr, bool) {
		a := st.Hosts[h]
		return a, a.IsValid()
	}
}

func TestLoadBalancingAggregatesBackendsPerHost(t *testing.T) {
	st := labState()
	self := netip.MustParseAddr("198.18.0.11")
	p, errs := loadBalancing(st, self, func(hoststatus.BackendKey) bool { return true }, hostAddrOf(st))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if len(p.services) != 1 { // the internal VIP is routed, not load-balanced in XDP
		t.Fatalf("%d LB services, want 1", len(p.services))
	}
	www := p.services[0]
	if www.VIP != (lb.VIP{Domain: 0, Addr: netip.MustParseAddr("198.19.255.2"), Port: 80, Proto: lb.TCP}) {
		t.Fatalf("public VIP key %v", www.VIP)
	}
	// dsr: one tunnel endpoint per host, weights summed (two backends on h1: 1+2).
	want := []lb.Backend{{Addr: netip.MustParseAddr("198.18.0.11"), Weight: 3}, {Addr: netip.MustParseAddr("198.18.0.12"), Weight: 1}}
	if !slices.Equal(www.Backends, want) {
		t.Fatalf("backends %v, want %v", www.Backends, want)
	}
	// Internal service: never advertised.
	apiVIP := netip.MustParseAddr("198.19.0.10")
	if slices.Contains(p.advertise, apiVIP) {
		t.Fatalf("internal VIP advertised: %v", p.advertise)
	}
	if !slices.Contains(p.advertise, www.VIP.Addr) {
		t.Fatal("public VIP with healthy backends not advertised")
	}
	// Local delivery: only this host's backends, on their segment's bridge.
	nh := p.routes[www.VIP.Addr]
	if len(nh) != 2 || nh[0].Dev != "gcbr120" || nh[0].Addr.String() != "198.18.20.2" || nh[1].Addr.String() != "198.18.20.4" {
		t.Fatalf("local next hops %v", nh)
	}
	// Internal: the department's table routes to every backend, on any host.
	if nh := p.routes[apiVIP]; len(nh) != 1 || nh[0] != (viproute.NextHop{Addr: netip.MustParseAddr("198.18.30.3"), Dev: "gcbr130", Table: 1000}) {
		t.Fatalf("internal VIP next hops %v, want the remote backend in table 1000", nh)
	}
	if p.vlanDomain[120] != 1001 || p.vlanDomain[130] != 1000 {
		t.Fatalf("vlan domains %v", p.vlanDomain)
	}
}

func TestLoadBalancingLeavesOutUnhealthyBackends(t *testing.T) {
	st := labState()
	self := netip.MustParseAddr("198.18.0.11")
	down := map[string]bool{"198.18.20.2": true, "198.18.20.4": true} // both of h1's
	p, _ := loadBalancing(st, self, func(k hoststatus.BackendKey) bool { return !down[k.Addr.String()] }, hostAddrOf(st))
	if got := p.services[0].Backends; len(got) != 1 || got[0].Addr.String() != "198.18.0.12" {
		t.Fatalf("with h1's backends down, backends %v, want only h2", got)
	}
	if len(p.routes[netip.MustParseAddr("198.19.255.2")]) != 0 {
		t.Fatal("route to local backends that are down")
	}
	// Everything down: the VIP is no longer advertised.
	p, _ = loadBalancing(st, self, func(hoststatus.BackendKey) bool { return false }, hostAddrOf(st))
	if len(p.advertise) != 0 || len(p.services[0].Backends) != 0 {
		t.Fatalf("all down: advertise %v, backends %v", p.advertise, p.services[0].Backends)
	}
}

func TestHostNetworkEgressAndServedVIPs(t *testing.T) {
	hn, err := hostNetwork(labState())
	if err != nil {
		t.Fatal(err)
	}
	if err := hn.Validate(); err != nil {
		t.Fatal(err)
	}
	// Each department's dsr VIPs, public and internal, are what its backends answer from.
	wantVIPs := map[string]string{"lands": "[198.19.255.2]", "health": "[198.19.0.10]"}
	for _, d := range hn.Departments {
		if d.Egress.String() != "198.18.0.1" || d.Table == 0 {
			t.Fatalf("department %s: egress %s table %d", d.Name, d.Egress, d.Table)
		}
		if got := fmt.Sprint(d.VIPs); got != wantVIPs[d.Name] {
			t.Fatalf("department %s: VIPs %s, want %s", d.Name, got, wantVIPs[d.Name])
		}
	}
	if len(hn.Guests) != 1 {
		t.Fatalf("guests %v", hn.Guests)
	}
	g := hn.Guests[0]
	if g.Ifname != GuestPort("lands-web-1", "lands-web") || g.Addr.String() != "198.18.20.2" || !slices.Contains(g.Serves, netip.MustParseAddr("198.19.255.2")) {
		t.Fatalf("guest %+v", g)
	}
	if len(GuestPort("a-very-long-vm-name-indeed", "a-segment")) > 15 {
		t.Fatal("guest port name longer than an interface name may be")
	}
}

func TestAdvertsCarryDepartmentCommunities(t *testing.T) {
	st := labState()
	self := netip.MustParseAddr("198.18.0.11")
	p, _ := loadBalancing(st, self, func(hoststatus.BackendKey) bool { return true }, hostAddrOf(st))
	ads := adverts(st, p, true)
	if len(ads) != 1 || ads[0].Prefix.String() != "198.19.255.2/32" {
		t.Fatalf("adverts %+v", ads)
	}
	if c := ads[0].Communities[0]; c.ASN != 65000 || c.Value != 1001 {
		t.Fatalf("community %v, want 65000:1001 (fabric AS : department table)", c)
	}
	if lc := ads[0].LargeCommunities[0]; lc.Global != 65001 || lc.Local2 != 1001 {
		t.Fatalf("large community %v", lc)
	}
	if len(adverts(st, p, false)) != 0 {
		t.Fatal("advertising while the load balancer is not attached")
	}
	// A 4-byte fabric ASN fits no standard community: the large one alone, never a truncation.
	st.BGP.Peers[0].ASN = 4200000000
	ads = adverts(st, p, true)
	if len(ads) != 1 || len(ads[0].Communities) != 0 || ads[0].LargeCommunities[0].Local2 != 1001 {
		t.Fatalf("4-byte fabric ASN: adverts %+v", ads)
	}
}

// The host network gets every host's fabric address as management, and VIP delivery for the
// dsr services with a backend here: one row per (segment, VIP, protocol, port), none for
// backends on other hosts.
func TestHostNetworkIsolationInputs(t *testing.T) {
	st := labState()
	hn, err := hostNetwork(st)
	if err != nil {
		t.Fatal(err)
	}
	wantMgmt := []netip.Prefix{netip.MustParsePrefix("198.18.0.11/32"), netip.MustParsePrefix("198.18.0.12/32")}
	if !slices.Equal(hn.Management, wantMgmt) {
		t.Errorf("management %v, want %v", hn.Management, wantMgmt)
	}
	wantVIP := []hostnet.VIPPort{{Segment: "lands-web", VIP: netip.MustParseAddr("198.19.255.2"), Proto: 6, Port: 80}}
	if !slices.Equal(hn.VIPPorts, wantVIP) {
		t.Errorf("VIP ports %v, want %v", hn.VIPPorts, wantVIP)
	}
	st.Host = "h2"
	hn, _ = hostNetwork(st)
	wantVIP = []hostnet.VIPPort{
		{Segment: "lands-web", VIP: netip.MustParseAddr("198.19.255.2"), Proto: 6, Port: 80},
		{Segment: "health-web", VIP: netip.MustParseAddr("198.19.0.10"), Proto: 6, Port: 443},
	}
	if !slices.Equal(hn.VIPPorts, wantVIP) {
		t.Errorf("h2 VIP ports %v, want %v", hn.VIPPorts, wantVIP)
	}
}

func TestParseTenantAllow(t *testing.T) {
	for _, c := range []struct {
		in   string
		want hostnet.TenantAllow
		err  bool
	}{
		{in: "udp:192.0.2.53:53", want: hostnet.TenantAllow{Proto: 17, Addr: netip.MustParseAddr("192.0.2.53"), Port: 53}},
		{in: "TCP:[2001:db8::53]:53", want: hostnet.TenantAllow{Proto: 6, Addr: netip.MustParseAddr("2001:db8::53"), Port: 53}},
		{in: "icmp:192.0.2.53:0", err: true},
		{in: "udp:192.0.2.53", err: true},
		{in: "udp:192.0.2.53:0", err: true},
		{in: "udp:2001:db8::53:53", err: true},
		{in: "192.0.2.53", err: true},
		{in: "udp:0.0.0.0:53", err: true},
		{in: "tcp:[::]:53", err: true},
		{in: "udp:[::ffff:0.0.0.0]:53", err: true},
		{in: "udp:[fe80::53%eth0]:53", err: true},
		{in: "udp:[::ffff:192.0.2.53]:53", want: hostnet.TenantAllow{Proto: 17, Addr: netip.MustParseAddr("192.0.2.53"), Port: 53}},
	} {
		got, err := ParseTenantAllow(c.in)
		if (err != nil) != c.err || (!c.err && got != c.want) {
			t.Errorf("ParseTenantAllow(%q) = %+v, %v", c.in, got, err)
		}
	}
	for _, c := range []struct{ in, want, err string }{
		{in: "198.51.100.1", want: "198.51.100.1/32"},
		{in: "198.51.100.7/24", want: "198.51.100.0/24"},
		{in: "2001:db8::1", want: "2001:db8::1/128"},
		{in: "::ffff:198.51.100.1", want: "198.51.100.1/32"},
		{in: "::ffff:198.51.100.0/120", want: "198.51.100.0/24"},
		{in: "198.51.100.0/1", want: "128.0.0.0/1"},
		{in: "not-an-address", err: `management address "not-an-address"`},
		{in: "198.51.100.0/33", err: `management prefix "198.51.100.0/33"`},
		{in: "0.0.0.0/0", err: "a length of 0 would cut every department off"},
		{in: "::/0", err: "a length of 0"},
		{in: "::ffff:0.0.0.0/96", err: "a length of 0"},
		{in: "::ffff:198.51.100.0/64", err: "needs a length of 96 or more"},
		{in: "0.0.0.0", err: "0.0.0.0 is no address"},
		{in: "::", err: ":: is no address"},
		{in: "fe80::1%eth0", err: "zone (%eth0)"},
	} {
		got, err := ParseManagement(c.in)
		switch {
		case c.err == "" && (err != nil || got.String() != c.want):
			t.Errorf("ParseManagement(%q) = %v, %v; want %s", c.in, got, err, c.want)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("ParseManagement(%q) = %v, %v; want an error with %q", c.in, got, err, c.err)
		}
	}
}

// Health probes of backends in their department's segments carry the department's table as
// SO_MARK (the main table has no segment routes); others carry none.
func TestProbeTargetsMarkTheDepartment(t *testing.T) {
	st := labState()
	st.Services = append(st.Services, desired.Service{Name: "outside", Department: "lands", VIP: netip.MustParseAddr("198.19.255.9"), Mode: "nat",
		Ports: []desired.Port{{Port: 80, Protocol: "tcp"}}, HealthCheck: st.Services[0].HealthCheck,
		Backends: []desired.Backend{{Address: netip.MustParseAddr("203.0.113.5"), Weight: 1}, {Address: netip.MustParseAddr("198.18.20.9"), Weight: 1}}})
	got := map[string]int{}
	for _, p := range probeTargets(st) {
		got[p.key.Service+"/"+p.key.Addr.String()] = p.mark
	}
	want := map[string]int{"lands-www/198.18.20.2": 1001, "lands-www/198.18.20.4": 1001, "outside/203.0.113.5": 0, "outside/198.18.20.9": 1001}
	if !maps.Equal(got, want) {
		t.Errorf("probe marks %v, want %v", got, want)
	}
}

// TestGuestsIPv6AllowedOut: a local guest's IPv6 address reaches the host network's guest and
// the anti-spoofing port of its plan (issue 17: only the IPv4 one did, so the guest's IPv6
// source was dropped), for a dual-stack NIC, an IPv4-only NIC and a second NIC of another
// dual-stack segment.
func TestGuestsIPv6AllowedOut(t *testing.T) {
	a, p := netip.MustParseAddr, netip.MustParsePrefix
	st := labState()
	st.Segments[0].Prefix6, st.Segments[0].Gateway6 = p("2001:db8:20::/64"), a("2001:db8:20::1")
	st.Segments = append(st.Segments, desired.Segment{Name: "lands-app", Department: "lands", VLAN: 121,
		Prefix4: p("198.18.21.0/24"), Gateway4: a("198.18.21.1"), Prefix6: p("2001:db8:21::/120"), Gateway6: a("2001:db8:21::1"), TableID: 1001})
	st.VMs = []desired.VM{
		{Name: "dual", Department: "lands", Interfaces: []desired.Interface{
			{Segment: "lands-web", VLAN: 120, MAC: "02:00:00:00:20:02", Prefix4: p("198.18.20.2/24"), Gateway4: a("198.18.20.1"), Prefix6: p("2001:db8:20::2/64"), Gateway6: a("2001:db8:20::1")},
			{Segment: "lands-app", VLAN: 121, MAC: "02:00:00:00:21:02", Prefix4: p("198.18.21.2/24"), Gateway4: a("198.18.21.1"), Prefix6: p("2001:db8:21::2/120"), Gateway6: a("2001:db8:21::1")}}},
		{Name: "four", Department: "lands", Interfaces: []desired.Interface{
			{Segment: "lands-web", VLAN: 120, MAC: "02:00:00:00:20:03", Prefix4: p("198.18.20.3/24"), Gateway4: a("198.18.20.1")}}},
	}
	hn, err := hostNetwork(st)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := hostnet.PlanFor(hn, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		vm, segment string
		addr6       string // "" when the NIC has none
		allowed     []string
	}{
		{"dual", "lands-web", "2001:db8:20::2", []string{"198.18.20.2", "2001:db8:20::2"}},
		{"dual", "lands-app", "2001:db8:21::2", []string{"198.18.21.2", "2001:db8:21::2"}},
		{"four", "lands-web", "", []string{"198.18.20.3"}},
	} {
		port := GuestPort(c.vm, c.segment)
		var g *hostnet.Guest
		for i := range hn.Guests {
			if hn.Guests[i].Ifname == port {
				g = &hn.Guests[i]
			}
		}
		if g == nil {
			t.Fatalf("%s on %s: no host network guest", c.vm, c.segment)
		}
		if got := g.Addr6; (c.addr6 == "" && got.IsValid()) || (c.addr6 != "" && got.String() != c.addr6) {
			t.Errorf("%s on %s: guest Addr6 %v, want %q", c.vm, c.segment, got, c.addr6)
		}
		var allowed []string
		for _, fp := range plan.Firewall.Ports {
			if fp.Ifname == port {
				for _, x := range fp.Addrs {
					allowed = append(allowed, x.String())
				}
			}
		}
		for _, w := range c.allowed {
			if !slices.Contains(allowed, w) {
				t.Errorf("%s on %s: anti-spoofing allows %v, want %s among them", c.vm, c.segment, allowed, w)
			}
		}
	}
}

// Internal VIPs (issue 17 §2) are routed in their department's table to every healthy
// backend of weight > 0 on any host; public ones in the main table to local backends only;
// an internal service that cannot be routed so is an error naming it, never a route in main.
func TestInternalVIPRoutes(t *testing.T) {
	internalVIP, publicVIP := netip.MustParseAddr("198.19.0.10"), netip.MustParseAddr("198.19.255.2")
	nh := func(addr, dev string, table int) viproute.NextHop {
		return viproute.NextHop{Addr: netip.MustParseAddr(addr), Dev: dev, Table: table}
	}
	for _, tc := range []struct {
		name    string
		edit    func(*desired.State)
		down    string // a backend address reported down
		want    map[netip.Addr][]viproute.NextHop
		wantErr bool
	}{
		{name: "remote backend only", want: map[netip.Addr][]viproute.NextHop{
			internalVIP: {nh("198.18.30.3", "gcbr130", 1000)},
			publicVIP:   {nh("198.18.20.2", "gcbr120", 0), nh("198.18.20.4", "gcbr120", 0)}}},
		{name: "local and remote backends, two segments", edit: func(st *desired.State) {
			st.Segments = append(st.Segments, desired.Segment{Name: "health-db", Department: "health", VLAN: 131, TableID: 1000})
			st.Services[1].Backends = append(st.Services[1].Backends, desired.Backend{Address: netip.MustParseAddr("198.18.31.2"), Weight: 1, Host: "h1", Segment: "health-db"})
		}, want: map[netip.Addr][]viproute.NextHop{
			internalVIP: {nh("198.18.30.3", "gcbr130", 1000), nh("198.18.31.2", "gcbr131", 1000)},
			publicVIP:   {nh("198.18.20.2", "gcbr120", 0), nh("198.18.20.4", "gcbr120", 0)}}},
		{name: "backend down", down: "198.18.30.3", want: map[netip.Addr][]viproute.NextHop{
			publicVIP: {nh("198.18.20.2", "gcbr120", 0), nh("198.18.20.4", "gcbr120", 0)}}},
		{name: "backend drained (weight 0)", edit: func(st *desired.State) { st.Services[1].Backends[0].Weight = 0 },
			want: map[netip.Addr][]viproute.NextHop{publicVIP: {nh("198.18.20.2", "gcbr120", 0), nh("198.18.20.4", "gcbr120", 0)}}},
		{name: "internal nat refused", edit: func(st *desired.State) { st.Services[1].Mode = "nat" }, wantErr: true,
			want: map[netip.Addr][]viproute.NextHop{publicVIP: {nh("198.18.20.2", "gcbr120", 0), nh("198.18.20.4", "gcbr120", 0)}}},
		{name: "internal without a department table refused", edit: func(st *desired.State) { st.Services[1].TableID = 0 }, wantErr: true,
			want: map[netip.Addr][]viproute.NextHop{publicVIP: {nh("198.18.20.2", "gcbr120", 0), nh("198.18.20.4", "gcbr120", 0)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := labState()
			if tc.edit != nil {
				tc.edit(st)
			}
			p, errs := loadBalancing(st, st.Address, func(k hoststatus.BackendKey) bool { return k.Addr.String() != tc.down }, hostAddrOf(st))
			if (len(errs) > 0) != tc.wantErr {
				t.Fatalf("errors %v, want error %v", errs, tc.wantErr)
			}
			if tc.wantErr && !strings.Contains(errors.Join(errs...).Error(), `service "health-api"`) {
				t.Fatalf("error %v does not name the service", errs)
			}
			if !maps.EqualFunc(p.routes, tc.want, slices.Equal) {
				t.Fatalf("routes %v, want %v", p.routes, tc.want)
			}
			if slices.Contains(p.advertise, internalVIP) {
				t.Fatal("internal VIP advertised")
			}
		})
	}
}
