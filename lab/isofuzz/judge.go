package isofuzz

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// PointKind is what a capture point watches.
type PointKind int

const (
	// PointGuest is a guest's namespace: any frame arriving there was delivered to it.
	PointGuest PointKind = iota
	// PointHost is a host's namespace: its stack's answers leave through it.
	PointHost
	// PointTor is the ToR's namespace: frames delivered to its own addresses, its answers.
	PointTor
)

// Packet is one captured frame.
type Packet struct {
	Point    string // namespace
	Kind     PointKind
	Guest    string // PointGuest: the guest's name
	Ifname   string
	Outgoing bool // sent by this namespace (PACKET_OUTGOING)
	VLAN     bool // carried a VLAN tag with a non-zero VID (in the frame or its metadata)
	Data     []byte
}

// Crossing is one isolation failure.
type Crossing struct {
	Frame   *Frame // nil for system frames without a marker (ARP from a foreign address)
	Where   string // namespace
	What    string
	Finding string // issue 20 finding it belongs to, or "new"
}

func (c Crossing) String() string {
	if c.Frame == nil {
		return fmt.Sprintf("[%s] %s: %s", c.Finding, c.Where, c.What)
	}
	f := c.Frame
	reg := ""
	if f.Regression != "" {
		reg = " (" + f.Regression + ")"
	}
	return fmt.Sprintf("[%s] #%d %s/%s%s %s: %s in %s", c.Finding, f.ID, f.Position, f.Class, reg, f.Desc, c.What, c.Where)
}

// Verdict is the judge's result.
type Verdict struct {
	Crossings []Crossing
	// MissedControls are control frames no expected guest saw: the capture or the lab is
	// broken, and a zero crossing count would prove nothing.
	MissedControls []*Frame
	// FabricAnswered counts fabric frames the management plane answered: reported only, the
	// fabric reaches the management plane by design. An outside frame answered is a crossing.
	FabricAnswered int
	// Regressions maps each named regression row to whether it crossed.
	Regressions map[string]bool
	// Arrived maps a frame to the hosts whose stack received it from outside the host (on the
	// uplink, not sent by the host itself): where the ToR's ECMP actually delivered it.
	Arrived map[uint32]map[string]bool
}

// Tally is the number of wire frames sent and of cases that crossed, per position and class.
type Tally struct {
	Position, Class string
	Frames, Cases   int
	Crossed         int
}

// mgmtPorts are the ports on which an answer from a department's own gateway address is the
// host's management plane answering (metrics, BGP, SSH, the controller's API).
var mgmtPorts = []uint16{22, 179, 9480, 9481, 8480}

type tuple struct {
	src, dst     netip.Addr
	sport, dport uint16
	proto        uint8
}

// Judge decides crossings from the captures of one run.
func Judge(t *Topology, frames []Frame, run uint32, pkts []Packet) *Verdict {
	v := &Verdict{Regressions: map[string]bool{}, Arrived: map[uint32]map[string]bool{}}
	byID := map[uint32]*Frame{}
	answers := map[tuple]*Frame{} // the answer's tuple -> the probe's frame
	for i := range frames {
		f := &frames[i]
		byID[f.ID] = f
		if f.Regression != "" {
			v.Regressions[f.Regression] = false
		}
		if p := f.Probe; p != nil && (p.Proto == protoTCP || p.Proto == protoUDP) {
			answers[tuple{p.Dst, p.Src, p.Dport, p.Sport, p.Proto}] = f
		}
	}
	mgmt := map[netip.Addr]bool{t.Controller.Addr(): true, netip.MustParseAddr("127.0.0.1"): true, netip.IPv6Loopback(): true}
	for _, h := range t.Hosts {
		mgmt[h.Addr], mgmt[h.LinkLocal] = true, true
	}
	uplink := map[string]string{} // host namespace -> its uplink
	for _, h := range t.Hosts {
		uplink[h.Name] = h.Uplink
	}
	tor := map[netip.Addr]bool{}
	for _, e := range []Endpoint{t.TorFabric, t.TorClient} {
		mgmt[e.Addr], mgmt[e.LinkLocal] = true, true
		tor[e.Addr], tor[e.LinkLocal] = true, true
	}
	gateways := map[netip.Addr]string{} // gateway -> department
	owner := map[netip.Addr]string{}    // guest, gateway and VIP addresses -> department
	for _, g := range t.Guests {
		gateways[g.Gateway] = g.Dept
		owner[g.Gateway], owner[g.Addr], owner[g.LinkLocal] = g.Dept, g.Dept, g.Dept
	}
	for _, vip := range t.VIPs {
		owner[vip.Addr] = vip.Dept
	}
	deptOf := map[string]string{}
	for _, g := range t.Guests {
		deptOf[g.Name] = g.Dept
	}

	seen := map[[3]string]bool{}
	cross := func(f *Frame, where, what, finding string) {
		key := [3]string{"-", where, what}
		if f != nil {
			key[0] = fmt.Sprint(f.ID)
		}
		if seen[key] {
			return
		}
		seen[key] = true
		if f != nil && f.Regression != "" {
			v.Regressions[f.Regression] = true
		}
		v.Crossings = append(v.Crossings, Crossing{Frame: f, Where: where, What: what, Finding: finding})
	}
	answered := map[uint32]bool{}
	// answer handles an answer from src to the probe of f.
	answer := func(f *Frame, src netip.Addr, service bool, where string) {
		if !f.TenantFrame() {
			if mgmt[src] && !answered[f.ID] {
				answered[f.ID] = true
				if f.Kind == AtOutside {
					// Outside the cloud nothing of the management plane answers (the edge
					// drops it: README "What the fabric must do", the lab's ToR does).
					cross(f, where, "outside frame answered from management address "+src.String(), "finding 3 (outside)")
				} else {
					v.FabricAnswered++
				}
			}
			return
		}
		switch d, isGW := gateways[src]; {
		case mgmt[src]:
			cross(f, where, "answered from management address "+src.String(), "finding 3")
		case isGW && d != f.Tenant:
			cross(f, where, fmt.Sprintf("answered from department %s's gateway %s", d, src), "finding 3")
		case isGW && service && slices.Contains(mgmtPorts, f.Probe.Dport):
			cross(f, where, fmt.Sprintf("a service on the gateway %s answered on management port %d", src, f.Probe.Dport), "new: gateway management ports")
		}
	}
	delivered := map[uint32]map[string]bool{}
	for i := range pkts {
		pk := &pkts[i]
		ids := findMarkers(pk.Data, run)
		if pk.Kind == PointHost && !pk.Outgoing && pk.Ifname != "" && pk.Ifname == uplink[pk.Point] {
			for _, id := range ids {
				if v.Arrived[id] == nil {
					v.Arrived[id] = map[string]bool{}
				}
				v.Arrived[id][pk.Point] = true
			}
		}
		if pk.Kind == PointGuest && !pk.Outgoing {
			for _, id := range ids {
				f := byID[id]
				if f == nil {
					continue
				}
				if delivered[id] == nil {
					delivered[id] = map[string]bool{}
				}
				delivered[id][pk.Guest] = true
				if !f.Allowed[pk.Guest] {
					cross(f, pk.Point, fmt.Sprintf("reached guest %s of department %s", pk.Guest, deptOf[pk.Guest]), findingOf(f))
				}
			}
		}
		p := gopacket.NewPacket(pk.Data, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
		if pk.Kind == PointGuest && !pk.Outgoing && len(ids) == 0 {
			if a, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP); ok && len(a.SourceProtAddress) == 4 {
				spa := netip.AddrFrom4([4]byte(a.SourceProtAddress))
				if d, ok := owner[spa]; (ok && d != deptOf[pk.Guest]) || mgmt[spa] {
					cross(nil, pk.Point, fmt.Sprintf("ARP (op %d) from %s (%s) reached guest %s of department %s", a.Operation, spa, ownerName(d, mgmt[spa]), pk.Guest, deptOf[pk.Guest]), "new: ARP")
				}
			}
		}
		nl := p.NetworkLayer()
		if nl == nil {
			continue
		}
		src, _ := netip.AddrFromSlice(nl.NetworkFlow().Src().Raw())
		dst, _ := netip.AddrFromSlice(nl.NetworkFlow().Dst().Raw())
		// Delivered to the ToR's own address (its management plane).
		if pk.Kind == PointTor && !pk.Outgoing && !pk.VLAN && tor[dst] && (pk.Ifname == t.TorFabric.Ifname || pk.Ifname == t.TorClient.Ifname) {
			for _, id := range ids {
				if f := byID[id]; f != nil && f.TenantFrame() && slices.Contains(f.Dsts, dst) {
					cross(f, pk.Point, "delivered to the ToR's address "+dst.String(), "finding 3")
				}
			}
		}
		if !mgmt[src] && gateways[src] == "" {
			continue
		}
		// Answers: TCP SYN-ACK or RST acknowledging a probe, a UDP reply, an ICMP echo reply
		// or error quoting a probe, from the address the probe was sent to.
		switch l := p.TransportLayer().(type) {
		case *layers.TCP:
			f := answers[tuple{src, dst, uint16(l.SrcPort), uint16(l.DstPort), protoTCP}]
			if f != nil && (l.SYN && l.ACK || l.RST) && (l.Ack-1 == f.Probe.Seq || l.Ack-1 == f.Probe.Seq+uint32(f.Probe.Len)) {
				answer(f, src, l.SYN, pk.Point)
			}
			continue
		case *layers.UDP:
			if f := answers[tuple{src, dst, uint16(l.SrcPort), uint16(l.DstPort), protoUDP}]; f != nil {
				answer(f, src, true, pk.Point)
			}
			continue
		}
		icmpAnswer := false
		if ic, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok {
			icmpAnswer = slices.Contains([]uint8{0, 3, 11, 12}, ic.TypeCode.Type())
		} else if ic, ok := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6); ok {
			icmpAnswer = slices.Contains([]uint8{1, 2, 3, 4, 129}, ic.TypeCode.Type())
		}
		if icmpAnswer {
			for _, id := range ids {
				if f := byID[id]; f != nil && slices.Contains(f.Dsts, src) {
					answer(f, src, false, pk.Point)
				}
			}
		}
	}
	for i := range frames {
		f := &frames[i]
		if len(f.Expect) == 0 {
			continue
		}
		if !slices.ContainsFunc(f.Expect, func(g string) bool { return delivered[f.ID][g] }) {
			v.MissedControls = append(v.MissedControls, f)
		}
	}
	sort.SliceStable(v.Crossings, func(i, j int) bool { return v.Crossings[i].Finding < v.Crossings[j].Finding })
	return v
}

func ownerName(dept string, mgmt bool) string {
	if mgmt {
		return "management plane"
	}
	return "department " + dept
}

// findingOf names the issue 20 finding a guest-reaching crossing belongs to: decapsulation
// (1), the main table forwarding fabric traffic into a segment (2), or something new.
func findingOf(f *Frame) string {
	switch {
	case slices.Contains([]string{"ipip", "4in6", "6in4", "ip6ip6"}, f.Class) || strings.HasPrefix(f.Desc, "IPIP"):
		return "finding 1"
	case f.Kind != AtGuest && (f.Tenant == "" || f.Tenant == "?"):
		return "finding 2"
	}
	return "new"
}

// Tallies counts frames and crossings per position and class, in the order frames were made.
func Tallies(frames []Frame, v *Verdict) []Tally {
	crossed := map[uint32]bool{}
	for _, c := range v.Crossings {
		if c.Frame != nil {
			crossed[c.Frame.ID] = true
		}
	}
	idx := map[[2]string]int{}
	var out []Tally
	for i := range frames {
		f := &frames[i]
		k := [2]string{f.Position, f.Class}
		j, ok := idx[k]
		if !ok {
			j = len(out)
			idx[k] = j
			out = append(out, Tally{Position: f.Position, Class: f.Class})
		}
		out[j].Frames += len(f.Wire)
		out[j].Cases++
		if crossed[f.ID] {
			out[j].Crossed++
		}
	}
	return out
}

// IntoSegment reports whether f is a packet from outside the cloud that a host must drop
// at its segment's edge (reason from_fabric, issue 20 finding 2): not fragmented, to a VIP on
// another protocol or port than the one the load balancer takes (so the host's route to the VIP
// forwards it toward a local backend instead), and delivered by the fabric (v.Arrived) to a
// host that holds one of the VIP's backends. The fabric spreads VIPs over every host that
// advertises them; hosts without a backend of the VIP hand such a packet back to the fabric,
// so whether any reached a segment depends on where the ToR's ECMP sent it, which the
// capture shows.
func IntoSegment(t *Topology, v *Verdict, f *Frame) bool {
	if f.Kind != AtOutside || f.Probe == nil || len(f.Wire) != 1 || len(f.Dsts) != 1 {
		return false
	}
	hostOf := map[string]string{}
	for _, g := range t.Guests {
		hostOf[g.Name] = g.Host
	}
	for _, vip := range t.VIPs {
		if vip.Addr != f.Dsts[0] || (f.Probe.Proto == protoTCP && f.Probe.Dport == vip.Port) {
			continue
		}
		for _, b := range vip.Backends {
			if v.Arrived[f.ID][hostOf[b]] {
				return true
			}
		}
	}
	return false
}
