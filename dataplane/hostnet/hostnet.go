package hostnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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
	fwPlan   *firewall.Plan // the rule set last applied through nft (nil: unknown), what firewall.Update diffs against
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
	p := d.plan(h.cfg.RulePriority)
	h.mu.Lock()
	defer h.mu.Unlock()
	startNL := h.nd.Changes
	h.writes = 0
	defer func() { h.last = h.nd.Changes - startNL + h.writes }()

	var errs []error
	phase, t0 := "sysctls", time.Now()
	mark := func(next string) {
		h.log.Debug("set phase", "phase", phase, "took", time.Since(t0))
		phase, t0 = next, time.Now()
	}
	defer mark("")
	wantVLAN := map[uint16]bool{}
	for _, s := range p.Segments {
		wantVLAN[s.Bridge.VLAN] = true
	}

	// 1. Host-wide sysctls.
	if err := h.do(func() error { return h.setSysctls(p.Sysctls) }); err != nil {
		errs = append(errs, err)
	}

	mark("remove")
	// 2. Remove segments that are no longer wanted: trunk entry first (no traffic), then links.
	owned, err := h.nd.OwnedLinks()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	gone := map[uint16]bool{}
	for name := range owned {
		if v, ok := netdev.SegmentVLAN(name); ok && !wantVLAN[v] {
			gone[v] = true
		}
	}
	segsInMap, err := h.tr.Segments()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for v := range segsInMap {
		if !wantVLAN[v] {
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
	// 3. Segment links, gateway addresses and bridge sysctls. What depends on a segment that
	// could not be made is left out below (made).
	portIdx := map[uint16]int{}
	made := map[string]bool{}    // bridge names
	madeTables := map[int]bool{} // department tables with a made segment
	tableOf := map[string]int{}
	for _, dp := range d.Departments {
		tableOf[dp.Name] = dp.Table
	}
	var bridgeSysctls []Sysctl
	for _, s := range p.Segments {
		idx, err := h.nd.EnsureSegment(s.Bridge)
		if err != nil {
			errs = append(errs, fmt.Errorf("segment %q: %w", s.Name, err))
			continue
		}
		portIdx[s.Bridge.VLAN] = idx
		made[netdev.BridgeName(s.Bridge.VLAN)] = true
		madeTables[tableOf[s.Department]] = true
		bridgeSysctls = append(bridgeSysctls, s.Sysctls...)
	}
	if err := h.do(func() error { return h.setSysctls(bridgeSysctls) }); err != nil {
		errs = append(errs, err)
	}

	mark("ports")
	// 4. Guest ports: local ones join their bridge; ports in our bridges that are no longer
	// wanted are released (not deleted: they belong to the compute agent).
	wantPort := map[string]string{}
	for _, g := range p.Ports {
		wantPort[g.Ifname] = g.Bridge
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
	for _, g := range p.Ports {
		if !made[g.Bridge] {
			continue
		}
		if err := h.nd.EnsurePort(g.Ifname, g.Bridge); err != nil {
			errs = append(errs, &PortError{Ifname: g.Ifname, Segment: g.Segment, Err: err})
		}
	}

	mark("neighbours")
	// 5. Permanent neighbours on the bridges that exist.
	bridges := sortedKeys(made)
	var neigh []netdev.Neighbor
	for _, n := range p.Neighbors {
		if made[n.Dev] {
			neigh = append(neigh, n)
		}
	}
	if err := h.nd.EnsureNeighbors(bridges, neigh); err != nil {
		errs = append(errs, err)
	}

	mark("routing")
	// 6. VRF-lite rules and routes of the segments (and departments) that exist.
	var rules []netdev.Rule
	for _, r := range p.Rules {
		if made[r.IifName] || (r.IifName == "" && madeTables[r.Table]) {
			rules = append(rules, r)
		}
	}
	var routes []netdev.Route
	for _, r := range p.Routes {
		if _, bridge := netdev.SegmentVLAN(r.Dev); (bridge && made[r.Dev]) || (!bridge && madeTables[r.Table]) {
			routes = append(routes, r)
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
	if err := h.setTrunk(d, p, portIdx); err != nil {
		errs = append(errs, err)
	}

	mark("nftables")
	// 8. nftables.
	if err := h.setFirewall(d, p); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// setSysctls sets each of ss (in the calling thread's namespace: run it through h.do).
func (h *Host) setSysctls(ss []Sysctl) error {
	var e []error
	for _, s := range ss {
		e = append(e, h.sysctl(s.Key, s.Value))
	}
	return errors.Join(e...)
}

func (h *Host) setTrunk(d HostNetwork, p *Plan, portIdx map[uint16]int) error {
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
	for _, s := range p.Segments {
		idx, ok := portIdx[s.Bridge.VLAN]
		if !ok {
			continue
		}
		want := s.Trunk
		want.Ifindex = idx
		wantPorts[idx] = want.VLAN
		if cur, ok := have[want.VLAN]; !ok || cur != want {
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
	policed, err := h.setRates(p)
	errs = append(errs, err)
	for name, idx := range policed {
		wantLinks[string(trunk.RoleGuestTX)+"/"+name] = idx
		wantLinks[string(trunk.RoleGuestRX)+"/"+name] = idx
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

// setRates converges the trunk's bandwidth limits and policed guest ports to p, and returns
// the policed ports that exist (name -> ifindex), which then need their programs. A limit
// change rewrites only the rate: the buckets, and the flows through them, carry on.
func (h *Host) setRates(p *Plan) (map[string]int, error) {
	var errs []error
	have, err := h.tr.Rates()
	if err != nil {
		return nil, err
	}
	want := map[uint32]bool{}
	for _, r := range p.Rates {
		want[r.ID] = true
		if have[r.ID] != r.Rate {
			if err := h.tr.SetRate(r.ID, r.Rate); err != nil {
				errs = append(errs, fmt.Errorf("department %q: %w", r.Department, err))
			}
			h.writes++
		}
	}
	for id := range have {
		if !want[id] {
			errs = append(errs, h.tr.SetRate(id, trunk.Rate{}))
			h.writes++
		}
	}

	policed := map[string]int{}
	wantPorts := map[int]trunk.GuestPort{}
	for _, g := range p.Policed {
		l, err := h.nl.LinkByName(g.Ifname)
		if err != nil {
			continue // not there (yet): Set reports the missing port with the bridge ports
		}
		policed[g.Ifname] = l.Attrs().Index
		wantPorts[l.Attrs().Index] = g.Port
	}
	cur, err := h.tr.Guests()
	if err != nil {
		return policed, errors.Join(append(errs, err)...)
	}
	for idx := range cur {
		if _, ok := wantPorts[idx]; !ok {
			errs = append(errs, h.tr.DeleteGuest(idx))
			h.writes++
		}
	}
	for idx, g := range wantPorts {
		if c, ok := cur[idx]; !ok || c != g {
			if err := h.tr.SetGuest(idx, g); err != nil {
				errs = append(errs, err)
			}
			h.writes++
		}
	}
	return policed, errors.Join(errs...)
}

func (h *Host) setFirewall(d HostNetwork, p *Plan) error {
	cfg := p.Firewall
	cfg.Management = slices.Clone(cfg.Management)
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
			if p, ok := netdev.PrefixOf(a.IPNet); ok && !p.Addr().IsLinkLocalUnicast() {
				cfg.Management = append(cfg.Management, p.Masked())
			}
		}
	}
	if len(d.Segments) == 0 && len(d.Guests) == 0 {
		// Nothing to protect: no tables at all.
		exists, err := firewall.Exists(h.nft)
		if err != nil || !exists {
			return err
		}
		h.writes++
		h.fwPlan = nil
		return firewall.Delete(h.nft)
	}
	plan, err := firewall.Build(cfg)
	if err != nil {
		return err
	}
	changed, err := firewall.Update(h.nft, h.fwPlan, plan)
	if changed {
		h.writes++
	}
	h.fwPlan = plan
	if err != nil {
		h.fwPlan = nil // unknown: the next Set replaces both tables
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
	h.mu.Lock()
	keep := h.cfg.Keep
	h.mu.Unlock()
	if !keep {
		err = h.Teardown()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return errors.Join(err, h.tr.Close(), closeNL(h.nl))
}

// SetKeep changes what Close does (Config.Keep): the agent opens the host network to keep it,
// so a start that fails leaves it forwarding, and asks for its removal only when an operator
// stops it.
func (h *Host) SetKeep(keep bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cfg.Keep = keep
}

func closeNL(nl *netlink.Handle) error { nl.Close(); return nil }

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
