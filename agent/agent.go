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
	status     hoststatus.Status
	reported   []byte
	nudged     map[netip.Addr]time.Time
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
	return &Agent{cfg: cfg, log: cfg.Log, hn: cfg.HostNet, lb: cfg.LB, routes: cfg.Routes, speaker: cfg.Speaker,
		checks: NewChecker(cfg.Log), resolve: nudgeNeighbour,
		remoteDown: map[hoststatus.BackendKey]bool{}, nudged: map[netip.Addr]time.Time{}}, nil
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
	for {
		select {
		case <-ctx.Done():
			return nil
		case st := <-states:
			a.mu.Lock()
			a.last = st
			a.mu.Unlock()
		case <-kick:
		case <-a.checks.Changed():
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
		if a.apply(ctx, st) {
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
			}
			backoff = min(backoff*2, 10*time.Second)
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
	return changed
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
	down := a.remoteDown[k]
	a.mu.Unlock()
	return !down && a.checks.Healthy(k)
}

// apply makes one pass over the whole desired state, one step per part of the dataplane,
// reports the outcome and says whether everything converged.
func (a *Agent) apply(ctx context.Context, st *desired.State) bool {
	start := time.Now()
	status := hoststatus.Status{Host: a.cfg.Host, Revision: st.Revision, Uplink: st.Uplink, Segments: map[string]string{}, Services: map[string]string{}}
	var errs []error

	hnErr := a.setHostNetwork(st)
	for _, s := range st.Segments {
		status.Segments[s.Name] = readiness(hnErr)
	}
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
	if err := a.lb.SetVLANDomains(plan.vlanDomain); err != nil {
		errs = append(errs, err)
	}
	lbErr := a.setServices(plan)
	if lbErr != nil {
		errs = append(errs, lbErr)
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
		if err := a.setBGP(st, plan, xdp.attached() && lbErr == nil, self); err != nil {
			errs = append(errs, err)
		}
		status.BGP = a.speaker.Status()
	}

	status.Backends = a.checks.States()
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
	return a.hn.Set(hn)
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
func (a *Agent) setBGP(st *desired.State, plan lbPlan, advertise bool, self netip.Addr) error {
	bcfg, err := bgpConfig(st)
	if err == nil {
		if len(bcfg.Peers) > 0 {
			err = a.speaker.Set(bcfg, adverts(st, plan, advertise, self))
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
// at least one backend on this host, in the VIP's routing domain (0 when public, the
// department's table when internal). Backends count whatever their health or weight, so
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
		if err != nil || !vip.IsValid() || mode != lb.DSR || !local {
			continue // bad modes and VIPs are reported by loadBalancing
		}
		domain := uint32(0)
		if svc.Scope == "internal" {
			domain = uint32(svc.TableID)
		}
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

func (a *Agent) report(ctx context.Context, st hoststatus.Status) {
	a.mu.Lock()
	a.status = st
	a.mu.Unlock()
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

func readiness(err error) string {
	if err != nil {
		return "not ready: " + err.Error()
	}
	return "ready"
}

// Close stops the agent and closes the dataplane it was given. Without Keep it first detaches
// XDP, withdraws the VIP routes and removes the load balancer's pins; with Keep the dataplane
// keeps forwarding and BGP sessions close gracefully. The host network is torn down or kept
// as it was opened (hostnet.Config.Keep; cmd/govcloud passes the same Keep).
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
