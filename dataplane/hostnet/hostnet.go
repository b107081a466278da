package hostnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/govcloud/govcloud/dataplane/firewall"
	"github.com/govcloud/govcloud/dataplane/netdev"
	"github.com/govcloud/govcloud/dataplane/nsexec"
	"github.com/govcloud/govcloud/dataplane/trunk"
)

// Network is what the agent needs from the host network; Fake stands in for it in tests.
type Network interface {
	// Set converges the host to desired (the whole wanted state, not a change).
	Set(desired HostNetwork) error
	// Close releases the host: removes everything unless it was opened to keep the dataplane.
	Close() error
}

// DefaultStateDir is where a Host keeps the sysctl values it will restore.
const DefaultStateDir = "/run/govcloud/hostnet"

// DefaultRulePriority is the policy-rule priority of the department rules (before main).
const DefaultRulePriority = 1000

// Config says where and how a Host works.
type Config struct {
	Logger *slog.Logger
	// NetNS, when > 0, is the network namespace to manage (tests, the lab); otherwise the
	// caller's own.
	NetNS netns.NsHandle
	// PinPath is the bpffs directory of the trunk's maps and links (trunk.DefaultPinPath).
	PinPath string
	// RulePriority of the "iif <bridge> lookup <table>" rules (DefaultRulePriority).
	RulePriority int
	// StateDir keeps what must outlive a crash besides the pins: the sysctl values found
	// before the first change, so Teardown can restore them (DefaultStateDir).
	StateDir string
	// Keep makes Close leave the dataplane forwarding (an agent upgrade) instead of removing it.
	Keep bool
}

// Host manages one host's tenant network. It is safe for concurrent use.
type Host struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	nl       *netlink.Handle
	nd       *netdev.Manager
	nft      *nftables.Conn
	nftRead  *nftables.Conn // counters, read without waiting for a Set
	tr       *trunk.Trunk
	attached map[string]int // role/name -> ifindex attached by this process
	sysctls  map[string]string
	writes   int // non-netlink writes (maps, links, sysctls, nftables) in the last Set
	last     int
}

var _ Network = (*Host)(nil)

// New opens the namespace's netlink and nftables sockets and loads the trunk program (reusing
// pinned maps and links of an earlier agent). It changes nothing on the host yet.
func New(cfg Config) (*Host, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PinPath == "" {
		cfg.PinPath = trunk.DefaultPinPath
	}
	if cfg.RulePriority == 0 {
		cfg.RulePriority = DefaultRulePriority
	}
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	h := &Host{cfg: cfg, log: cfg.Logger, attached: map[string]int{}, sysctls: map[string]string{}}
	if b, err := os.ReadFile(h.sysctlFile()); err == nil {
		if err := json.Unmarshal(b, &h.sysctls); err != nil {
			return nil, fmt.Errorf("reading saved sysctls %s: %w", h.sysctlFile(), err)
		}
	}
	var err error
	if cfg.NetNS > 0 {
		h.nl, err = netlink.NewHandleAt(cfg.NetNS)
	} else {
		h.nl, err = netlink.NewHandle()
	}
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	if cfg.NetNS > 0 {
		h.nft, err = nftables.New(nftables.WithNetNSFd(int(cfg.NetNS)), firewall.BigBuffers())
		if err == nil {
			h.nftRead, err = nftables.New(nftables.WithNetNSFd(int(cfg.NetNS)))
		}
	} else {
		h.nft, err = nftables.New(firewall.BigBuffers())
		if err == nil {
			h.nftRead, err = nftables.New()
		}
	}
	if err != nil {
		h.nl.Close()
		return nil, fmt.Errorf("nftables connection: %w", err)
	}
	h.nd = netdev.New(h.nl, cfg.Logger)
	if h.tr, err = trunk.Load(cfg.PinPath); err != nil {
		h.nl.Close()
		return nil, err
	}
	return h, nil
}

// Changes is the number of writes the last Set made (0 when the host already matched).
func (h *Host) Changes() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

// Trunk exposes the trunk for counters (metering) and tests.
func (h *Host) Trunk() *trunk.Trunk { return h.tr }

// do runs fn on a thread inside the managed namespace.
func (h *Host) do(fn func() error) error {
	if h.cfg.NetNS <= 0 {
		return fn()
	}
	return nsexec.Do(h.cfg.NetNS, fn)
}

// sysctl sets a /proc/sys value (inside the namespace) when it differs, remembering the first
// value it saw so Teardown can put it back. Call inside do.
func (h *Host) sysctl(key, val string) error {
	p := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	cur, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("sysctl %s: %w", key, err)
	}
	c := strings.TrimSpace(string(cur))
	if c == val {
		return nil
	}
	if _, ok := h.sysctls[key]; !ok {
		h.sysctls[key] = c
		if !strings.HasPrefix(key, "net.ipv4.conf.gcbr") {
			if err := h.saveSysctls(); err != nil {
				return err
			}
		}
	}
	if err := os.WriteFile(p, []byte(val), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, val, err)
	}
	h.writes++
	return nil
}

func (h *Host) sysctlFile() string { return filepath.Join(h.cfg.StateDir, "sysctl.json") }

func (h *Host) saveSysctls() error {
	keep := map[string]string{}
	for k, v := range h.sysctls {
		if !strings.HasPrefix(k, "net.ipv4.conf.gcbr") {
			keep[k] = v
		}
	}
	b, _ := json.Marshal(keep)
	if err := os.MkdirAll(h.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("state dir %s: %w", h.cfg.StateDir, err)
	}
	tmp := h.sysctlFile() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("saving sysctls: %w", err)
	}
	return os.Rename(tmp, h.sysctlFile())
}

func bridgeOf(s Segment) string { return netdev.BridgeName(s.VLAN) }

// Set converges the host to desired. Invalid input changes nothing. Otherwise every part is
// attempted; the error joins what failed (a missing guest port does not stop the rest) and a
// later Set retries it.
func (h *Host) Set(desired HostNetwork) error {
	d, err := desired.normalize()
	if err != nil {
		return fmt.Errorf("host network: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	startNL := h.nd.Changes
	h.writes = 0
	defer func() { h.last = h.nd.Changes - startNL + h.writes }()

	var errs []error
	phase, t0 := "validate", time.Now()
	mark := func(next string) {
		h.log.Debug("set phase", "phase", phase, "took", time.Since(t0))
		phase, t0 = next, time.Now()
	}
	defer mark("")
	depts := map[string]Department{}
	for _, dp := range d.Departments {
		depts[dp.Name] = dp
	}
	segs := map[string]Segment{}
	wantVLAN := map[uint16]Segment{}
	v6 := false
	for _, s := range d.Segments {
		segs[s.Name] = s
		wantVLAN[s.VLAN] = s
		v6 = v6 || s.IPv6.IsValid()
	}

	// 1. Forwarding on; bridges never answer ARP for addresses that are not theirs.
	if err := h.do(func() error {
		var e []error
		if len(d.Segments) > 0 {
			e = append(e, h.sysctl("net.ipv4.ip_forward", "1"))
			if v6 {
				e = append(e, h.sysctl("net.ipv6.conf.all.forwarding", "1"))
			}
			// The host's replies to a tenant (ICMP echo replies and errors, TCP resets and
			// SYN-ACKs) take the mark of the packet they answer: a tenant's packets carry
			// their department's (nftables), so the replies are routed in its table. The
			// main table has no segment routes.
			e = append(e, h.sysctl("net.ipv4.fwmark_reflect", "1"), h.sysctl("net.ipv4.tcp_fwmark_accept", "1"),
				h.sysctl("net.ipv6.fwmark_reflect", "1"))
		}
		return errors.Join(e...)
	}); err != nil {
		errs = append(errs, err)
	}

	mark("remove")
	// 2. Remove segments that are no longer wanted: trunk entry first (no traffic), then links.
	owned, err := h.nd.OwnedLinks()
	if err != nil {
		return err
	}
	gone := map[uint16]bool{}
	for name := range owned {
		if v, ok := netdev.SegmentVLAN(name); ok {
			if _, want := wantVLAN[v]; !want {
				gone[v] = true
			}
		}
	}
	segsInMap, err := h.tr.Segments()
	if err != nil {
		return err
	}
	for v := range segsInMap {
		if _, want := wantVLAN[v]; !want {
			gone[v] = true
		}
	}
	goneVLANs := sortedKeys(gone)
	for _, v := range goneVLANs {
		if _, ok := segsInMap[v]; ok {
			if err := h.tr.DeleteSegment(v); err != nil {
				errs = append(errs, err)
			}
			h.writes++
		}
	}
	// Links go first (one batch); their program links are then defunct and unpin cheaply.
	if err := h.nd.DeleteSegments(goneVLANs, h.do); err != nil {
		errs = append(errs, err)
	}
	for _, v := range goneVLANs {
		if err := h.tr.Detach(trunk.RoleSegment, netdev.TrunkPortName(v)); err != nil {
			errs = append(errs, err)
		}
		delete(h.attached, string(trunk.RoleSegment)+"/"+netdev.TrunkPortName(v))
	}

	mark("segments")
	if err := h.nd.Refresh(); err != nil {
		return errors.Join(append(errs, err)...)
	}
	defer h.nd.Forget()
	// 3. Segment links and gateway addresses.
	portIdx := map[uint16]int{}
	for _, s := range d.Segments {
		addrs := []netip.Prefix{netip.PrefixFrom(s.Gateway, s.IPv4.Bits())}
		if s.IPv6.IsValid() {
			addrs = append(addrs, netip.PrefixFrom(s.Gateway6, s.IPv6.Bits()))
		}
		idx, err := h.nd.EnsureSegment(netdev.BridgeSpec{VLAN: s.VLAN, MAC: d.GatewayMAC, Addrs: addrs})
		if err != nil {
			errs = append(errs, fmt.Errorf("segment %q: %w", s.Name, err))
			continue
		}
		portIdx[s.VLAN] = idx
	}
	if len(d.Segments) > 0 {
		if err := h.do(func() error {
			var e []error
			for _, s := range d.Segments {
				if _, ok := portIdx[s.VLAN]; ok {
					e = append(e, h.sysctl("net.ipv4.conf."+bridgeOf(s)+".arp_ignore", "1"))
				}
			}
			return errors.Join(e...)
		}); err != nil {
			errs = append(errs, err)
		}
	}

	mark("ports")
	// 4. Guest ports: local ones join their bridge; ports in our bridges that are no longer
	// wanted are released (not deleted: they belong to the compute agent).
	wantPort := map[string]string{}
	for _, g := range d.Guests {
		if g.Ifname != "" {
			wantPort[g.Ifname] = bridgeOf(segs[g.Segment])
		}
	}
	if links, err := h.nl.LinkList(); err != nil {
		errs = append(errs, fmt.Errorf("listing links: %w", err))
	} else {
		names := map[int]string{}
		for _, l := range links {
			names[l.Attrs().Index] = l.Attrs().Name
		}
		for _, m := range links {
			br := names[m.Attrs().MasterIndex]
			if v, ok := netdev.SegmentVLAN(br); !ok || br != netdev.BridgeName(v) {
				continue // not in one of our bridges
			}
			n := m.Attrs().Name
			if _, ours := netdev.SegmentVLAN(n); ours || wantPort[n] == br {
				continue
			}
			if err := h.nd.ReleasePort(m); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, g := range d.Guests {
		if g.Ifname == "" {
			continue
		}
		if _, ok := portIdx[segs[g.Segment].VLAN]; !ok {
			continue
		}
		if err := h.nd.EnsurePort(g.Ifname, bridgeOf(segs[g.Segment])); err != nil {
			errs = append(errs, fmt.Errorf("guest %s on segment %q: %w", g.Ifname, g.Segment, err))
		}
	}

	mark("neighbours")
	// 5. Permanent neighbours for every known guest (static FDB toward the trunk for remote
	// ones), so the distributed gateway never ARPs across the trunk.
	var neigh []netdev.Neighbor
	var bridges []string
	for _, s := range d.Segments {
		if _, ok := portIdx[s.VLAN]; ok {
			bridges = append(bridges, bridgeOf(s))
		}
	}
	for _, g := range d.Guests {
		s := segs[g.Segment]
		if _, ok := portIdx[s.VLAN]; !ok {
			continue
		}
		fdb := ""
		if g.Ifname == "" {
			fdb = netdev.BridgePortName(s.VLAN)
		}
		for _, a := range []netip.Addr{g.Addr, g.Addr6} {
			if a.IsValid() {
				neigh = append(neigh, netdev.Neighbor{Dev: bridgeOf(s), IP: a, MAC: g.MAC.String(), FDB: fdb})
				fdb = "" // one FDB entry per guest is enough
			}
		}
		if fdb != "" { // a remote guest without addresses still gets its FDB entry
			neigh = append(neigh, netdev.Neighbor{Dev: bridgeOf(s), MAC: g.MAC.String(), FDB: fdb})
		}
	}
	if err := h.nd.EnsureNeighbors(bridges, neigh); err != nil {
		errs = append(errs, err)
	}

	mark("routing")
	// 6. VRF-lite: a table per department, chosen by the bridge a packet came in on.
	var rules []netdev.Rule
	var routes []netdev.Route
	used := map[string]bool{}
	for _, s := range d.Segments {
		if _, ok := portIdx[s.VLAN]; !ok {
			continue
		}
		t := depts[s.Department].Table
		used[s.Department] = true
		for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
			rules = append(rules, netdev.Rule{Family: fam, IifName: bridgeOf(s), Table: t, Priority: h.cfg.RulePriority})
		}
		routes = append(routes, netdev.Route{Table: t, Dst: s.IPv4, Dev: bridgeOf(s), Src: s.Gateway})
		if s.IPv6.IsValid() {
			routes = append(routes, netdev.Route{Table: t, Dst: s.IPv6, Dev: bridgeOf(s), Src: s.Gateway6})
		}
	}
	for _, dp := range d.Departments {
		if used[dp.Name] {
			// Host replies to a tenant's connection carry the department's mark (nftables),
			// so they are routed in its table even when prefixes overlap across departments.
			for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
				rules = append(rules, netdev.Rule{Family: fam, Mark: uint32(dp.Table), Table: dp.Table, Priority: h.cfg.RulePriority})
			}
			v4 := netdev.Route{Table: dp.Table, Dst: netip.MustParsePrefix("0.0.0.0/0")}
			if dp.Egress.Is4() {
				v4.Dev, v4.Via = d.Uplink, dp.Egress
			}
			v6 := netdev.Route{Table: dp.Table, Dst: netip.MustParsePrefix("::/0")}
			if dp.Egress6.Is6() {
				v6.Dev, v6.Via = d.Uplink, dp.Egress6
			}
			routes = append(routes, v4, v6)
		}
	}
	if err := h.nd.EnsureRules(rules); err != nil {
		errs = append(errs, err)
	}
	if err := h.nd.EnsureRoutes(routes); err != nil {
		errs = append(errs, err)
	}

	mark("trunk")
	// 7. The trunk: uplink, VLAN map, programs.
	if err := h.setTrunk(d, segs, depts, portIdx); err != nil {
		errs = append(errs, err)
	}

	mark("nftables")
	// 8. nftables.
	if err := h.setFirewall(d, segs, depts, portIdx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (h *Host) setTrunk(d HostNetwork, segs map[string]Segment, depts map[string]Department, portIdx map[uint16]int) error {
	var errs []error
	upIdx := 0
	if d.Uplink != "" {
		up, err := h.nl.LinkByName(d.Uplink)
		if err != nil {
			errs = append(errs, fmt.Errorf("uplink %s: %w", d.Uplink, err))
		} else {
			upIdx = up.Attrs().Index
		}
	}
	if cur, err := h.tr.Uplink(); err != nil {
		errs = append(errs, err)
	} else if cur != upIdx {
		if err := h.tr.SetUplink(upIdx); err != nil {
			errs = append(errs, err)
		}
		h.writes++
	}
	have, err := h.tr.Segments()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	wantPorts := map[int]uint16{}
	for _, s := range d.Segments {
		idx, ok := portIdx[s.VLAN]
		if !ok {
			continue
		}
		want := trunk.Segment{VLAN: s.VLAN, Ifindex: idx, Department: depts[s.Department].ID, ID: s.ID, Gateway4: s.Gateway, Gateway6: s.Gateway6}
		wantPorts[idx] = s.VLAN
		if cur, ok := have[s.VLAN]; !ok || cur != want {
			if err := h.tr.SetSegment(want); err != nil {
				errs = append(errs, fmt.Errorf("segment %q: %w", s.Name, err))
			}
			h.writes++
		}
	}
	ports, err := h.tr.Ports()
	if err != nil {
		errs = append(errs, err)
	}
	for idx, v := range ports {
		if w, ok := wantPorts[idx]; !ok || w != v {
			if err := h.tr.DeletePort(idx); err != nil {
				errs = append(errs, err)
			}
			h.writes++
		}
	}
	for idx, v := range wantPorts {
		if ports[idx] != v {
			// SetSegment wrote it above unless the segment entry already matched.
			if err := h.tr.SetSegment(trunk.Segment{VLAN: v, Ifindex: idx, Department: have[v].Department, ID: have[v].ID, Gateway4: have[v].Gateway4, Gateway6: have[v].Gateway6}); err != nil {
				errs = append(errs, err)
			}
			h.writes++
		}
	}

	// Programs: attach what is missing or on a stale ifindex, detach what is not wanted.
	wantLinks := map[string]int{}
	if upIdx > 0 && len(d.Segments) > 0 {
		wantLinks[string(trunk.RoleUplink)+"/"+d.Uplink] = upIdx
	}
	for idx, v := range wantPorts {
		wantLinks[string(trunk.RoleSegment)+"/"+netdev.TrunkPortName(v)] = idx
	}
	attached, err := h.tr.Attached()
	if err != nil {
		errs = append(errs, err)
	}
	for role, names := range attached {
		for _, n := range names {
			key := string(role) + "/" + n
			if _, ok := wantLinks[key]; ok {
				continue
			}
			errs = append(errs, h.tr.Detach(role, n))
			delete(h.attached, key)
			h.writes++
		}
	}
	var todo []string
	for _, key := range sortedKeys(wantLinks) {
		idx := wantLinks[key]
		role, name, _ := strings.Cut(key, "/")
		if h.attached[key] == idx {
			if pinned, err := h.tr.AttachedIfindex(trunk.Role(role), name); err == nil && pinned == idx {
				continue
			}
		}
		todo = append(todo, key)
	}
	// Each TCX attach waits for an RCU grace period; concurrent attaches share them.
	const workers = 16
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < workers && w < len(todo); w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			err := h.do(func() error {
				var e []error
				for i := w; i < len(todo); i += workers {
					key := todo[i]
					role, name, _ := strings.Cut(key, "/")
					if err := h.tr.Attach(trunk.Role(role), name, wantLinks[key]); err != nil {
						e = append(e, err)
						continue
					}
					mu.Lock()
					h.attached[key] = wantLinks[key]
					h.writes++
					mu.Unlock()
				}
				return errors.Join(e...)
			})
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (h *Host) setFirewall(d HostNetwork, segs map[string]Segment, depts map[string]Department, portIdx map[uint16]int) error {
	var cfg firewall.Config
	byDept := map[string]*firewall.Department{}
	for _, dp := range d.Departments {
		cfg.Departments = append(cfg.Departments, firewall.Department{ID: dp.ID, Mark: uint32(dp.Table)})
	}
	for i := range cfg.Departments {
		for _, dp := range d.Departments {
			if dp.ID == cfg.Departments[i].ID {
				byDept[dp.Name] = &cfg.Departments[i]
			}
		}
	}
	for _, s := range d.Segments {
		fd := byDept[s.Department]
		fd.Bridges = append(fd.Bridges, bridgeOf(s))
		fd.Prefixes = append(fd.Prefixes, s.IPv4)
		if s.IPv6.IsValid() {
			fd.Prefixes = append(fd.Prefixes, s.IPv6)
		}
		cfg.Gateways = append(cfg.Gateways, firewall.Gateway{Bridge: bridgeOf(s), Addr: s.Gateway})
		if s.Gateway6.IsValid() {
			cfg.Gateways = append(cfg.Gateways, firewall.Gateway{Bridge: bridgeOf(s), Addr: s.Gateway6})
		}
	}
	for _, g := range d.Guests {
		if g.Ifname == "" {
			continue
		}
		p := firewall.Port{Ifname: g.Ifname, MAC: g.MAC, Dept: depts[segs[g.Segment].Department].ID}
		for _, a := range append([]netip.Addr{g.Addr, g.Addr6}, g.Serves...) {
			if a.IsValid() && !slices.Contains(p.Addrs, a) {
				p.Addrs = append(p.Addrs, a)
			}
		}
		cfg.Ports = append(cfg.Ports, p)
	}
	cfg.Management = slices.Clone(d.Management)
	if d.Uplink != "" {
		// The fabric the uplink is in holds every host's address (and the top-of-rack
		// router's): management, whichever host a guest sits on.
		up, err := h.nl.LinkByName(d.Uplink)
		if err != nil {
			return fmt.Errorf("uplink %s: %w", d.Uplink, err)
		}
		addrs, err := h.nl.AddrList(up, unix.AF_UNSPEC)
		if err != nil {
			return fmt.Errorf("addresses of uplink %s: %w", d.Uplink, err)
		}
		for _, a := range addrs {
			if p, ok := netipPrefix(a.IPNet); ok && !p.Addr().IsLinkLocalUnicast() {
				cfg.Management = append(cfg.Management, p.Masked())
			}
		}
	}
	for _, v := range d.VIPPorts {
		cfg.VIPPorts = append(cfg.VIPPorts, firewall.VIPPort{Bridge: bridgeOf(segs[v.Segment]), VIP: v.VIP, Proto: v.Proto, Port: v.Port})
	}
	cfg.TenantAllow = d.TenantAllow
	if len(d.Segments) == 0 && len(d.Guests) == 0 {
		// Nothing to protect: no tables at all.
		exists, err := firewall.Exists(h.nft)
		if err != nil || !exists {
			return err
		}
		h.writes++
		return firewall.Delete(h.nft)
	}
	plan, err := firewall.Build(cfg)
	if err != nil {
		return err
	}
	changed, err := firewall.Apply(h.nft, plan)
	if changed {
		h.writes++
	}
	return err
}

// Teardown removes everything this package made on the host (also what an earlier, crashed
// agent made): nftables tables, rules, routes, links, trunk pins, and restores sysctls it
// changed. Guest ports are released, not deleted.
func (h *Host) Teardown() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	t0 := time.Now()
	step := func(what string) {
		h.log.Debug("teardown step", "step", what, "took", time.Since(t0))
		t0 = time.Now()
	}
	errs = append(errs, firewall.Delete(h.nft))
	step("nftables")
	errs = append(errs, h.nd.EnsureRules(nil), h.nd.EnsureRoutes(nil))
	step("rules and routes")
	// Links first, in one batch; the pinned program links are defunct afterwards.
	errs = append(errs, h.nd.DeleteAll(h.do))
	step("links")
	if attached, err := h.tr.Attached(); err == nil {
		for role, names := range attached {
			for _, n := range names {
				errs = append(errs, h.tr.Detach(role, n))
			}
		}
	} else {
		errs = append(errs, err)
	}
	h.attached = map[string]int{}
	errs = append(errs, h.tr.Unpin())
	step("trunk pins")
	errs = append(errs, h.do(func() error {
		var e []error
		for k, v := range h.sysctls {
			if strings.HasPrefix(k, "net.ipv4.conf.gcbr") {
				continue // went with the bridge
			}
			p := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				e = append(e, fmt.Errorf("restoring sysctl %s=%s: %w", k, v, err))
			}
		}
		return errors.Join(e...)
	}))
	h.sysctls = map[string]string{}
	if err := os.Remove(h.sysctlFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Close tears the host network down (or, with Config.Keep, leaves it forwarding) and releases
// this process's handles.
func (h *Host) Close() error {
	var err error
	if !h.cfg.Keep {
		err = h.Teardown()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return errors.Join(err, h.tr.Close(), closeNL(h.nl))
}

func closeNL(nl *netlink.Handle) error { nl.Close(); return nil }

func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
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

// Drop is one department's nftables drops for one reason (firewall.Reasons); department 0
// is not attributable (tunnel packets from the fabric).
type Drop struct {
	Department uint32
	Reason     string
	Packets    uint64
	Bytes      uint64
}

// Drops reads the nftables drop counters. They carry on across Set (a replaced rule set
// starts from the old values) and restart from zero only when the tables are removed.
func (h *Host) Drops() ([]Drop, error) {
	cs, err := firewall.Counters(h.nftRead)
	if err != nil {
		return nil, err
	}
	out := make([]Drop, 0, len(cs))
	for name, c := range cs {
		if dept, reason, ok := firewall.ParseCounterName(name); ok {
			out = append(out, Drop{Department: dept, Reason: reason, Packets: c.Packets, Bytes: c.Bytes})
		}
	}
	slices.SortFunc(out, func(a, b Drop) int {
		if a.Department != b.Department {
			return int(a.Department) - int(b.Department)
		}
		return strings.Compare(a.Reason, b.Reason)
	})
	return out, nil
}

func sortedKeys[K interface{ ~string | ~uint16 | ~int }, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
