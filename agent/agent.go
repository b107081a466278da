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
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/govcloud/govcloud/controlplane/bgp"
	"github.com/govcloud/govcloud/controlplane/desired"
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
	PeerHealth(ctx context.Context, host string) (map[string]json.RawMessage, error)
}

// Config says how an agent runs.
type Config struct {
	Host       string
	Controller Controller
	Log        *slog.Logger
	// PinRoot is the bpffs directory for pinned maps and links (DefaultPinRoot).
	PinRoot string
	// StateDir keeps what must outlive a crash (DefaultStateDir).
	StateDir string
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
	// NewSpeaker makes the BGP speaker that advertises VIPs to the fabric; restarting says an
	// earlier agent left the dataplane forwarding (graceful restart). nil runs without BGP.
	NewSpeaker func(restarting bool) bgp.Speaker
}

// Defaults.
const (
	DefaultPinRoot  = "/sys/fs/bpf/govcloud"
	DefaultStateDir = "/run/govcloud/agent"
)

// Status is what the agent reports: per object ready or the reason it is not.
type Status struct {
	Host     string            `json:"host"`
	Revision int64             `json:"revision"`
	Ready    bool              `json:"ready"`
	Error    string            `json:"error,omitempty"`
	Uplink   string            `json:"uplink,omitempty"`
	XDP      string            `json:"xdp"`
	Segments map[string]string `json:"segments"`
	Services map[string]string `json:"services"`
	// Backends are the health of the backends this host checks ("service/address" -> up |
	// down: reason); other agents read them to stop sending to backends that are down.
	Backends map[string]string `json:"backends,omitempty"`
	// Advertise lists the public VIPs with at least one healthy backend.
	Advertise []string `json:"advertise,omitempty"`
	// BGP is the state of each peer session.
	BGP []bgp.PeerStatus `json:"bgp,omitempty"`
}

// Agent is one host's agent.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	hn      *hostnet.Host
	lb      *lbmap.Dataplane
	nl      *netlink.Handle
	routes  *viproute.Routes
	checker *Checker
	speaker bgp.Speaker

	mu         sync.Mutex
	last       *desired.State
	xdp        link.Link
	xdpIf      string
	remoteDown map[backendKey]bool
	status     Status
	reported   []byte
	nudged     map[netip.Addr]time.Time
}

// New opens the dataplane (reusing what an earlier agent pinned) without changing anything yet.
func New(cfg Config) (*Agent, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Host == "" {
		return nil, errors.New("agent: no host name")
	}
	if cfg.PinRoot == "" {
		cfg.PinRoot = DefaultPinRoot
	}
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	if cfg.PollTimeout == 0 {
		cfg.PollTimeout = 25 * time.Second
	}
	if cfg.PeerPoll == 0 {
		cfg.PeerPoll = time.Second
	}
	a := &Agent{cfg: cfg, log: cfg.Log, remoteDown: map[backendKey]bool{}, nudged: map[netip.Addr]time.Time{}}
	var err error
	a.hn, err = hostnet.New(hostnet.Config{Logger: cfg.Log, PinPath: filepath.Join(cfg.PinRoot, "trunk"), StateDir: filepath.Join(cfg.StateDir, "hostnet"), Keep: cfg.Keep})
	if err != nil {
		return nil, fmt.Errorf("host network: %w", err)
	}
	a.lb, err = lbmap.Load(lbmap.Options{PinPath: filepath.Join(cfg.PinRoot, "lb"), Log: cfg.Log})
	if err != nil {
		a.hn.Close()
		return nil, fmt.Errorf("load balancer: %w", err)
	}
	if a.nl, err = netlink.NewHandle(); err != nil {
		a.lb.Close()
		a.hn.Close()
		return nil, fmt.Errorf("netlink: %w", err)
	}
	a.routes = viproute.New(a.nl, cfg.Log)
	a.checker = NewChecker(cfg.Log)
	if cfg.NewSpeaker != nil {
		a.speaker = cfg.NewSpeaker(a.lb.Restored())
	}
	return a, nil
}

// LB exposes the load balancer (counters for metering).
func (a *Agent) LB() *lbmap.Dataplane { return a.lb }

// HostNet exposes the host network (trunk counters for metering).
func (a *Agent) HostNet() *hostnet.Host { return a.hn }

// Desired returns the last desired state (nil before the first): names for the meters.
func (a *Agent) Desired() *desired.State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// Status returns the last status.
func (a *Agent) Status() Status {
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
		case <-a.checker.Changed():
		case <-resync.C:
		case <-retry.C:
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

// watchPeers reads other agents' reports for backends they found down.
func (a *Agent) watchPeers(ctx context.Context, kick chan<- struct{}) {
	t := time.NewTicker(a.cfg.PeerPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hosts, err := a.cfg.Controller.PeerHealth(ctx, a.cfg.Host)
		if err != nil {
			continue
		}
		a.mu.Lock()
		placed := placedBackends(a.last)
		a.mu.Unlock()
		down := peersDown(hosts, a.cfg.Host, placed)
		a.mu.Lock()
		changed := !reflect.DeepEqual(down, a.remoteDown)
		a.remoteDown = down
		a.mu.Unlock()
		if changed {
			select {
			case kick <- struct{}{}:
			default:
			}
		}
	}
}

// peersDown reads the peers' status reports (host -> {"status": Status}) for backends they
// found down. A peer's word counts only for backends placed on that peer (placed: backend ->
// host), so no host can take another host's backends out.
func peersDown(hosts map[string]json.RawMessage, self string, placed map[backendKey]string) map[backendKey]bool {
	down := map[backendKey]bool{}
	for h, raw := range hosts {
		if h == self {
			continue
		}
		var rep struct {
			Status Status `json:"status"`
		}
		if json.Unmarshal(raw, &rep) != nil {
			continue
		}
		for k, v := range rep.Status.Backends {
			if !strings.HasPrefix(v, "down") {
				continue
			}
			i := strings.LastIndex(k, "/")
			if addr, err := netip.ParseAddr(k[i+1:]); err == nil && i > 0 {
				if bk := (backendKey{Service: k[:i], Addr: addr}); placed[bk] == h {
					down[bk] = true
				}
			}
		}
	}
	return down
}

// placedBackends maps each backend the desired state places on a host to that host; plain
// address backends (checked by every host itself) are left out.
func placedBackends(st *desired.State) map[backendKey]string {
	out := map[backendKey]string{}
	if st == nil {
		return out
	}
	for _, svc := range st.Services {
		for _, b := range svc.Backends {
			if addr, err := netip.ParseAddr(b.Address); err == nil && b.Host != "" {
				out[backendKey{Service: svc.Name, Addr: addr}] = b.Host
			}
		}
	}
	return out
}

func (a *Agent) healthy(k backendKey) bool {
	a.mu.Lock()
	down := a.remoteDown[k]
	a.mu.Unlock()
	return !down && a.checker.Healthy(k)
}

// apply makes one pass over the whole desired state, reports the outcome and says whether
// everything converged.
func (a *Agent) apply(ctx context.Context, st *desired.State) bool {
	start := time.Now()
	status := Status{Host: a.cfg.Host, Revision: st.Revision, Uplink: st.Uplink, Segments: map[string]string{}, Services: map[string]string{}}
	var errs []error

	hn, err := hostNetwork(st)
	if err == nil {
		for _, p := range a.cfg.Management {
			if !slices.Contains(hn.Management, p) {
				hn.Management = append(hn.Management, p)
			}
		}
		hn.TenantAllow = a.cfg.TenantAllow
		err = a.hn.Set(hn)
	}
	for _, s := range st.Segments {
		status.Segments[s.Name] = readiness(err)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("host network: %w", err))
	}

	self, _ := parseAddrOrPrefix(st.Address)
	lbErr := a.setLB(st, self, &status)
	if lbErr != nil {
		errs = append(errs, lbErr)
	}
	status.Backends = a.checker.States()
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

func (a *Agent) setLB(st *desired.State, self netip.Addr, status *Status) error {
	var errs []error
	if st.Uplink != "" {
		if err := a.attach(st.Uplink); err != nil {
			errs = append(errs, err)
			status.XDP = "not attached: " + err.Error()
		} else {
			status.XDP = "attached to " + st.Uplink
		}
	}
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
	srcs, locals, derrs := decapPolicy(st, self)
	errs = append(errs, derrs...)
	if err := a.lb.SetTunnelSources(srcs); err != nil {
		errs = append(errs, err)
	}
	if err := a.lb.SetLocalVIPs(locals); err != nil {
		errs = append(errs, err)
	}
	a.checker.Set(probeTargets(st))
	hostAddr := func(h string) (netip.Addr, bool) {
		if h == st.Host && self.IsValid() {
			return self, true
		}
		ad, err := parseAddrOrPrefix(st.Hosts[h])
		return ad, err == nil
	}
	plan, perrs := loadBalancing(st, self, a.healthy, hostAddr)
	errs = append(errs, perrs...)
	if err := a.lb.SetVLANDomains(plan.vlanDomain); err != nil {
		errs = append(errs, err)
	}
	lbErr := a.lb.Set(plan.services)
	if lbErr != nil {
		errs = append(errs, fmt.Errorf("load balancer: %w", lbErr))
	}
	routeErr := a.routes.Set(plan.routes)
	if routeErr != nil {
		errs = append(errs, fmt.Errorf("vip routes: %w", routeErr))
	}
	for _, svc := range st.Services {
		status.Services[svc.Name] = readiness(errors.Join(lbErr, routeErr))
	}
	for _, v := range plan.advertise {
		status.Advertise = append(status.Advertise, v.String())
	}
	a.nudgeNeighbours(plan, self)
	if a.speaker != nil {
		bcfg, err := bgpConfig(st)
		if err == nil {
			if len(bcfg.Peers) > 0 {
				err = a.speaker.Set(bcfg, adverts(st, plan, status.XDP == "attached to "+st.Uplink && lbErr == nil, self))
			} else {
				err = a.speaker.Set(bgp.Config{}, nil) // no BGP on this host (any more)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp: %w", err))
		}
		status.BGP = a.speaker.Status()
	}
	return errors.Join(errs...)
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
		a, err := parseAddrOrPrefix(st.Hosts[h])
		if err != nil {
			errs = append(errs, fmt.Errorf("tunnel sources: host %q: address %q: %w", h, st.Hosts[h], err))
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
		vip, verr := netip.ParseAddr(svc.VIP)
		if err != nil || verr != nil || mode != lb.DSR || !local {
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

// attach puts xdp_lb on the uplink (once; a pinned link of an earlier agent is updated in place).
func (a *Agent) attach(uplink string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.xdp != nil && a.xdpIf == uplink {
		return nil
	}
	if a.xdp != nil {
		_ = lbmap.DetachXDP(a.xdp)
		a.xdp = nil
	}
	l, err := a.lb.AttachXDP(uplink, a.lb.Program())
	if err != nil {
		return err
	}
	a.xdp, a.xdpIf = l, uplink
	return nil
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
			if c, err := net.DialTimeout("udp", netip.AddrPortFrom(b.Addr, 9).String(), time.Second); err == nil {
				_, _ = c.Write([]byte{0})
				c.Close()
			}
		}
	}
}

func (a *Agent) report(ctx context.Context, st Status) {
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

// Close stops the agent. Without Keep it removes everything it made (XDP, pins, VIP routes,
// the host network), leaving the host as before; with Keep the dataplane keeps forwarding.
func (a *Agent) Close() error {
	a.checker.Close()
	var errs []error
	if a.speaker != nil {
		// Kept dataplane (an upgrade): close sessions without NOTIFICATION so peers keep the
		// routes (graceful restart); otherwise withdraw them.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, a.speaker.Close(ctx, a.cfg.Keep))
		cancel()
	}
	if !a.cfg.Keep {
		a.mu.Lock()
		if a.xdp != nil {
			errs = append(errs, lbmap.DetachXDP(a.xdp))
			a.xdp = nil
		}
		a.mu.Unlock()
		errs = append(errs, a.routes.Set(nil))
		errs = append(errs, a.lb.Unpin())
	}
	errs = append(errs, a.lb.Close())
	errs = append(errs, a.hn.Close())
	a.nl.Close()
	return errors.Join(errs...)
}
