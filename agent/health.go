package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/govcloud/govcloud/controlplane/desired"
)

// probeTarget is one backend to check and how.
type probeTarget struct {
	key  backendKey
	addr netip.AddrPort
	hc   desired.HealthCheck
}

type probeState struct {
	target   probeTarget
	up       bool
	pending  bool // added while the agent ran and not checked yet: down until its first success
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
// advertised for it.
type Checker struct {
	log     *slog.Logger
	changed chan struct{}
	mu      sync.Mutex
	seeded  bool // the first Set happened
	probes  map[backendKey]*probeState
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
}

// NewChecker returns a checker; changed receives (without blocking) on every state change.
func NewChecker(log *slog.Logger) *Checker {
	d := &net.Dialer{}
	return &Checker{log: log, changed: make(chan struct{}, 1), probes: map[backendKey]*probeState{}, dial: d.DialContext}
}

// Changed is signalled when any backend changes state.
func (c *Checker) Changed() <-chan struct{} { return c.changed }

// Set replaces the probed backends: new ones start (up on the first Set, else pending), removed
// ones stop.
func (c *Checker) Set(targets []probeTarget) {
	c.mu.Lock()
	defer c.mu.Unlock()
	want := map[backendKey]probeTarget{}
	for _, t := range targets {
		want[t.key] = t
	}
	for k, p := range c.probes {
		if t, ok := want[k]; !ok || t != p.target {
			p.cancel()
			delete(c.probes, k)
		}
	}
	for k, t := range want {
		if _, ok := c.probes[k]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		p := &probeState{target: t, up: !c.seeded, pending: c.seeded, cancel: cancel}
		if p.pending {
			p.lastErr = "not checked yet"
		}
		c.probes[k] = p
		go c.run(ctx, p)
	}
	c.seeded = true
}

// Healthy reports a probed backend's state; unprobed backends are up.
func (c *Checker) Healthy(k backendKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.probes[k]; ok {
		return p.up
	}
	return true
}

// States returns every probed backend's state, keyed "service/address".
func (c *Checker) States() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]string, len(c.probes))
	for k, p := range c.probes {
		s := "up"
		if !p.up {
			s = "down: " + p.lastErr
		}
		out[k.Service+"/"+k.Addr.String()] = s
	}
	return out
}

// Close stops every probe.
func (c *Checker) Close() { c.Set(nil) }

func (c *Checker) run(ctx context.Context, p *probeState) {
	hc := p.target.hc
	interval := time.Duration(max(hc.IntervalMs, 100)) * time.Millisecond
	timeout := time.Duration(max(hc.TimeoutMs, 50)) * time.Millisecond
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := c.probe(ctx, p.target, timeout)
		if ctx.Err() != nil {
			return
		}
		c.record(p, err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Checker) record(p *probeState, err error) {
	c.mu.Lock()
	ok := err == nil
	if err != nil {
		p.lastErr = err.Error()
	}
	flip := false
	if p.pending {
		// The first result decides a new backend: up at once, or down like any failed one.
		p.pending = false
		if ok {
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
	up := p.up
	c.mu.Unlock()
	if flip {
		c.log.Info("backend health changed", "service", key.Service, "backend", key.Addr, "up", up, "error", errString(err))
		select {
		case c.changed <- struct{}{}:
		default:
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (c *Checker) probe(ctx context.Context, t probeTarget, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch t.hc.Type {
	case "http":
		tr := &http.Transport{DialContext: c.dial, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		path := t.hc.Path
		if path == "" {
			path = "/"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+t.addr.String()+path, nil)
		if err != nil {
			return err
		}
		resp, err := (&http.Client{Transport: tr}).Do(req)
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
	for _, svc := range st.Services {
		if svc.HealthCheck == nil || len(svc.Ports) == 0 {
			continue
		}
		for _, b := range svc.Backends {
			if b.Host != "" && b.Host != st.Host {
				continue
			}
			addr, err := netip.ParseAddr(b.Address)
			if err != nil {
				continue
			}
			port := svc.HealthCheck.Port
			if port == 0 {
				port = svc.Ports[0].TargetPort
			}
			if port == 0 {
				port = svc.Ports[0].Port
			}
			out = append(out, probeTarget{key: backendKey{Service: svc.Name, Addr: addr}, addr: netip.AddrPortFrom(addr, uint16(port)), hc: *svc.HealthCheck})
		}
	}
	return out
}
