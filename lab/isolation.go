package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/lab/isofuzz"
)

// FuzzSeed drives the isolation fuzz's frames (issue 20); the same seed sends the same frames.
const FuzzSeed = 20

// The port on the ToR's L2 the fuzz sends from: a veth pair in gc-tor, one end in the fabric
// bridge, made for the step and removed after it (and with gc-tor by 'lab down').
const (
	fuzzPort   = "gcfz0" // in the bridge
	fuzzSender = "gcfz1" // the sending end
	fuzzMAC    = "02:67:63:7a:00:01"
	fuzzAddr   = "198.18.0.250" // on the fabric's /24, held by no one
)

// dropRule is a counter the fuzz expects to move: the drops of govcloud_department_drops_total
// with reason (any reason if "") summed over both hosts, while the frames of a position kind
// were sent.
type dropRule struct {
	kind   isofuzz.PositionKind
	reason string
	// must selects the position's frames that must be dropped and counted (given the lab's
	// topology and what the capture saw): the counter must move by at least their wire frames
	// (by 1 when nil).
	must func(t *isofuzz.Topology, v *isofuzz.Verdict, f *isofuzz.Frame) bool
	why  string
}

// dropRules: what must be dropped must be counted (issue 20 finding 4). Add a row per reason
// as the dataplane names them.
var dropRules = []dropRule{
	{isofuzz.AtGuest, "", func(_ *isofuzz.Topology, _ *isofuzz.Verdict, f *isofuzz.Frame) bool {
		return slices.Contains([]string{"spoof", "vlan", "qinq"}, f.Class)
	},
		"a guest's frames from a source address or MAC not its own, or tagged, are dropped at its port and counted (finding 4)"},
	{isofuzz.AtFabric, "", func(_ *isofuzz.Topology, _ *isofuzz.Verdict, f *isofuzz.Frame) bool { return f.Tenant == "?" },
		"frames from the fabric with a VLAN no department owns or a tag stack are dropped and counted"},
	{isofuzz.AtOutside, "lb_fragment", nil, "fragments to a VIP are dropped and counted by the load balancer"},
	// By reason (at least one each): every class of drop the fuzz provokes is named.
	{isofuzz.AtGuest, "spoofed", nil, "a guest's spoofed frames are counted as spoofed at its port"},
	{isofuzz.AtGuest, "to_management", nil, "a guest's frames to any host's fabric address, the ToR or the controller are counted (finding 3)"},
	{isofuzz.AtGuest, "to_host", nil, "a guest's frames to the host beyond ping of its own gateway are counted"},
	{isofuzz.AtFabric, "lb_decap_source", nil, "tunnels from a fabric address that is no load-balancer host are dropped in XDP (finding 1)"},
	{isofuzz.AtFabric, "lb_decap_not_local_vip", nil, "tunnels whose inner packet is not for a local VIP are dropped in XDP (finding 1)"},
	{isofuzz.AtFabric, "unknown_vlan", nil, "frames with a VLAN no department owns are counted by the trunk"},
	{isofuzz.AtFabric, "lb_decap_fragment", nil, "fragmented tunnels are dropped before any reassembly (finding 1)"},
	// From outside, the lab's ToR edge (topology.go, torEdge) drops tunnels to the hosts and
	// spoofed inside sources first; the hosts' own checks are the tor-l2 rows above. What
	// reaches a segment from outside is a VIP's traffic the load balancer does not take (a
	// ping, another port), and only on a host the ToR's ECMP chose that holds a backend of
	// the VIP (the others hand it back to the fabric): each such frame must be counted. With
	// the default 2 hosts every VIP has a backend on each, with more most hosts have none.
	{isofuzz.AtOutside, "from_fabric", isofuzz.IntoSegment, "routed packets from outside that a VIP's route takes toward a segment are counted (finding 2)"},
}

func (r dropRule) min(t *isofuzz.Topology, res *isofuzz.Result, position string) float64 {
	if r.must == nil {
		return 1
	}
	n := 0
	for i := range res.Frames {
		if f := &res.Frames[i]; f.Position == position && r.must(t, res.Verdict, f) {
			n += len(f.Wire)
		}
	}
	return float64(n)
}

// checkIsolationFuzz runs the isolation fuzz against the running lab: about 3,000 crafted
// frames from a guest of each department, a port on the ToR's L2 and gc-client, captured in
// every guest, every host and the ToR; it fails on any crossing, on a control frame that did
// not arrive (the capture would prove nothing) and on drop counters that did not move.
func (l *Lab) checkIsolationFuzz(ctx context.Context, states map[string]*desired.State) error {
	if l.vmMode() {
		l.printf("   (the isolation fuzz needs namespace guests to capture in; this lab runs VMs: not run)\n")
		return nil
	}
	topo, err := l.fuzzTopology(states)
	if err != nil {
		return fmt.Errorf("isolation fuzz: reading the lab: %w", err)
	}
	if err := addFuzzPort(); err != nil {
		return err
	}
	defer func() { _ = nsx(NSTor, "ip", "link", "del", fuzzPort) }()
	fabric, err := readEndpoint(NSTor, fuzzSender)
	if err != nil {
		return err
	}
	fabric.Addr = netip.MustParseAddr(fuzzAddr)
	positions := fuzzPositions(topo, fabric)
	var points []isofuzz.CapturePoint
	for _, g := range topo.Guests {
		points = append(points, isofuzz.CapturePoint{NS: g.NS, Kind: isofuzz.PointGuest, Guest: g.Name})
	}
	for _, h := range l.hosts {
		points = append(points, isofuzz.CapturePoint{NS: h, Kind: isofuzz.PointHost})
	}
	points = append(points, isofuzz.CapturePoint{NS: NSTor, Kind: isofuzz.PointTor})

	drops := map[string]map[string]float64{} // position ("" before any) -> reason -> total
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	res, err := isofuzz.Run(ctx, topo, positions, points, isofuzz.Options{
		Seed: FuzzSeed,
		AfterPosition: func(pos string) error {
			by, err := l.scrapeBy("govcloud_department_drops_total", "reason")
			drops[pos] = by
			return err
		},
	})
	if err != nil {
		return fmt.Errorf("isolation fuzz: %w", err)
	}
	return l.judgeFuzz(topo, res, positions, drops)
}

// judgeFuzz prints the summary and returns the failures.
func (l *Lab) judgeFuzz(topo *isofuzz.Topology, res *isofuzz.Result, positions []isofuzz.Position, drops map[string]map[string]float64) error {
	v := res.Verdict
	l.printf("   isolation fuzz: seed %d, %d frames (%d cases) from %d positions, %d captured, %d lost, %.1fs\n",
		FuzzSeed, res.Sent, len(res.Frames), len(positions), res.Captured, res.Lost, res.Elapsed.Seconds())
	tallies := isofuzz.Tallies(res.Frames, v)
	for _, p := range positions {
		var parts []string
		frames := 0
		for _, t := range tallies {
			if t.Position == p.Name {
				frames += t.Frames
				parts = append(parts, fmt.Sprintf("%s %d/%d", t.Class, t.Frames, t.Crossed))
			}
		}
		l.printf("     %-22s %4d frames (class frames/cases crossed): %s\n", p.Name, frames, strings.Join(parts, ", "))
	}
	var errs []error
	byFinding := map[string]int{}
	cases := map[uint32]bool{}
	for _, c := range v.Crossings {
		byFinding[c.Finding]++
		if c.Frame != nil {
			cases[c.Frame.ID] = true
		}
	}
	l.printf("   crossings: %d cases crossed, %d observations", len(cases), len(v.Crossings))
	for _, f := range slices.Sorted(maps.Keys(byFinding)) {
		l.printf("  [%s] %d", f, byFinding[f])
	}
	l.printf("\n")
	var all strings.Builder
	for i, c := range v.Crossings {
		fmt.Fprintf(&all, "%s\n", c)
		if i < 40 {
			l.printf("     %s\n", c)
		}
	}
	if len(v.Crossings) > 0 {
		path := filepath.Join(l.dir, "logs", "isolation-fuzz-crossings.txt")
		if err := os.WriteFile(path, []byte(all.String()), 0o644); err == nil {
			l.printf("     (all %d in %s)\n", len(v.Crossings), path)
		}
	}
	if len(v.Crossings) > 0 {
		errs = append(errs, fmt.Errorf("%d cases crossed, %d observations (want 0)", len(cases), len(v.Crossings)))
	}
	var held, crossed []string
	for _, r := range slices.Sorted(maps.Keys(v.Regressions)) {
		if v.Regressions[r] {
			crossed = append(crossed, r)
		} else {
			held = append(held, r)
		}
	}
	l.printf("   issue 20 regression rows: %d held, %d crossed %v\n", len(held), len(crossed), crossed)
	if len(v.MissedControls) > 0 {
		for _, f := range v.MissedControls {
			l.printf("     control #%d %s/%s %s: not seen at %v\n", f.ID, f.Position, f.Class, f.Desc, f.Expect)
		}
		errs = append(errs, fmt.Errorf("%d control frames were not delivered to their own department (the capture proves nothing)", len(v.MissedControls)))
	}
	if res.Lost > 0 {
		errs = append(errs, fmt.Errorf("the capture lost %d frames", res.Lost))
	}
	l.printf("   fabric frames answered by the management plane (reported, not judged: the fabric reaches it by design): %d\n", v.FabricAnswered)
	// Drop counters: the movement while each position sent, by reason.
	prev := drops[""]
	for _, p := range positions {
		cur := drops[p.Name]
		delta := map[string]float64{}
		var parts []string
		total := 0.0
		for _, r := range slices.Sorted(maps.Keys(cur)) {
			if d := cur[r] - prev[r]; d > 0 {
				delta[r] = d
				total += d
				parts = append(parts, fmt.Sprintf("%s +%.0f", r, d))
			}
		}
		delta[""] = total
		l.printf("     drops while %s sent: +%.0f (%s)\n", p.Name, total, strings.Join(parts, ", "))
		for _, rule := range dropRules {
			if min := rule.min(topo, res, p.Name); rule.kind == p.Kind && delta[rule.reason] < min {
				errs = append(errs, fmt.Errorf("govcloud_department_drops_total{reason=%q} moved by %.0f while %s sent, want at least %.0f: %s",
					rule.reason, delta[rule.reason], p.Name, min, rule.why))
			}
		}
		prev = cur
	}
	return errors.Join(errs...)
}

// addFuzzPort makes the fuzz's port on the ToR's fabric bridge (quiet: no IPv6 on it).
func addFuzzPort() error {
	_ = nsx(NSTor, "ip", "link", "del", fuzzPort) // a leftover of an interrupted run
	for _, c := range [][]string{
		{"ip", "link", "add", fuzzPort, "type", "veth", "peer", "name", fuzzSender},
		{"sysctl", "-qw", "net.ipv6.conf." + fuzzPort + ".disable_ipv6=1", "net.ipv6.conf." + fuzzSender + ".disable_ipv6=1"},
		{"ip", "link", "set", fuzzSender, "address", fuzzMAC},
		{"ip", "link", "set", fuzzPort, "master", "fabric"},
		{"ip", "link", "set", fuzzPort, "up"},
		{"ip", "link", "set", fuzzSender, "up"},
	} {
		if err := nsx(NSTor, c...); err != nil {
			_ = nsx(NSTor, "ip", "link", "del", fuzzPort)
			return fmt.Errorf("isolation fuzz: port on the ToR's L2: %w", err)
		}
	}
	return nil
}

// fuzzPositions: a guest of each department (on alternating hosts), the ToR's L2, the client.
func fuzzPositions(t *isofuzz.Topology, fabric isofuzz.Endpoint) []isofuzz.Position {
	var out []isofuzz.Position
	depts := map[string]bool{}
	for i := range t.Guests {
		// Guests are sorted by name; take each department's first guest on a host not used yet.
		g := t.Guests[i]
		if depts[g.Dept] {
			continue
		}
		if slices.ContainsFunc(out, func(p isofuzz.Position) bool { return hostOfPos(t, p) == g.Host }) &&
			slices.ContainsFunc(t.Guests[i+1:], func(o isofuzz.Guest) bool {
				return o.Dept == g.Dept && !slices.ContainsFunc(out, func(p isofuzz.Position) bool { return hostOfPos(t, p) == o.Host })
			}) {
			continue
		}
		depts[g.Dept] = true
		out = append(out, isofuzz.Position{Name: "guest:" + g.Name, Kind: isofuzz.AtGuest, NS: g.NS, Ifname: "eth0",
			MAC: g.MAC, Addr: g.Addr, LinkLocal: g.LinkLocal, Guest: g.Name, Dept: g.Dept})
	}
	out = append(out,
		isofuzz.Position{Name: "tor-l2", Kind: isofuzz.AtFabric, NS: fabric.NS, Ifname: fabric.Ifname, MAC: fabric.MAC, Addr: fabric.Addr, LinkLocal: fabric.LinkLocal},
		isofuzz.Position{Name: "client", Kind: isofuzz.AtOutside, NS: t.Client.NS, Ifname: t.Client.Ifname, MAC: t.Client.MAC, Addr: t.Client.Addr, LinkLocal: t.Client.LinkLocal, Router: t.TorClient.MAC},
	)
	return out
}

func hostOfPos(t *isofuzz.Topology, p isofuzz.Position) string {
	for _, g := range t.Guests {
		if g.Name == p.Guest {
			return g.Host
		}
	}
	return ""
}

// fuzzTopology reads the lab: guests, hosts, VIPs from the desired states; MACs and link-local
// addresses from the namespaces.
func (l *Lab) fuzzTopology(states map[string]*desired.State) (*isofuzz.Topology, error) {
	u, err := url.Parse(API)
	if err != nil {
		return nil, fmt.Errorf("lab API %q: %w", API, err)
	}
	ctl, err := netip.ParseAddrPort(u.Host)
	if err != nil {
		return nil, fmt.Errorf("lab API %q: %w", API, err)
	}
	t := &isofuzz.Topology{Controller: ctl}
	seenVIP := map[string]bool{}
	for _, h := range l.hosts {
		st := states[h]
		if st == nil {
			return nil, fmt.Errorf("no desired state for %s", h)
		}
		ep, err := readEndpoint(h, "eth0")
		if err != nil {
			return nil, err
		}
		t.Hosts = append(t.Hosts, isofuzz.Host{Name: h, MAC: ep.MAC, Addr: ep.Addr, LinkLocal: ep.LinkLocal, Uplink: "eth0"})
		for _, vm := range st.VMs {
			ifc := vm.Interfaces[0]
			ns := "gc-vm-" + vm.Name
			ep, err := readEndpoint(ns, "eth0")
			if err != nil {
				return nil, err
			}
			gw := ifc.Gateway4
			if !gw.IsValid() {
				return nil, fmt.Errorf("VM %s: no gateway4 on segment %s", vm.Name, ifc.Segment)
			}
			t.Guests = append(t.Guests, isofuzz.Guest{Name: vm.Name, Dept: vm.Department, Host: h, NS: ns, MAC: ep.MAC,
				Addr: ep.Addr, LinkLocal: ep.LinkLocal, VLAN: uint16(ifc.VLAN), Gateway: gw})
			if t.GatewayMAC == nil {
				br, err := readEndpoint(h, fmt.Sprintf("gcbr%d", ifc.VLAN))
				if err != nil {
					return nil, err
				}
				t.GatewayMAC = br.MAC
			}
		}
		for _, svc := range st.Services {
			if seenVIP[svc.Name] || !svc.VIP.IsValid() {
				continue
			}
			seenVIP[svc.Name] = true
			a := svc.VIP
			v := isofuzz.VIP{Service: svc.Name, Dept: svc.Department, Addr: a}
			if len(svc.Ports) > 0 {
				v.Port = uint16(svc.Ports[0].Port)
			}
			for _, b := range svc.Backends {
				if b.VM != "" {
					v.Backends = append(v.Backends, b.VM)
				}
			}
			t.VIPs = append(t.VIPs, v)
		}
	}
	sort.Slice(t.Guests, func(i, j int) bool { return t.Guests[i].Name < t.Guests[j].Name })
	sort.Slice(t.VIPs, func(i, j int) bool { return t.VIPs[i].Service < t.VIPs[j].Service })
	if t.TorFabric, err = readEndpoint(NSTor, "fabric"); err != nil {
		return nil, err
	}
	if t.TorClient, err = readEndpoint(NSTor, "gc-tor-cl"); err != nil {
		return nil, err
	}
	if t.Client, err = readEndpoint(NSClient, "eth0"); err != nil {
		return nil, err
	}
	if len(t.Guests) == 0 || len(t.VIPs) == 0 || t.GatewayMAC == nil {
		return nil, errors.New("the lab has no guests, VIPs or segment bridges")
	}
	return t, nil
}

// readEndpoint reads an interface's MAC, first IPv4 address and IPv6 link-local address.
func readEndpoint(ns, ifname string) (isofuzz.Endpoint, error) {
	ep := isofuzz.Endpoint{NS: ns, Ifname: ifname}
	out, err := nsOut(ns, "ip", "-j", "addr", "show", "dev", ifname)
	if err != nil {
		return ep, err
	}
	var links []struct {
		Address  string `json:"address"`
		AddrInfo []struct {
			Family string `json:"family"`
			Local  string `json:"local"`
			Scope  string `json:"scope"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		return ep, fmt.Errorf("%s in %s: reading 'ip -j addr': %v", ifname, ns, err)
	}
	if ep.MAC, err = net.ParseMAC(links[0].Address); err != nil {
		return ep, fmt.Errorf("%s in %s: MAC %q: %w", ifname, ns, links[0].Address, err)
	}
	for _, a := range links[0].AddrInfo {
		ip, err := netip.ParseAddr(a.Local)
		if err != nil {
			continue
		}
		switch {
		case a.Family == "inet" && !ep.Addr.IsValid():
			ep.Addr = ip
		case a.Family == "inet6" && ip.IsLinkLocalUnicast():
			ep.LinkLocal = ip
		}
	}
	if !ep.LinkLocal.IsValid() {
		ep.LinkLocal = isofuzz.LinkLocal(ep.MAC)
	}
	return ep, nil
}
