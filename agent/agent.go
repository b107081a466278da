// Package agent is the host agent's reconcile loop. It takes its host's desired state from
// the controller (long-poll), makes it real through the dataplane — the host network
// (segments, trunk, VRF-lite, isolation), the XDP load balancer and the routes that deliver
// VIP traffic to local backends — runs the backends' health checks, and reports status back.
// Every pass is level-triggered: the whole desired state is applied, so a restarted agent
// converges from whatever it finds. With the controller away nothing changes (fail-static);
// the agent resyncs when it returns.
package agent

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/govcloud/govcloud/controlplane/bgp"
	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
	"github.com/govcloud/govcloud/controlplane/lbtables"
	"github.com/govcloud/govcloud/dataplane/hostnet"
	"github.com/govcloud/govcloud/dataplane/lbmap"
	"github.com/govcloud/govcloud/dataplane/viproute"
	"github.com/govcloud/govcloud/lb"
)

// Controller is what the agent needs from the controller; *client.Client implements it.
type Controller interface {
	Desired(ctx context.Context, host string, after int64, timeout time.Duration) (*desired.State, error)
	PutHostStatus(ctx context.Context, host string, status any) error
	// PeerHealth is the peers' reports pruned to this host's needs (client.Client.PeerHealth).
	PeerHealth(ctx context.Context, host string) (map[string]hoststatus.Backends, error)
}

// Config says how an agent runs. The dataplane comes in through interfaces built by the
// caller (cmd/govcloud: hostnet.Host, lbmap.Dataplane, viproute.Routes, a gobgp speaker; unit
// tests: the fakes beside those packages); the agent builds no dataplane object itself and closes
// what it is given on Close.
type Config struct {
	Host       string
	Controller Controller
	Log        *slog.Logger
	// Version is this agent's build as reported in its status (buildinfo.Info.Short).
	Version string
	// HostNet is the host network: segments, trunk, VRF-lite, isolation.
	HostNet hostnet.Network
	// LB is the XDP load balancer on the uplink.
	LB LoadBalancer
	// Routes are the routes delivering decapsulated VIP traffic to local backends.
	Routes VIPRoutes
	// Speaker advertises VIPs to the fabric; nil runs without BGP.
	Speaker bgp.Speaker
	// Keep leaves the dataplane forwarding on Close (an upgrade) instead of removing it.
	Keep bool
	// PollTimeout is the long-poll length (default 25s).
	PollTimeout time.Duration
	// PeerPoll is how often remote backends' health is read (default 1s).
	PeerPoll time.Duration
	// Management are management prefixes besides every host's fabric address and the
	// uplink's prefixes (the controller, the top-of-rack router's other addresses):
	// unreachable from every department.
	Management []netip.Prefix
	// TenantAllow are explicit exceptions for tenants (e.g. DNS on udp:192.0.2.53:53).
	TenantAllow []hostnet.TenantAllow
	// Tables fetches the controller's shared Maglev tables (issue 19; *client.Client
	// implements it). nil: every VIP's table is built from this host's own history.
	Tables TableSource
	// DeviceChanges is signalled when a guest port appears on the host (netdev.WatchNewLinks):
	// a pass that did not converge, waiting for that port, is retried at once instead of at its
	// backoff. nil: backoff only.
	DeviceChanges <-chan struct{}
	// LocalTables keeps the history-dependent tables although Tables is set: the shared
	// tables are fetched and compared (status, mismatch) but not written, and advertising is
	// not gated on them. For comparison runs.
	LocalTables bool
}

// TableSource is where the agent fetches the shared Maglev tables; *client.Client implements
// it (POST /v1/hosts/{name}/lbtables).
type TableSource interface {
	LBTables(ctx context.Context, host string, req lbtables.FetchRequest) (*lbtables.FetchResponse, error)
}

// tableReader is implemented by load balancers that can read back a VIP's programmed table
// as backend keys per slot (*lbmap.Dataplane): with it, local tables are compared with the
// shared ones.
type tableReader interface {
	TableKeys(v lb.VIP) []string
}

// LoadBalancer is the XDP load balancer as the agent drives it; *lbmap.Dataplane implements
// it, lbmap.Fake stands in for it in unit tests. Every setter takes the whole desired value.
type LoadBalancer interface {
	// AttachUplink puts the load-balancing program on the interface (a no-op where it is
	// already; another interface moves it).
	AttachUplink(ifname string) error
	// DetachUplink takes the program off the uplink (none attached: a no-op).
	DetachUplink() error
	// SetConfig sets the tunnel and SNAT sources (the host's fabric address).
	SetConfig(lbmap.Config) error
	// SetDecapAddrs sets this host's tunnel endpoints.
	SetDecapAddrs([]netip.Addr) error
	// SetTunnelSources sets the hosts whose tunnels are decapsulated.
	SetTunnelSources([]netip.Addr) error
	// SetLocalVIPs sets the VIPs a decapsulated packet may be for.
	SetLocalVIPs([]lbmap.LocalVIP) error
	// SetVLANDomains maps VLAN IDs to routing domains (department tables).
	SetVLANDomains(map[uint16]uint32) error
	// UplinkVLAN says how the attached uplink hands VLAN tags to the program ("": not attached).
	UplinkVLAN() string
	// ExpireFlows deletes connection-table entries past their life at now (CLOCK_MONOTONIC,
	// lbmap.MonotonicNow) and returns how many.
	ExpireFlows(now time.Duration) (int, error)
	// Set programs the services.
	Set([]lb.Service) error
	// Unpin removes the pinned maps (a shutdown that does not keep the dataplane).
	Unpin() error
	// Close releases the process's handles; pinned state keeps forwarding.
	Close() error
}

// VIPRoutes are the routes from VIPs to local backends; *viproute.Routes implements it,
// viproute.Fake stands in for it in unit tests.
type VIPRoutes interface {
	// Set makes the routes exactly want (VIP -> next hops); nil removes them all.
	Set(want map[netip.Addr][]viproute.NextHop) error
	// Close releases the handle; the routes stay.
	Close() error
}

// healthChecks runs the backends' health checks; *Checker implements it.
type healthChecks interface {
	Set(targets []probeTarget)
	Healthy(k hoststatus.BackendKey) bool
	States() hoststatus.Backends
	Changed() <-chan struct{}
	Close()
}

// Defaults of the agent command (cmd/govcloud).
const (
	DefaultPinRoot  = "/sys/fs/bpf/govcloud"
	DefaultStateDir = "/run/govcloud/agent"
)

// Agent is one host's agent.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	hn      hostnet.Network
	lb      LoadBalancer
	routes  VIPRoutes
	speaker bgp.Speaker
	checks  healthChecks
	// resolve makes the kernel resolve a tunnel endpoint's neighbour entry (nudgeNeighbour).
	resolve func(netip.Addr)

	mu         sync.Mutex
	last       *desired.State
	remoteDown map[hoststatus.BackendKey]bool
	// Checked backends placed on other hosts (remoteSeen), and when each was first seen after
	// the first pass (unconfirmed): such a backend is new, and its host reports it down ("not
	// checked yet") only once it has taken the same desired state. It counts as down until a
	// peer read that began peerSettle after it appeared (then it is whatever its host says), so
	// a new VIP is not announced on a peer's backend nobody checked and withdrawn a moment
	// later, which the speaker's hold-down would then keep out for 2 s.
	remoteSeen        map[hoststatus.BackendKey]bool
	remoteUnconfirmed map[hoststatus.BackendKey]time.Time
	remoteSeeded      bool
	status            hoststatus.Status
	reported          []byte             // the last report the controller took (sender only)
	reports           chan struct{}      // while Run runs: a report waits in unsent
	unsent            *hoststatus.Status // the newest report not sent yet
	nudged            map[netip.Addr]time.Time
	hnWrites          uint64         // host network writes summed over passes (hostnet reports per Set)
	hnConverged       *desired.State // the desired state whose host network the last Set made whole (Run's goroutine only)
	wake              chan struct{}  // Reconnect: end the controller watch's backoff now

	// holder is this host's copy of the shared tables; programmed the services last written
	// (a service whose table cannot be verified keeps what it had).
	holder     *lbtables.Holder
	programmed map[string]lb.Service
}

// New returns an agent on the dataplane cfg gives, without changing anything yet. Errors:
// no host name, or no host network, load balancer or VIP routes.
func New(cfg Config) (*Agent, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.Host == "":
		return nil, errors.New("agent: no host name")
	case cfg.HostNet == nil:
		return nil, fmt.Errorf("agent %s: no host network", cfg.Host)
	case cfg.LB == nil:
		return nil, fmt.Errorf("agent %s: no load balancer", cfg.Host)
	case cfg.Routes == nil:
		return nil, fmt.Errorf("agent %s: no VIP routes", cfg.Host)
	}
	if cfg.PollTimeout == 0 {
		cfg.PollTimeout = 25 * time.Second
	}
	if cfg.PeerPoll == 0 {
		cfg.PeerPoll = time.Second
	}
	var speaker bgp.Speaker
	if cfg.Speaker != nil {
		speaker = guardSpeaker(cfg.Speaker) // a wedged peer cannot stall reconcile
	}
	return &Agent{cfg: cfg, log: cfg.Log, hn: cfg.HostNet, lb: cfg.LB, routes: cfg.Routes, speaker: speaker,
		checks: NewChecker(cfg.Log), resolve: nudgeNeighbour,
		remoteDown: map[hoststatus.BackendKey]bool{}, remoteSeen: map[hoststatus.BackendKey]bool{}, remoteUnconfirmed: map[hoststatus.BackendKey]time.Time{}, nudged: map[netip.Addr]time.Time{}, wake: make(chan struct{}, 1),
		holder: lbtables.NewHolder(), programmed: map[string]lb.Service{}}, nil
}

// Reconnect makes the watch of the controller try again at once instead of after its backoff
// (the controller's URL changed: cmd/govcloud's SIGHUP with --controller-file).
func (a *Agent) Reconnect() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Desired returns the last desired state (nil before the first): names for the meters.
func (a *Agent) Desired() *desired.State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// Status returns the last status.
func (a *Agent) Status() hoststatus.Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status
}

// Run reconciles until ctx ends. Errors talking to the controller are retried with backoff;
// the dataplane keeps what it has meanwhile.
func (a *Agent) Run(ctx context.Context) error {
	states := make(chan *desired.State)
	go a.watch(ctx, states)
	reports := make(chan struct{}, 1)
	a.mu.Lock()
	a.reports = reports
	a.mu.Unlock()
	var sender sync.WaitGroup
	sender.Add(1)
	go func() { defer sender.Done(); a.sendReports(ctx, reports) }()
	defer func() {
		sender.Wait() // no send in flight once Run returns (ctx has ended)
		a.mu.Lock()
		a.reports = nil
		a.mu.Unlock()
	}()
	kick := make(chan struct{}, 1)
	go a.watchPeers(ctx, kick)
	resync := time.NewTicker(30 * time.Second) // level-triggered: re-apply even without news
	defer resync.Stop()
	// Connection-table entries past their life are ignored by the program at once; this
	// frees their room (FIN/RST entries live lbmap.FlowLifeClose).
	expire := time.NewTicker(lbmap.FlowLifeClose)
	defer expire.Stop()
	// A pass that did not converge (a guest port not there yet, a device busy) is retried
	// soon, backing off to 10 s.
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	backoff := 500 * time.Millisecond
	converged := true
	for {
		// A backend's health, here or in a peer's report, changes what the load balancer
		// does, never the host network: such a pass leaves out a host network that the last
		// pass made whole for the same desired state (at scale that step took 0.3-3 s a pass).
		healthOnly := false
		select {
		case <-ctx.Done():
			return nil
		case <-a.cfg.DeviceChanges: // nil: never
			// A guest port re-made behind a converged host network (its VM re-created by
			// compute) gets its guards from the next pass that sets the host network: the
			// health flap that follows must not leave it out.
			a.hnConverged = nil
			if converged {
				continue
			}
		case st := <-states:
			a.mu.Lock()
			a.last = st
			a.mu.Unlock()
		case <-kick:
			healthOnly = true
		case <-a.checks.Changed():
			healthOnly = true
		case <-resync.C:
		case <-retry.C:
		case <-expire.C:
			if n, err := a.lb.ExpireFlows(lbmap.MonotonicNow()); err != nil {
				a.log.Warn("expiring connection-table entries", "err", err)
			} else if n > 0 {
				a.log.Debug("expired connection-table entries", "flows", n)
			}
			continue
		}
		a.mu.Lock()
		st := a.last
		a.mu.Unlock()
		if st == nil {
			continue
		}
		if converged = a.pass(ctx, st, !healthOnly); converged {
			backoff = 500 * time.Millisecond
			retry.Stop()
		} else {
			retry.Reset(backoff)
			backoff = min(backoff*2, 10*time.Second)
		}
	}
}

func (a *Agent) watch(ctx context.Context, out chan<- *desired.State) {
	var rev int64
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		st, err := a.cfg.Controller.Desired(ctx, a.cfg.Host, rev, a.cfg.PollTimeout)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			a.log.Warn("controller unreachable; dataplane unchanged (fail-static)", "err", err, "retry", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
				backoff = min(backoff*2, 10*time.Second)
			case <-a.wake:
				backoff = 200 * time.Millisecond
			}
			continue
		}
		backoff = 200 * time.Millisecond
		if st == nil {
			continue // nothing new
		}
		rev = st.Revision
		select {
		case out <- st:
		case <-ctx.Done():
			return
		}
	}
}

// watchPeers reads other agents' reports for backends they found down, every PeerPoll, and
// kicks a pass when that changes.
func (a *Agent) watchPeers(ctx context.Context, kick chan<- struct{}) {
	t := time.NewTicker(a.cfg.PeerPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if a.pollPeers(ctx) {
			select {
			case kick <- struct{}{}:
			default:
			}
		}
	}
}

// pollPeers reads the peers' reports once and says whether the backends they hold down
// changed. A controller that does not answer changes nothing.
func (a *Agent) pollPeers(ctx context.Context) bool {
	began := time.Now()
	hosts, err := a.cfg.Controller.PeerHealth(ctx, a.cfg.Host)
	if err != nil {
		return false
	}
	a.mu.Lock()
	placed := placedBackends(a.last)
	a.mu.Unlock()
	down := peersDown(hosts, a.cfg.Host, placed)
	a.mu.Lock()
	defer a.mu.Unlock()
	changed := !reflect.DeepEqual(down, a.remoteDown)
	a.remoteDown = down
	for k, seen := range a.remoteUnconfirmed {
		if began.Sub(seen) >= peerSettle {
			delete(a.remoteUnconfirmed, k)
			changed = true
		}
	}
	return changed
}

// peerSettle is how long after a new remote backend appears a peer read must begin to count
// for it: time for its host to take the same desired state and report it unchecked.
const peerSettle = 300 * time.Millisecond

// trackRemote notes the checked backends st places on other hosts; those first seen after the
// first pass are unconfirmed until a peer read confirms them (pollPeers). A backend of a
// service without a health check is never reported, and never unconfirmed.
func (a *Agent) trackRemote(st *desired.State) {
	checked := map[hoststatus.BackendKey]bool{}
	for _, svc := range st.Services {
		if svc.HealthCheck == nil || len(svc.Ports) == 0 { // what healthTargets leaves out
			continue
		}
		for _, b := range svc.Backends {
			if b.Address.IsValid() && b.Host != "" && b.Host != a.cfg.Host {
				checked[hoststatus.BackendKey{Service: svc.Name, Addr: b.Address}] = true
			}
		}
	}
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for k := range checked {
		if !a.remoteSeen[k] {
			a.remoteSeen[k] = true
			if a.remoteSeeded {
				a.remoteUnconfirmed[k] = now
			}
		}
	}
	for k := range a.remoteSeen {
		if !checked[k] {
			delete(a.remoteSeen, k)
			delete(a.remoteUnconfirmed, k)
		}
	}
	a.remoteSeeded = true
}

// peersDown reads the peers' health reports (host -> backends it found down) for backends they
// found down. A peer's word counts only for backends placed on that peer (placed: backend ->
// host), so no host can take another host's backends out.
func peersDown(hosts map[string]hoststatus.Backends, self string, placed map[hoststatus.BackendKey]string) map[hoststatus.BackendKey]bool {
	down := map[hoststatus.BackendKey]bool{}
	for h, backends := range hosts {
		if h == self {
			continue
		}
		for k, health := range backends {
			if !health.Up && placed[k] == h {
				down[k] = true
			}
		}
	}
	return down
}

// placedBackends maps each backend the desired state places on a host to that host; plain
// address backends (checked by every host itself) are left out.
func placedBackends(st *desired.State) map[hoststatus.BackendKey]string {
	out := map[hoststatus.BackendKey]string{}
	if st == nil {
		return out
	}
	for _, svc := range st.Services {
		for _, b := range svc.Backends {
			if b.Address.IsValid() && b.Host != "" {
				out[hoststatus.BackendKey{Service: svc.Name, Addr: b.Address}] = b.Host
			}
		}
	}
	return out
}

func (a *Agent) healthy(k hoststatus.BackendKey) bool {
	a.mu.Lock()
	_, unconfirmed := a.remoteUnconfirmed[k]
	down := a.remoteDown[k] || unconfirmed
	a.mu.Unlock()
	return !down && a.checks.Healthy(k)
}

// apply makes one pass over the whole desired state, one step per part of the dataplane,
// reports the outcome and says whether everything converged.
func (a *Agent) apply(ctx context.Context, st *desired.State) bool { return a.pass(ctx, st, true) }

// pass is apply, leaving out the host network when hostNetwork is false and the last pass
// that set it converged it for this same desired state (hnConverged).
func (a *Agent) pass(ctx context.Context, st *desired.State, hostNetwork bool) bool {
	start := time.Now()
	status := hoststatus.Status{Host: a.cfg.Host, Version: a.cfg.Version, Revision: st.Revision, Uplink: st.Uplink, Segments: map[string]string{}, Services: map[string]string{}}
	var errs []error
	a.trackRemote(st)

	var hnErr error
	if hostNetwork || a.hnConverged != st {
		hnErr = a.setHostNetwork(st)
		a.hnConverged = nil
		if hnErr == nil {
			a.hnConverged = st
		}
	}
	// A guest port that is missing (its VM not made yet, or broken) is that guest's fault: the
	// segments are ready once everything else of the host network is.
	portErrs, segErr := hostnet.SplitPortErrors(hnErr)
	// A VM asked to be stopped has no port (libvirt keeps its domain defined, without a tap):
	// that is its state, not a fault. Its guest stays in the plan, so its guards and
	// anti-spoofing are in place when it starts.
	off := map[string]bool{} // stopped VMs whose port is gone
	if stopped := stoppedPorts(st); len(stopped) > 0 {
		var rest []error
		for name, pe := range portErrs {
			if vm, ok := stopped[name]; ok {
				off[vm] = true
				delete(portErrs, name)
				continue
			}
			rest = append(rest, pe)
		}
		hnErr = errors.Join(append([]error{segErr}, rest...)...)
	}
	for _, s := range st.Segments {
		status.Segments[s.Name] = readiness(segErr)
	}
	status.Guests = guestReadiness(st, segErr, portErrs, off)
	if hnErr != nil {
		errs = append(errs, fmt.Errorf("host network: %w", hnErr))
	}

	self := st.Address
	xdp := a.attachXDP(st.Uplink)
	status.XDP = xdp.String()
	if v := a.lb.UplinkVLAN(); xdp.attached() && v != "" {
		status.XDP += "; " + v
	}
	if xdp.err != nil {
		errs = append(errs, xdp.err)
	}
	errs = append(errs, a.setEncapsulation(self)...)
	errs = append(errs, a.setDecapPolicy(st, self)...)
	a.checks.Set(probeTargets(st))
	plan, perrs := a.plan(st, self)
	errs = append(errs, perrs...)
	tables, tablesErr := a.sharedTables(ctx, st.Revision, &plan)
	if tablesErr != nil {
		errs = append(errs, tablesErr)
	}
	if err := a.lb.SetVLANDomains(plan.vlanDomain); err != nil {
		errs = append(errs, err)
	}
	lbErr := a.setServices(plan)
	if lbErr != nil {
		errs = append(errs, lbErr)
	} else {
		a.programmed = make(map[string]lb.Service, len(plan.services))
		for _, s := range plan.services {
			a.programmed[s.Name] = s
		}
		a.compareLocalTables(plan, tables)
	}
	if a.cfg.Tables != nil {
		status.Tables, status.TablesMode = tables, "shared"
		if a.cfg.LocalTables {
			status.TablesMode = "local"
		}
	}
	routeErr := a.setVIPRoutes(plan)
	if routeErr != nil {
		errs = append(errs, routeErr)
	}
	for _, svc := range st.Services {
		status.Services[svc.Name] = readiness(errors.Join(lbErr, routeErr))
	}
	for _, v := range plan.advertise {
		status.Advertise = append(status.Advertise, v.String())
	}
	a.nudgeNeighbours(plan, self)
	if a.speaker != nil {
		// VIPs are advertised only while this host's load balancer can take their traffic.
		if err := a.setBGP(st, plan, xdp.attached() && lbErr == nil); err != nil {
			errs = append(errs, err)
		}
		status.BGP = a.speaker.Status()
	}

	status.Backends = a.checks.States()
	for _, d := range st.Departments {
		status.Departments = append(status.Departments, d.Name)
	}
	slices.Sort(status.Departments)
	status.Writes = a.writes()
	status.Connections = a.activeConnections(plan)
	status.Ready = len(errs) == 0
	if err := errors.Join(errs...); err != nil {
		status.Error = err.Error()
		a.log.Error("reconcile incomplete", "revision", st.Revision, "err", err)
	} else {
		a.log.Debug("reconciled", "revision", st.Revision, "took", time.Since(start))
	}
	a.report(ctx, status)
	return status.Ready
}

// setHostNetwork converges segments, trunk, VRF-lite and isolation, with the configured
// management prefixes and tenant exceptions added to the desired state's.
func (a *Agent) setHostNetwork(st *desired.State) error {
	hn, err := hostNetwork(st)
	if err != nil {
		return err
	}
	for _, p := range a.cfg.Management {
		if !slices.Contains(hn.Management, p) {
			hn.Management = append(hn.Management, p)
		}
	}
	hn.TenantAllow = a.cfg.TenantAllow
	err = a.hn.Set(hn)
	if c, ok := a.hn.(interface{ Changes() int }); ok {
		a.mu.Lock()
		a.hnWrites += uint64(c.Changes())
		a.mu.Unlock()
	}
	return err
}

// writes is the status's Writes: the dataplane writes since the agent started, by part, for
// the parts that count them (hostnet.Host, lbmap.Dataplane, viproute.Routes).
func (a *Agent) writes() map[string]uint64 {
	out := map[string]uint64{}
	a.mu.Lock()
	if _, ok := a.hn.(interface{ Changes() int }); ok {
		out["hostnet"] = a.hnWrites
	}
	a.mu.Unlock()
	if w, ok := a.lb.(interface{ Writes() uint64 }); ok {
		out["lb"] = w.Writes()
	}
	if w, ok := a.routes.(interface{ Writes() uint64 }); ok {
		out["routes"] = w.Writes()
	}
	return out
}

// xdpState is where a pass left the load balancer's XDP program: uplink is the interface the
// desired state names ("": none, nothing attached by this pass), err why attaching failed.
type xdpState struct {
	uplink string
	err    error
}

// attached reports whether the program is on the desired uplink.
func (x xdpState) attached() bool { return x.uplink != "" && x.err == nil }

// String is the status report's form: "attached to <uplink>", "not attached: <reason>", or
// "" without an uplink.
func (x xdpState) String() string {
	switch {
	case x.uplink == "":
		return ""
	case x.err != nil:
		return "not attached: " + x.err.Error()
	default:
		return "attached to " + x.uplink
	}
}

// attachXDP puts the load balancer on the uplink (once; a pinned link of an earlier agent is
// updated in place). Without an uplink nothing is attached or moved.
func (a *Agent) attachXDP(uplink string) xdpState {
	if uplink == "" {
		return xdpState{}
	}
	return xdpState{uplink: uplink, err: a.lb.AttachUplink(uplink)}
}

// setEncapsulation makes this host's fabric address the source of its tunnels and SNAT, and
// its tunnel endpoint.
func (a *Agent) setEncapsulation(self netip.Addr) []error {
	var errs []error
	cfg := lbmap.Config{}
	if self.Is4() {
		cfg.EncapSource4, cfg.SNATSource4 = self, self
	} else if self.Is6() {
		cfg.EncapSource6, cfg.SNATSource6 = self, self
	}
	if err := a.lb.SetConfig(cfg); err != nil {
		errs = append(errs, err)
	}
	var decap []netip.Addr
	if self.IsValid() {
		decap = append(decap, self)
	}
	if err := a.lb.SetDecapAddrs(decap); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// setDecapPolicy sets which tunnels the load balancer decapsulates (decapPolicy).
func (a *Agent) setDecapPolicy(st *desired.State, self netip.Addr) []error {
	srcs, locals, errs := decapPolicy(st, self)
	if err := a.lb.SetTunnelSources(srcs); err != nil {
		errs = append(errs, err)
	}
	if err := a.lb.SetLocalVIPs(locals); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// plan turns the desired services into the load balancer's, the VIP routes and the VIPs to
// advertise, leaving out backends that are down.
func (a *Agent) plan(st *desired.State, self netip.Addr) (lbPlan, []error) {
	hostAddr := func(h string) (netip.Addr, bool) {
		if h == st.Host && self.IsValid() {
			return self, true
		}
		ad := st.Hosts[h]
		return ad, ad.IsValid()
	}
	return loadBalancing(st, self, a.healthy, hostAddr)
}

// sharedTables brings the held shared tables up to the desired state's revision (fetching
// what is missing, verified by hash) and gives each LB service of plan its table. A service
// whose table is missing or does not know one of its backends (the controller's tables lag
// the desired state) keeps what was last written for it, or is left out when new; a VIP is
// advertised only when each of its services has a verified table written (now or before), so
// a restarted or new host advertises only VIPs whose tables are the controller's. With
// LocalTables nothing in plan changes. It returns the status of each table and why some are
// not verified. Without Tables it does nothing.
func (a *Agent) sharedTables(ctx context.Context, rev int64, plan *lbPlan) (map[string]hoststatus.LBTable, error) {
	if a.cfg.Tables == nil {
		return nil, nil
	}
	var errs []error
	need := a.holder.Revision < rev
	for _, s := range plan.services {
		need = need || a.holder.Tables[s.Name] == nil
	}
	// Twice at most: a table whose delta fails its hash is asked for whole the second time.
	for try := 0; need && try < 2; try++ {
		fctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		req := a.holder.Request(rev)
		req.WaitMs = 5000
		resp, err := a.cfg.Tables.LBTables(fctx, a.cfg.Host, req)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("maglev tables: fetch: %w", err))
			break
		}
		ferrs := a.holder.Apply(resp)
		if len(ferrs) == 0 {
			if resp.Revision < rev {
				errs = append(errs, fmt.Errorf("maglev tables: the controller's cover revision %d, the desired state is at %d", resp.Revision, rev))
			}
			break
		}
		a.log.Warn("maglev tables: refetching whole", "err", errors.Join(ferrs...))
		if try == 1 {
			errs = append(errs, ferrs...)
		}
	}
	out := make(map[string]hoststatus.LBTable, len(plan.services))
	unverified := map[netip.Addr]bool{}
	kept := plan.services[:0]
	for _, s := range plan.services {
		t := a.holder.Tables[s.Name]
		var ht hoststatus.LBTable
		err := errors.New("no table from the controller")
		if t != nil {
			sum := t.Sum()
			ht.Generation, ht.Sum, ht.Mismatch = t.Generation, hex.EncodeToString(sum[:]), a.holder.Mismatch(s.Name)
			err = covers(t, s.Backends)
		}
		if err != nil {
			ht.Error, ht.Mismatch = err.Error(), true
			errs = append(errs, fmt.Errorf("maglev table %q: %w", s.Name, err))
		}
		out[s.Name] = ht
		switch {
		case a.cfg.LocalTables:
			kept = append(kept, s)
		case err == nil:
			s.Shared = t
			kept = append(kept, s)
		default:
			// Keep the last verified table (the same on every host that has it); a VIP
			// without one is not advertised.
			prev, ok := a.programmed[s.Name]
			if ok && prev.VIP == s.VIP {
				kept = append(kept, prev)
			}
			if !ok || prev.VIP != s.VIP || prev.Shared == nil {
				unverified[s.VIP.Addr] = true
			}
		}
	}
	plan.services = kept
	if !a.cfg.LocalTables {
		plan.advertise = slices.DeleteFunc(plan.advertise, func(v netip.Addr) bool { return unverified[v] })
	}
	return out, errors.Join(errs...)
}

// covers checks that every backend of bs has an index in t.
func covers(t *lb.SharedTable, bs []lb.Backend) error {
	keys := make(map[string]bool, len(t.Backends))
	for _, b := range t.Backends {
		keys[b.Key] = b.Key != ""
	}
	for _, b := range bs {
		if !keys[b.Key()] {
			return fmt.Errorf("backend %s is not in generation %d (the controller's tables lag the desired state)", b.Key(), t.Generation)
		}
	}
	return nil
}

// compareLocalTables marks, with LocalTables, each table whose programmed slots send a flow
// to another backend than the shared table would with this host's view of the backends
// (when the load balancer can read its tables back).
func (a *Agent) compareLocalTables(plan lbPlan, tables map[string]hoststatus.LBTable) {
	tr, ok := a.lb.(tableReader)
	if !ok || !a.cfg.LocalTables {
		return
	}
	for _, s := range plan.services {
		t, ht := a.holder.Tables[s.Name], tables[s.Name]
		if t == nil || ht.Error != "" {
			continue
		}
		eff, err := t.Effective(s.Backends)
		got := tr.TableKeys(s.VIP)
		if err != nil || len(got) != len(eff) {
			ht.Mismatch = true
		} else {
			for slot, idx := range eff {
				want := ""
				if idx != lb.NoBackend {
					want = t.Backends[idx-1].Key
				}
				if got[slot] != want {
					ht.Mismatch = true
					break
				}
			}
		}
		tables[s.Name] = ht
	}
}

// setServices programs the load balancer's services (each VIP's backends).
func (a *Agent) setServices(plan lbPlan) error {
	if err := a.lb.Set(plan.services); err != nil {
		return fmt.Errorf("load balancer: %w", err)
	}
	return nil
}

// setVIPRoutes routes each VIP to its healthy local backends.
func (a *Agent) setVIPRoutes(plan lbPlan) error {
	if err := a.routes.Set(plan.routes); err != nil {
		return fmt.Errorf("vip routes: %w", err)
	}
	return nil
}

// setBGP gives the speaker the desired sessions and, when advertise, the VIPs with a healthy
// backend; a host without BGP peers stops the speaker.
func (a *Agent) setBGP(st *desired.State, plan lbPlan, advertise bool) error {
	bcfg, err := bgpConfig(st)
	if err == nil {
		if len(bcfg.Peers) > 0 {
			err = a.speaker.Set(bcfg, adverts(st, plan, advertise))
		} else {
			err = a.speaker.Set(bgp.Config{}, nil) // no BGP on this host (any more)
		}
	}
	if err != nil {
		return fmt.Errorf("bgp: %w", err)
	}
	return nil
}

// decapPolicy is what this host's XDP decapsulation accepts (issue 20): tunnels whose outer
// source is the fabric address of another host in the desired state (every host's agent runs
// xdp_lb; this host never tunnels to itself), carrying TCP/UDP to a port of a dsr service with
// at least one backend on this host, in the public routing domain (internal VIPs are not the
// load balancer's: the department's tables route them, see loadBalancing). Backends count whatever their health or weight, so
// draining flows keep arriving. Hosts whose address does not parse are reported and left out.
func decapPolicy(st *desired.State, self netip.Addr) ([]netip.Addr, []lbmap.LocalVIP, []error) {
	var srcs []netip.Addr
	var errs []error
	for _, h := range slices.Sorted(maps.Keys(st.Hosts)) {
		if h == st.Host {
			continue
		}
		a := st.Hosts[h]
		if !a.IsValid() {
			errs = append(errs, fmt.Errorf("tunnel sources: host %q: no address", h))
			continue
		}
		if a != self {
			srcs = append(srcs, a)
		}
	}
	var vips []lbmap.LocalVIP
	for _, svc := range st.Services {
		mode, err := lb.ParseMode(svc.Mode)
		local := slices.ContainsFunc(svc.Backends, func(b desired.Backend) bool { return b.Host == st.Host })
		vip := svc.VIP
		if err != nil || !vip.IsValid() || mode != lb.DSR || !local || svc.Scope == "internal" {
			continue // bad modes and VIPs are reported by loadBalancing; internal VIPs are routed
		}
		domain := uint32(0)
		for _, p := range svc.Ports {
			proto, err := lb.ParseProtocol(strings.ToLower(p.Protocol))
			if err != nil {
				continue
			}
			vips = append(vips, lbmap.LocalVIP{VIP: lb.VIP{Domain: domain, Addr: vip, Port: uint16(p.Port), Proto: proto}, Department: uint32(svc.TableID)})
		}
	}
	return srcs, vips, errs
}

// nudgeNeighbours keeps the tunnel endpoints' MACs resolved: the XDP program drops rather
// than hand a half-built packet to the kernel when a neighbour is missing. A datagram to the
// discard port makes the kernel resolve (and refresh) the entry.
func (a *Agent) nudgeNeighbours(plan lbPlan, self netip.Addr) {
	now := time.Now()
	for _, s := range plan.services {
		for _, b := range s.Backends {
			if b.Addr == self || now.Sub(a.nudged[b.Addr]) < 20*time.Second {
				continue
			}
			a.nudged[b.Addr] = now
			a.resolve(b.Addr)
		}
	}
}

// nudgeNeighbour sends one datagram to addr's discard port.
func nudgeNeighbour(addr netip.Addr) {
	if c, err := net.DialTimeout("udp", netip.AddrPortFrom(addr, 9).String(), time.Second); err == nil {
		_, _ = c.Write([]byte{0})
		c.Close()
	}
}

// report records st as this host's status and has it sent to the controller: by Run's sender
// while Run runs (sendReports), at once otherwise.
func (a *Agent) report(ctx context.Context, st hoststatus.Status) {
	a.mu.Lock()
	a.status = st
	reports := a.reports
	async := reports != nil
	if async {
		a.unsent = &st
	}
	a.mu.Unlock()
	if !async {
		a.send(ctx, st)
		return
	}
	select {
	case reports <- struct{}{}:
	default: // the sender is told already; it takes the newest
	}
}

// sendReports sends the reports of Run's passes: a pass does not wait for the controller to
// store its report (300 KiB at 1200 VIPs took up to 3 s at scale, the whole of some passes),
// and a report superseded before it went out is not sent. Each signal on reports says one
// waits in unsent. It returns when ctx ends.
func (a *Agent) sendReports(ctx context.Context, reports <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-reports:
		}
		a.mu.Lock()
		st := a.unsent
		a.unsent = nil
		a.mu.Unlock()
		if st != nil {
			a.send(ctx, *st)
		}
	}
}

// send gives st to the controller unless it is the report the controller has already. One
// sender at a time: Run's sendReports, or a pass outside Run.
func (a *Agent) send(ctx context.Context, st hoststatus.Status) {
	b, _ := json.Marshal(st)
	if string(b) == string(a.reported) {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.cfg.Controller.PutHostStatus(rctx, a.cfg.Host, st); err != nil {
		a.log.Warn("reporting status", "err", err)
		return
	}
	a.reported = b
}

// connectionCounter is what a load balancer offers when it can count its connection table
// (lbmap.Dataplane does; fakes need not).
type connectionCounter interface {
	ActiveConnections(idle time.Duration) (map[lbmap.ActiveKey]int, error)
}

// activeConnections sums the load balancer's active connections per service and target (the
// report's view of a drain), every target of the plan listed (0: none); nil when the load
// balancer cannot count them or reading fails.
func (a *Agent) activeConnections(plan lbPlan) []hoststatus.Connections {
	cc, ok := a.lb.(connectionCounter)
	if !ok {
		return nil
	}
	counts, err := cc.ActiveConnections(hoststatus.ActiveWindow)
	if err != nil {
		a.log.Warn("reading the connection table", "err", err)
		return nil
	}
	name := map[lb.VIP]string{}
	sum := map[[2]string]int{} // every target of every service, 0 when it has no connection
	for _, s := range plan.services {
		svc, _, _ := strings.Cut(s.Name, "/") // "service/port/proto"
		name[s.VIP] = svc
		for _, b := range s.Backends {
			sum[[2]string{svc, b.Addr.String()}] += 0
		}
	}
	for k, n := range counts {
		ap, err := netip.ParseAddrPort(k.Backend)
		svc, ok := name[k.VIP]
		if err != nil || !ok {
			continue
		}
		sum[[2]string{svc, ap.Addr().String()}] += n
	}
	out := make([]hoststatus.Connections, 0, len(sum))
	for k, n := range sum {
		out = append(out, hoststatus.Connections{Service: k[0], Target: netip.MustParseAddr(k[1]), Active: n})
	}
	slices.SortFunc(out, func(x, y hoststatus.Connections) int {
		if x.Service != y.Service {
			return strings.Compare(x.Service, y.Service)
		}
		return x.Target.Compare(y.Target)
	})
	return out
}

// guestReadiness is each local VM's readiness: "not ready" with its ports' errors when one did
// not join its segment bridge, or when the segments could not be made (segErr); "stopped" for a
// VM asked to be stopped whose port is gone (off). A VM asked to be stopped whose port is
// still there (not stopped yet, or a provider that cannot stop it) is reported as any other.
func guestReadiness(st *desired.State, segErr error, ports map[string]*hostnet.PortError, off map[string]bool) map[string]string {
	out := make(map[string]string, len(st.VMs))
	for _, vm := range st.VMs {
		if off[vm.Name] {
			out[vm.Name] = desired.PowerStopped
			continue
		}
		var errs []error
		for _, ifc := range vm.Interfaces {
			if pe := ports[GuestPort(vm.Name, ifc.Segment)]; pe != nil {
				errs = append(errs, pe)
			}
		}
		if len(errs) == 0 && segErr != nil && len(vm.Interfaces) > 0 {
			errs = append(errs, errors.New("its segments are not ready (host network error)"))
		}
		out[vm.Name] = readiness(errors.Join(errs...))
	}
	return out
}

// stoppedPorts are the guest ports of the local VMs whose spec asks powerState stopped, each
// to its VM's name.
func stoppedPorts(st *desired.State) map[string]string {
	out := map[string]string{}
	for _, vm := range st.VMs {
		if vm.PowerState == desired.PowerStopped {
			for _, ifc := range vm.Interfaces {
				out[GuestPort(vm.Name, ifc.Segment)] = vm.Name
			}
		}
	}
	return out
}

func readiness(err error) string {
	if err != nil {
		return "not ready: " + err.Error()
	}
	return "ready"
}

// SetKeep changes what Close does (Config.Keep). Not safe to call while Close runs.
func (a *Agent) SetKeep(keep bool) { a.cfg.Keep = keep }

// Close stops the agent and closes the dataplane it was given. Without Keep it first detaches
// XDP, withdraws the VIP routes and removes the load balancer's pins; with Keep the dataplane
// keeps forwarding and BGP sessions close gracefully. The host network is torn down or kept
// as its own Keep says (hostnet.Config.Keep, hostnet.Host.SetKeep: cmd/govcloud sets both alike).
func (a *Agent) Close() error {
	a.checks.Close()
	var errs []error
	if a.speaker != nil {
		// Kept dataplane (an upgrade): close sessions without NOTIFICATION so peers keep the
		// routes (graceful restart); otherwise withdraw them.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, a.speaker.Close(ctx, a.cfg.Keep))
		cancel()
	}
	if !a.cfg.Keep {
		errs = append(errs, a.lb.DetachUplink())
		errs = append(errs, a.routes.Set(nil))
		errs = append(errs, a.lb.Unpin())
	}
	errs = append(errs, a.lb.Close())
	errs = append(errs, a.routes.Close())
	errs = append(errs, a.hn.Close())
	return errors.Join(errs...)
}
