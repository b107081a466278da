// Package netdev makes the host's per-segment links, addresses, neighbours, policy rules and
// routes through netlink: one Linux bridge per segment holding the distributed gateway, a
// veth pair joining the bridge to the eBPF trunk, and a routing table per department selected
// by "iif <bridge>" rules (VRF-lite, since the kernel may lack the vrf module).
//
// Every function converges one kind of object to a wanted set and is safe to call again:
// existing objects that already match are left alone (no netlink writes), so a reconcile loop
// can call them every time. Objects this package creates carry marks (link alias, route and
// rule protocol) so that Owned*/Delete* can find them after a crash.
package netdev

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Alias marks links this package created.
const Alias = "govcloud"

// Group is the link group (IFLA_GROUP) of every link this package makes. Deleting a whole
// group is one batched unregister in the kernel, much faster than one link at a time.
const Group = 0x6763

// doomedGroup holds links about to be deleted together.
const doomedGroup = 0x6764

// Proto is the route and rule protocol number marking govcloud's routes and rules.
const Proto = 199

// Link name prefixes (IFNAMSIZ is 16: "gcbr4094" and "gcvt4094" fit).
const (
	bridgePrefix = "gcbr" // segment bridge
	bportPrefix  = "gcvb" // veth end inside the bridge
	tportPrefix  = "gcvt" // veth end carrying the trunk program
)

// BridgeName is the segment bridge of vlan.
func BridgeName(vlan uint16) string { return fmt.Sprintf("%s%d", bridgePrefix, vlan) }

// BridgePortName is the veth end that is a member of the segment bridge.
func BridgePortName(vlan uint16) string { return fmt.Sprintf("%s%d", bportPrefix, vlan) }

// TrunkPortName is the veth end outside the bridge, where the trunk program runs.
func TrunkPortName(vlan uint16) string { return fmt.Sprintf("%s%d", tportPrefix, vlan) }

// Manager changes one network namespace through a netlink handle bound to it.
type Manager struct {
	nl   *netlink.Handle
	log  *slog.Logger
	snap *snapshot
	// Changes counts netlink writes since the Manager was made (for idempotence checks).
	Changes int
}

// New returns a Manager over nl.
func New(nl *netlink.Handle, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{nl: nl, log: log}
}

// snapshot holds one dump of links, addresses and permanent neighbours, so that converging
// thousands of segments costs a few dumps instead of a lookup (or a whole dump) per object.
type snapshot struct {
	links map[string]netlink.Link
	addrs map[int][]netlink.Addr
	neigh map[int][]netlink.Neigh
	// created holds links made since the snapshot, by index, with the global addresses
	// EnsureAddrs gave them: listing a new link's addresses would dump every address of the
	// namespace (the kernel filters nothing), which made a cold Set of n segments O(n²).
	created map[int][]netlink.Addr
}

// Refresh takes a snapshot that later lookups use until Forget. Objects created after it are
// looked up directly. Call it at the start of a reconcile and Forget at the end.
func (m *Manager) Refresh() error {
	links, err := m.nl.LinkList()
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	addrs, err := m.nl.AddrList(nil, unix.AF_UNSPEC)
	if err != nil {
		return fmt.Errorf("listing addresses: %w", err)
	}
	sn := &snapshot{links: map[string]netlink.Link{}, addrs: map[int][]netlink.Addr{}, neigh: map[int][]netlink.Neigh{}, created: map[int][]netlink.Addr{}}
	for _, l := range links {
		sn.links[l.Attrs().Name] = l
	}
	for _, a := range addrs {
		sn.addrs[a.LinkIndex] = append(sn.addrs[a.LinkIndex], a)
	}
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		ns, err := m.nl.NeighList(0, fam)
		if err != nil {
			return fmt.Errorf("listing neighbours: %w", err)
		}
		for _, n := range ns {
			if n.State&unix.NUD_PERMANENT != 0 {
				sn.neigh[n.LinkIndex] = append(sn.neigh[n.LinkIndex], n)
			}
		}
	}
	m.snap = sn
	return nil
}

// Forget drops the snapshot.
func (m *Manager) Forget() { m.snap = nil }

func (m *Manager) linkByName(name string) (netlink.Link, error) {
	if m.snap != nil {
		if l, ok := m.snap.links[name]; ok {
			return l, nil
		}
	}
	return m.nl.LinkByName(name)
}

func (m *Manager) addrList(l netlink.Link) ([]netlink.Addr, error) {
	if m.snap != nil {
		if _, ok := m.snap.links[l.Attrs().Name]; ok {
			return m.snap.addrs[l.Attrs().Index], nil
		}
		if as, ok := m.snap.created[l.Attrs().Index]; ok {
			return as, nil
		}
	}
	return m.nl.AddrList(l, unix.AF_UNSPEC)
}

// createdAddrs returns the addresses given to l when it was made since the snapshot.
func (sn *snapshot) createdAddrs(l netlink.Link) ([]netlink.Addr, bool) {
	if sn == nil {
		return nil, false
	}
	as, ok := sn.created[l.Attrs().Index]
	return as, ok
}

// created records a link made since the snapshot (see snapshot.created).
func (m *Manager) created(l netlink.Link) {
	if m.snap != nil {
		m.snap.created[l.Attrs().Index] = nil
	}
}

func (m *Manager) changed(what string, args ...any) {
	m.Changes++
	m.log.Debug(what, args...)
}

// BridgeSpec is one segment bridge and its trunk veth pair.
type BridgeSpec struct {
	VLAN  uint16
	MAC   net.HardwareAddr // the distributed gateway MAC (same on every host)
	MTU   int              // 0: kernel default
	Addrs []netip.Prefix   // gateway addresses with the segment prefix length
}

// EnsureSegment makes the bridge, its addresses and the trunk veth pair of one segment and
// brings them up. It returns the trunk-side port's ifindex.
func (m *Manager) EnsureSegment(s BridgeSpec) (int, error) {
	br, err := m.ensureBridge(BridgeName(s.VLAN), s.MAC, s.MTU)
	if err != nil {
		return 0, err
	}
	bp, tp, err := m.ensureVeth(BridgePortName(s.VLAN), TrunkPortName(s.VLAN), s.MTU)
	if err != nil {
		return 0, err
	}
	if bp.Attrs().MasterIndex != br.Attrs().Index {
		if err := m.nl.LinkSetMaster(bp, br); err != nil {
			return 0, fmt.Errorf("segment vlan %d: adding %s to %s: %w", s.VLAN, bp.Attrs().Name, br.Attrs().Name, err)
		}
		m.changed("link master", "link", bp.Attrs().Name, "bridge", br.Attrs().Name)
	}
	if err := m.EnsureAddrs(br, s.Addrs); err != nil {
		return 0, err
	}
	for _, l := range []netlink.Link{br, bp, tp} {
		if err := m.up(l); err != nil {
			return 0, err
		}
	}
	return tp.Attrs().Index, nil
}

func (m *Manager) up(l netlink.Link) error {
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := m.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("bringing %s up: %w", l.Attrs().Name, err)
	}
	m.changed("link up", "link", l.Attrs().Name)
	return nil
}

func (m *Manager) ensureBridge(name string, mac net.HardwareAddr, mtu int) (netlink.Link, error) {
	l, err := m.linkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return nil, fmt.Errorf("looking up bridge %s: %w", name, err)
		}
		off := false
		la := netlink.NewLinkAttrs()
		la.Name = name
		la.HardwareAddr = mac
		la.Group = Group
		if mtu > 0 {
			la.MTU = mtu
		}
		br := &netlink.Bridge{LinkAttrs: la, MulticastSnooping: &off}
		if err := m.nl.LinkAdd(br); err != nil {
			return nil, fmt.Errorf("creating bridge %s: %w", name, err)
		}
		m.changed("bridge created", "bridge", name)
		if l, err = m.nl.LinkByName(name); err != nil {
			return nil, fmt.Errorf("bridge %s after create: %w", name, err)
		}
		m.created(l)
	} else if l.Type() != "bridge" {
		return nil, fmt.Errorf("link %s exists but is a %s, not a bridge", name, l.Type())
	}
	if err := m.mark(l); err != nil {
		return nil, err
	}
	if mac != nil && l.Attrs().HardwareAddr.String() != mac.String() {
		if err := m.nl.LinkSetHardwareAddr(l, mac); err != nil {
			return nil, fmt.Errorf("setting bridge %s MAC %s: %w", name, mac, err)
		}
		m.changed("bridge mac", "bridge", name, "mac", mac)
	}
	if mtu > 0 && l.Attrs().MTU != mtu {
		if err := m.nl.LinkSetMTU(l, mtu); err != nil {
			return nil, fmt.Errorf("setting bridge %s MTU %d: %w", name, mtu, err)
		}
		m.changed("bridge mtu", "bridge", name)
	}
	return l, nil
}

// mark sets the ownership alias and, once, turns off IPv6 link-local generation: every host's
// bridge has the same MAC, so identical EUI-64 link-locals would fail DAD across the trunk.
func (m *Manager) mark(l netlink.Link) error {
	if l.Attrs().Alias == Alias {
		return nil
	}
	if err := m.nl.LinkSetAlias(l, Alias); err != nil {
		return fmt.Errorf("marking %s: %w", l.Attrs().Name, err)
	}
	if l.Attrs().Group != Group {
		if err := m.nl.LinkSetGroup(l, Group); err != nil {
			return fmt.Errorf("grouping %s: %w", l.Attrs().Name, err)
		}
	}
	if err := m.nl.LinkSetIP6AddrGenMode(l, 1 /* IN6_ADDR_GEN_MODE_NONE */); err != nil {
		return fmt.Errorf("disabling IPv6 link-local on %s: %w", l.Attrs().Name, err)
	}
	m.changed("link marked", "link", l.Attrs().Name)
	return nil
}

func (m *Manager) ensureVeth(a, b string, mtu int) (netlink.Link, netlink.Link, error) {
	la, errA := m.linkByName(a)
	lb, errB := m.linkByName(b)
	ok := errA == nil && errB == nil && la.Type() == "veth" && lb.Type() == "veth"
	// A veth's IFLA_LINK is its peer's ifindex (both ends live in this namespace).
	ok = ok && la.Attrs().ParentIndex == lb.Attrs().Index && lb.Attrs().ParentIndex == la.Attrs().Index
	if !ok {
		// Half-made or foreign: remove what is ours and start again.
		for _, l := range []netlink.Link{la, lb} {
			if l == nil || l.Attrs() == nil {
				continue
			}
			if l.Attrs().Alias != Alias && l.Type() != "veth" {
				return nil, nil, fmt.Errorf("link %s exists and is not govcloud's (type %s)", l.Attrs().Name, l.Type())
			}
			if err := m.nl.LinkDel(l); err != nil {
				var nf netlink.LinkNotFoundError
				if !errors.As(err, &nf) && !errors.Is(err, unix.ENODEV) {
					return nil, nil, fmt.Errorf("removing stale %s: %w", l.Attrs().Name, err)
				}
			}
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name = a
		attrs.Group = Group
		if mtu > 0 {
			attrs.MTU = mtu
		}
		if err := m.nl.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: b}); err != nil {
			return nil, nil, fmt.Errorf("creating veth %s-%s: %w", a, b, err)
		}
		m.changed("veth created", "a", a, "b", b)
		var err error
		if la, err = m.nl.LinkByName(a); err != nil {
			return nil, nil, fmt.Errorf("veth %s after create: %w", a, err)
		}
		if lb, err = m.nl.LinkByName(b); err != nil {
			return nil, nil, fmt.Errorf("veth %s after create: %w", b, err)
		}
	}
	for _, l := range []netlink.Link{la, lb} {
		if err := m.mark(l); err != nil {
			return nil, nil, err
		}
	}
	return la, lb, nil
}

// EnsureAddrs makes the link's global addresses exactly want (link-local ones are left alone),
// each with IFA_F_NOPREFIXROUTE: the kernel makes no connected route for it in the main table
// (a segment's route lives only in its department's table; issue 20). An address found
// without the flag is removed and added again.
func (m *Manager) EnsureAddrs(l netlink.Link, want []netip.Prefix) error {
	have, err := m.addrList(l)
	if err != nil {
		return fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
	}
	wanted := make(map[netip.Prefix]bool, len(want))
	for _, p := range want {
		wanted[p] = true
	}
	for _, a := range have {
		p, ok := PrefixOf(a.IPNet)
		if !ok || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		if wanted[p] && a.Flags&unix.IFA_F_NOPREFIXROUTE != 0 {
			delete(wanted, p)
			continue
		}
		if err := m.nl.AddrDel(l, &a); err != nil {
			return fmt.Errorf("removing %s from %s: %w", p, l.Attrs().Name, err)
		}
		m.changed("address removed", "link", l.Attrs().Name, "addr", p)
	}
	for _, p := range want {
		if !wanted[p] {
			continue
		}
		a := &netlink.Addr{IPNet: ipnet(p), Flags: unix.IFA_F_NODAD | unix.IFA_F_NOPREFIXROUTE}
		if err := m.nl.AddrAdd(l, a); err != nil {
			return fmt.Errorf("adding %s to %s: %w", p, l.Attrs().Name, err)
		}
		if as, ok := m.snap.createdAddrs(l); ok {
			m.snap.created[l.Attrs().Index] = append(as, *a)
		}
		m.changed("address added", "link", l.Attrs().Name, "addr", p)
	}
	return nil
}

// OwnedLinks lists the links this package made (by alias), by name.
func (m *Manager) OwnedLinks() (map[string]netlink.Link, error) {
	links, err := m.nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	out := make(map[string]netlink.Link)
	for _, l := range links {
		n := l.Attrs().Name
		if l.Attrs().Alias == Alias || strings.HasPrefix(n, bridgePrefix) || strings.HasPrefix(n, bportPrefix) || strings.HasPrefix(n, tportPrefix) {
			if l.Attrs().Alias == Alias || isOurName(n) {
				out[n] = l
			}
		}
	}
	return out, nil
}

func isOurName(n string) bool {
	for _, p := range []string{bridgePrefix, bportPrefix, tportPrefix} {
		if rest, ok := strings.CutPrefix(n, p); ok && rest != "" && strings.Trim(rest, "0123456789") == "" {
			return true
		}
	}
	return false
}

// SegmentVLAN parses the VLAN from one of this package's link names.
func SegmentVLAN(name string) (uint16, bool) {
	for _, p := range []string{bridgePrefix, bportPrefix, tportPrefix} {
		if rest, ok := strings.CutPrefix(name, p); ok {
			v, err := strconv.ParseUint(rest, 10, 16)
			if err == nil && v >= 1 && v <= 4094 && strconv.FormatUint(v, 10) == rest {
				return uint16(v), true
			}
		}
	}
	return 0, false
}

// DeleteSegments removes the segments' bridges and veth pairs (missing ones are fine) in one
// batched kernel operation. Guest ports in the bridges are released, not deleted. The
// deletion itself is a group delete, which must run on a thread inside the namespace: run is
// called with it (pass a function that just calls it when already there).
func (m *Manager) DeleteSegments(vlans []uint16, run func(func() error) error) error {
	n := 0
	for _, v := range vlans {
		for _, name := range []string{BridgePortName(v), TrunkPortName(v), BridgeName(v)} {
			l, err := m.nl.LinkByName(name)
			if err != nil {
				continue
			}
			if err := m.nl.LinkSetGroup(l, doomedGroup); err != nil {
				return fmt.Errorf("marking %s for deletion: %w", name, err)
			}
			n++
		}
	}
	if n == 0 {
		return nil
	}
	if err := run(func() error { return deleteGroup(doomedGroup) }); err != nil {
		return err
	}
	m.changed("links deleted", "count", n)
	return nil
}

// DeleteAll removes every link in Group (a teardown), batched like DeleteSegments.
func (m *Manager) DeleteAll(run func(func() error) error) error {
	links, err := m.OwnedLinks()
	if err != nil {
		return err
	}
	for name, l := range links {
		if l.Attrs().Group != Group {
			// Made before grouping, or renamed: regroup so the batch takes it too.
			if err := m.nl.LinkSetGroup(l, Group); err != nil {
				return fmt.Errorf("grouping %s: %w", name, err)
			}
		}
	}
	if len(links) == 0 {
		return nil
	}
	if err := run(func() error { return deleteGroup(Group) }); err != nil {
		return err
	}
	m.changed("links deleted", "count", len(links))
	return nil
}

// deleteGroup sends RTM_DELLINK for a whole link group in the calling thread's namespace.
func deleteGroup(group uint32) error {
	req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, group)
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, b))
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("deleting link group %#x: %w", group, err)
	}
	return nil
}

// EnsurePort makes ifname a member of bridge and brings it up (a guest's host-side port).
func (m *Manager) EnsurePort(ifname, bridge string) error {
	l, err := m.linkByName(ifname)
	if err != nil {
		return fmt.Errorf("guest port %s: %w", ifname, err)
	}
	br, err := m.linkByName(bridge)
	if err != nil {
		return fmt.Errorf("guest port %s: bridge %s: %w", ifname, bridge, err)
	}
	if l.Attrs().MasterIndex != br.Attrs().Index {
		if err := m.nl.LinkSetMaster(l, br); err != nil {
			return fmt.Errorf("adding guest port %s to %s: %w", ifname, bridge, err)
		}
		m.changed("guest port added", "port", ifname, "bridge", bridge)
	}
	return m.up(l)
}

// ReleasePort takes ifname out of its bridge (a guest port no longer wanted).
func (m *Manager) ReleasePort(l netlink.Link) error {
	if err := m.nl.LinkSetNoMaster(l); err != nil {
		return fmt.Errorf("releasing %s from its bridge: %w", l.Attrs().Name, err)
	}
	m.changed("guest port released", "port", l.Attrs().Name)
	return nil
}

// Members lists the links enslaved to bridge.
func (m *Manager) Members(bridge netlink.Link) ([]netlink.Link, error) {
	links, err := m.nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	var out []netlink.Link
	for _, l := range links {
		if l.Attrs().MasterIndex == bridge.Attrs().Index {
			out = append(out, l)
		}
	}
	return out, nil
}

// PrefixOf converts a netlink address (an *net.IPNet) to a netip.Prefix (IPv4 unmapped);
// false for nil or a malformed address.
func PrefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func ipnet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}
