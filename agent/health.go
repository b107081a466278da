package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
)

// probeTarget is one backend to check and how.
type probeTarget struct {
	key  hoststatus.BackendKey
	addr netip.AddrPort
	hc   desired.HealthCheck
	// mark (SO_MARK) is the backend's department table for a backend in one of its
	// department's segments: "fwmark <table> lookup <table>" routes the probe in the
	// department's table (the main table has no segment routes) and the host firewall lets
	// only packets with the department's mark into its bridges. 0: unmarked.
	mark int
}

type markKey struct{}

// withMark makes a dial through markedDialer set SO_MARK to mark (0: none).
func withMark(ctx context.Context, mark int) context.Context {
	return context.WithValue(ctx, markKey{}, mark)
}

// markedDialer dials with the SO_MARK its context carries (withMark).
func markedDialer() *net.Dialer {
	return &net.Dialer{ControlContext: func(ctx context.Context, _, _ string, c syscall.RawConn) error {
		m, _ := ctx.Value(markKey{}).(int)
		if m == 0 {
			return nil
		}
		var serr error
		if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, m) }); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("SO_MARK %d: %w", m, serr)
		}
		return nil
	}}
}

// probeID is what one check probes: backends of several services that name the same address,
// port, check and mark (a VM behind ten VIPs) share one probe and its state.
type probeID struct {
	addr netip.AddrPort
	hc   desired.HealthCheck
	mark int
}

func (t probeTarget) id() probeID { return probeID{t.addr, t.hc, t.mark} }

type probeState struct {
	target   probeTarget // the first of its backends: what is probed
	services []string    // the services of the backends sharing it (logs)
	up       bool
	pending  bool // added while the agent ran and never answered yet: down until its first success
	streak   int  // consecutive results against the current state
	cancel   context.CancelFunc
	lastErr  string
	lastSeen time.Time
}

// Checker runs TCP or HTTP health checks against backends and tells the agent when one
// changes state. A backend is up until unhealthyThreshold consecutive failures, and down
// until healthyThreshold consecutive successes. Backends of the first Set (what a restarted
// agent finds) start up, so a restart moves no flow; backends added later start down until
// their first check succeeds, so a VM still booting gets no traffic and its VIP is not
// advertised for it. Backends that name the same address, port, check and mark (a VM behind
// several services) share one probe and its state.
type Checker struct {
	log     *slog.Logger
	changed chan struct{}
	mu      sync.Mutex
	seeded  bool // the first Set happened
	probes  map[probeID]*probeState
	keys    map[hoststatus.BackendKey]probeID // each probed backend's probe
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
}

// NewChecker returns a checker; changed receives (without blocking) on every state change.
func NewChecker(log *slog.Logger) *Checker {
	return &Checker{log: log, changed: make(chan struct{}, 1), probes: map[probeID]*probeState{}, keys: map[hoststatus.BackendKey]probeID{}, dial: markedDialer().DialContext}
}

// Changed is signalled when any backend changes state.
func (c *Checker) Changed() <-chan struct{} { return c.changed }

// Set replaces the probed backends: new ones start (up on the first Set, else pending), removed
// ones stop.
func (c *Checker) Set(targets []probeTarget) {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make(map[hoststatus.BackendKey]probeID, len(targets))
	services := map[probeID][]string{}
	first := map[probeID]probeTarget{}
	for _, t := range targets {
		id := t.id()
		if _, dup := keys[t.key]; !dup {
			services[id] = append(services[id], t.key.Service)
		}
		keys[t.key] = id
		if _, ok := first[id]; !ok {
			first[id] = t
		}
	}
	for id, p := range c.probes {
		if _, ok := first[id]; !ok {
			p.cancel()
			delete(c.probes, id)
		}
	}
	for id, t := range first {
		if p, ok := c.probes[id]; ok {
			p.services = services[id]
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		p := &probeState{target: t, services: services[id], up: !c.seeded, pending: c.seeded, cancel: cancel}
		if p.pending {
			p.lastErr = "not checked yet"
		}
		c.probes[id] = p
		go c.run(ctx, p)
	}
	c.keys = keys
	c.seeded = true
}

// Healthy reports a probed backend's state; unprobed backends are up.
func (c *Checker) Healthy(k hoststatus.BackendKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id, ok := c.keys[k]; ok {
		return c.probes[id].up
	}
	return true
}

// States returns every probed backend's state; a backend that is down has the last check's
// error as its reason.
func (c *Checker) States() hoststatus.Backends {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(hoststatus.Backends, len(c.keys))
	for k, id := range c.keys {
		p := c.probes[id]
		h := hoststatus.Health{Up: p.up}
		if !p.up {
			h.Reason = p.lastErr
		}
		out[k] = h
	}
	return out
}

// Close stops every probe.
func (c *Checker) Close() { c.Set(nil) }

func (c *Checker) run(ctx context.Context, p *probeState) {
	hc := p.target.hc
	interval := time.Duration(max(hc.IntervalMs, 100)) * time.Millisecond
	timeout := time.Duration(max(hc.TimeoutMs, 50)) * time.Millisecond
	// A backend added while the agent runs is usually a guest still booting: until its first
	// success it is probed at fastInterval, doubling after each failure up to interval
	// (HAProxy's fastinter for a server in transition), so it takes traffic soon after it
	// answers without probing a dead one faster than 10 times in its first interval.
	// Its probes time out at twice the fast interval (at least 200 ms, at most the check's
	// timeout): a probe to a guest port not plugged yet waits for ARP to give up, which would
	// otherwise hold the first probe for the whole timeout.
	fast := min(fastInterval, interval)
	c.mu.Lock()
	pending := p.pending
	c.mu.Unlock()
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		start := time.Now()
		limit := timeout
		if pending {
			limit = min(timeout, max(2*fast, 200*time.Millisecond))
		}
		err := c.probe(ctx, p.target, limit)
		if ctx.Err() != nil {
			return
		}
		next := interval
		if pending = c.record(p, err); pending {
			next, fast = fast, min(2*fast, interval)
		}
		t.Reset(max(next-time.Since(start), 0))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// fastInterval is the first probe interval of a new backend until it answers (run).
const fastInterval = 100 * time.Millisecond

// record takes one probe's result and says whether the backend is still pending (added while
// the agent ran and never answered).
func (c *Checker) record(p *probeState, err error) (pending bool) {
	c.mu.Lock()
	ok := err == nil
	if err != nil {
		p.lastErr = err.Error()
	}
	flip := false
	if p.pending {
		// A new backend is up at its first success, whatever the healthy threshold: failures
		// before it (a guest still booting) are not a backend going down.
		if ok {
			p.pending = false
			p.up, p.streak, flip = true, 0, true
		}
	} else if ok == p.up {
		p.streak = 0
	} else {
		p.streak++
		need := p.target.hc.UnhealthyThreshold
		if !p.up {
			need = p.target.hc.HealthyThreshold
		}
		if p.streak >= max(need, 1) {
			p.up, p.streak, flip = ok, 0, true
		}
	}
	p.lastSeen = time.Now()
	key := p.target.key
	services := slices.Clone(p.services)
	up, pending := p.up, p.pending
	c.mu.Unlock()
	if flip {
		c.log.Info("backend health changed", "services", services, "backend", key.Addr, "up", up, "error", errString(err))
		select {
		case c.changed <- struct{}{}:
		default:
		}
	}
	return pending
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (c *Checker) probe(ctx context.Context, t probeTarget, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(withMark(ctx, t.mark), timeout)
	defer cancel()
	switch t.hc.Type {
	case "http":
		req, err := probeRequest(ctx, t.addr, t.hc.Path)
		if err != nil {
			return err
		}
		// The probe reaches the backend's address and port only: every dial goes there, and a
		// redirect is an answer (3xx counts as up), never followed.
		tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return c.dial(ctx, network, t.addr.String())
		}}
		defer tr.CloseIdleConnections()
		cl := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := cl.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode >= 400 {
			return fmt.Errorf("http %d", resp.StatusCode)
		}
		return nil
	default:
		conn, err := c.dial(ctx, "tcp", t.addr.String())
		if err != nil {
			return err
		}
		return conn.Close()
	}
}

// probeTargets lists the backends this host checks: those running here, and plain-address
// backends (no host), for every service with a health check.
func probeTargets(st *desired.State) []probeTarget {
	var out []probeTarget
	type seg struct {
		pfx   []netip.Prefix
		table int
	}
	segs := map[string]seg{}        // segment name -> prefixes, table
	byDept := map[string][]string{} // department -> its segments
	for _, s := range st.Segments {
		var sg seg
		for _, p := range []netip.Prefix{s.Prefix4, s.Prefix6} {
			if p.IsValid() {
				sg.pfx = append(sg.pfx, p)
			}
		}
		sg.table = s.TableID
		segs[s.Name] = sg
		byDept[s.Department] = append(byDept[s.Department], s.Name)
	}
	// markOf is the department table of a backend inside one of the service department's
	// segments (named by the backend, or found by address), else 0.
	markOf := func(svc desired.Service, b desired.Backend, addr netip.Addr) int {
		names := byDept[svc.Department]
		if b.Segment != "" {
			names = []string{b.Segment}
		}
		for _, n := range names {
			sg, ok := segs[n]
			if !ok || !slices.Contains(byDept[svc.Department], n) {
				continue
			}
			for _, p := range sg.pfx {
				if p.Contains(addr) {
					return sg.table
				}
			}
		}
		return 0
	}
	for _, svc := range st.Services {
		if svc.HealthCheck == nil || len(svc.Ports) == 0 {
			continue
		}
		for _, b := range svc.Backends {
			if b.Host != "" && b.Host != st.Host {
				continue
			}
			addr := b.Address
			if !addr.IsValid() {
				continue
			}
			port := svc.HealthCheck.Port
			if port == 0 {
				port = svc.Ports[0].TargetPort
			}
			if port == 0 {
				port = svc.Ports[0].Port
			}
			out = append(out, probeTarget{key: hoststatus.BackendKey{Service: svc.Name, Addr: addr}, addr: netip.AddrPortFrom(addr, uint16(port)),
				hc: *svc.HealthCheck, mark: markOf(svc, b, addr)})
		}
	}
	return out
}

// probeRequest is GET path on the backend at addr. path is only a path (and query): one that
// names a scheme or host, or is not absolute, is refused rather than sent elsewhere.
func probeRequest(ctx context.Context, addr netip.AddrPort, path string) (*http.Request, error) {
	if path == "" {
		path = "/"
	}
	ref, err := url.ParseRequestURI(path)
	if err != nil || ref.Scheme != "" || ref.Host != "" || ref.User != nil || !strings.HasPrefix(path, "/") || strings.HasPrefix(path, "//") {
		return nil, fmt.Errorf("health-check path %q is not a plain absolute path", path)
	}
	u := &url.URL{Scheme: "http", Host: addr.String(), Path: ref.Path, RawPath: ref.RawPath, RawQuery: ref.RawQuery}
	return http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
}
