package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/bgp"
	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
	"github.com/govcloud/govcloud/dataplane/hostnet"
	"github.com/govcloud/govcloud/dataplane/lbmap"
	"github.com/govcloud/govcloud/dataplane/viproute"
)

// The reconcile loop's decisions, without root: the agent runs on the fakes beside hostnet,
// lbmap, viproute and bgp, with a fake controller and fake health checks.

var errAway = errors.New("controller unreachable")

// fakeController serves the queued desired states, then (away) fails every call or (not
// away) answers "nothing new" after a short long-poll.
type fakeController struct {
	mu       sync.Mutex
	states   []*desired.State
	away     bool
	peers    map[string]hoststatus.Backends
	peersErr error // what PeerHealth fails with when not away
	reports  []hoststatus.Status
	failed   int           // calls refused while away
	hold     chan struct{} // non-nil: PutHostStatus waits for it (a controller slow to store)
}

func (c *fakeController) Desired(ctx context.Context, _ string, _ int64, timeout time.Duration) (*desired.State, error) {
	c.mu.Lock()
	if len(c.states) > 0 {
		st := c.states[0]
		c.states = c.states[1:]
		c.mu.Unlock()
		return st, nil
	}
	if c.away {
		c.failed++
		c.mu.Unlock()
		return nil, errAway
	}
	c.mu.Unlock()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(timeout):
		return nil, nil
	}
}

func (c *fakeController) PutHostStatus(ctx context.Context, _ string, status any) error {
	c.mu.Lock()
	hold := c.hold
	c.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.away {
		c.failed++
		return errAway
	}
	c.reports = append(c.reports, status.(hoststatus.Status))
	return nil
}

func (c *fakeController) PeerHealth(context.Context, string) (map[string]hoststatus.Backends, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.away {
		c.failed++
		return nil, errAway
	}
	return c.peers, c.peersErr
}

func (c *fakeController) set(fn func(c *fakeController)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fn(c)
}

// fakeHealth stands in for the Checker: backends are up unless marked down.
type fakeHealth struct {
	mu      sync.Mutex
	down    map[hoststatus.BackendKey]bool
	targets []probeTarget
	changed chan struct{}
}

func (h *fakeHealth) Set(t []probeTarget) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.targets = slices.Clone(t)
}

func (h *fakeHealth) Healthy(k hoststatus.BackendKey) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.down[k]
}

func (h *fakeHealth) States() hoststatus.Backends {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := hoststatus.Backends{}
	for _, t := range h.targets {
		if h.down[t.key] {
			out[t.key] = hoststatus.Health{Reason: "refused"}
		} else {
			out[t.key] = hoststatus.Health{Up: true}
		}
	}
	return out
}

func (h *fakeHealth) Changed() <-chan struct{} { return h.changed }
func (h *fakeHealth) Close()                   {}

// rig is an agent on fakes.
type rig struct {
	a      *Agent
	ctl    *fakeController
	hn     *hostnet.Fake
	lb     *lbmap.Fake
	routes *viproute.Fake
	bgp    *bgp.Fake
	health *fakeHealth
}

func newRig(t testing.TB, host string, keep bool) *rig {
	t.Helper()
	r := &rig{ctl: &fakeController{}, hn: &hostnet.Fake{}, lb: &lbmap.Fake{}, routes: &viproute.Fake{}, bgp: &bgp.Fake{},
		health: &fakeHealth{down: map[hoststatus.BackendKey]bool{}, changed: make(chan struct{}, 1)}}
	a, err := New(Config{Host: host, Controller: r.ctl, HostNet: r.hn, LB: r.lb, Routes: r.routes, Speaker: r.bgp, Keep: keep,
		PollTimeout: 20 * time.Millisecond, PeerPoll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	a.checks.Close() // the real checker, never started: no probe leaves the test
	a.checks = r.health
	a.resolve = func(netip.Addr) {} // no datagram leaves the test either
	r.a = a
	return r
}

// pass sets the agent's last desired state and applies it once, as Run does.
func (r *rig) pass(t testing.TB, st *desired.State) hoststatus.Status {
	t.Helper()
	r.a.mu.Lock()
	r.a.last = st
	r.a.mu.Unlock()
	r.a.apply(context.Background(), st)
	return r.a.Status()
}

func key(svc, addr string) hoststatus.BackendKey {
	return hoststatus.BackendKey{Service: svc, Addr: netip.MustParseAddr(addr)}
}

// lbBackends is the programmed backends (tunnel endpoint/weight) of the LB service named.
func lbBackends(t *testing.T, f *lbmap.Fake, name string) []string {
	t.Helper()
	for _, s := range f.State().Services {
		if s.Name == name {
			var out []string
			for _, b := range s.Backends {
				out = append(out, b.Addr.String()+"/"+strconv.Itoa(int(b.Weight)))
			}
			return out
		}
	}
	t.Fatalf("no LB service %q in %v", name, f.State().Services)
	return nil
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// dataplaneSnapshot is everything the fakes hold.
type dataplaneSnapshot struct {
	HostNet   hostnet.HostNetwork
	LB        lbmap.FakeState
	Routes    map[netip.Addr][]viproute.NextHop
	BGPConfig bgp.Config
	Adverts   []bgp.Advertisement
	HNClosed  bool
}

func (r *rig) snapshot() dataplaneSnapshot {
	hn, _ := r.hn.Current()
	cfg, ads := r.bgp.State()
	s := dataplaneSnapshot{HostNet: hn, LB: r.lb.State(), Routes: r.routes.Routes(), BGPConfig: cfg, Adverts: ads, HNClosed: r.hn.Closed}
	s.LB.Sets = 0 // re-applying the same services is not a change
	return s
}

// TestReconcileFailStatic: with the controller away — the long-poll failing, the peers'
// reports unreadable, status reports refused — the agent changes nothing: the host network,
// the load balancer (still attached, same services), the VIP routes and the BGP
// advertisements stay as the last desired state made them, and keep forwarding.
func TestReconcileFailStatic(t *testing.T) {
	for _, tc := range []struct {
		name string
		away func(c *fakeController)
	}{
		{"controller unreachable", func(c *fakeController) { c.away = true }},
		{"controller up with nothing new and no peer reports", func(c *fakeController) { c.peers = nil }},
		{"peers' health unreadable", func(c *fakeController) {
			c.peersErr = &json.UnmarshalTypeError{Value: "number", Field: "h2"} // as the client would fail
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, "h1", false)
			st := labState()
			r.ctl.set(func(c *fakeController) { c.states = []*desired.State{st} })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- r.a.Run(ctx) }()
			eventually(t, "first pass reported", 5*time.Second, func() bool {
				r.ctl.mu.Lock()
				defer r.ctl.mu.Unlock()
				return len(r.ctl.reports) > 0
			})
			before := r.snapshot()
			if before.LB.Uplink != "eth0" || len(before.LB.Services) != 1 || len(before.Routes) != 2 || len(before.Adverts) != 1 { // LB: the public VIP; routes: it (local backends) and the internal one (all)
				t.Fatalf("first pass did not program the dataplane: %+v", before)
			}
			r.ctl.set(tc.away)
			r.ctl.set(func(c *fakeController) { c.failed = 0 })
			// Three refused long-polls take the watch's backoff through 200 and 400 ms; peer
			// polls every 10 ms meanwhile. A health change forces a pass on the last state.
			time.Sleep(700 * time.Millisecond)
			r.health.changed <- struct{}{}
			time.Sleep(100 * time.Millisecond)
			after := r.snapshot()
			if !reflect.DeepEqual(before, after) {
				t.Fatalf("dataplane changed with the controller away:\nbefore %+v\nafter  %+v", before, after)
			}
			if got := r.a.Status(); !got.Ready || got.XDP != "attached to eth0" || got.Revision != st.Revision {
				t.Fatalf("status with the controller away: %+v", got)
			}
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return after its context ended")
			}
		})
	}
}

// TestSlowReportHoldsNoPass: while the controller takes its time storing a report, the agent's
// passes go on (a pass does not wait for its report), and what the controller gets once it
// answers again is the newest report, the ones superseded meanwhile not sent.
func TestSlowReportHoldsNoPass(t *testing.T) {
	r := newRig(t, "h1", false)
	hold := make(chan struct{})
	first, second := labState(), labState()
	first.Revision, second.Revision = 10, 11
	r.ctl.set(func(c *fakeController) { c.hold, c.states = hold, []*desired.State{first} })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.a.Run(ctx) }()
	eventually(t, "first pass", 5*time.Second, func() bool { return r.a.Status().Revision == first.Revision })
	r.ctl.set(func(c *fakeController) { c.states = []*desired.State{second} })
	eventually(t, "second pass while the first report is still being stored", 2*time.Second, func() bool {
		return r.a.Status().Revision == second.Revision
	})
	r.ctl.set(func(c *fakeController) { c.hold = nil })
	close(hold)
	eventually(t, "the newest report stored", 5*time.Second, func() bool {
		r.ctl.mu.Lock()
		defer r.ctl.mu.Unlock()
		n := len(r.ctl.reports)
		return n > 0 && r.ctl.reports[n-1].Revision == second.Revision
	})
	r.ctl.mu.Lock()
	for _, rep := range r.ctl.reports {
		if rep.Revision != first.Revision && rep.Revision != second.Revision {
			t.Errorf("report of revision %d, want %d or %d", rep.Revision, first.Revision, second.Revision)
		}
	}
	if len(r.ctl.reports) > 2 {
		t.Errorf("%d reports stored, want at most 2 (the one held, then the newest)", len(r.ctl.reports))
	}
	r.ctl.mu.Unlock()
	cancel()
	<-done
}

// TestCloseKeepsOrRemovesTheDataplane: Close with Keep (an upgrade) leaves XDP attached, the
// pins, the VIP routes and BGP routes (graceful) in place; without Keep it removes them.
func TestCloseKeepsOrRemovesTheDataplane(t *testing.T) {
	for _, tc := range []struct {
		keep                      bool
		wantUplink                string
		wantUnpinned, wantNoRoute bool
	}{
		{keep: true, wantUplink: "eth0"},
		{keep: false, wantUplink: "", wantUnpinned: true, wantNoRoute: true},
	} {
		r := newRig(t, "h1", tc.keep)
		r.pass(t, labState())
		if err := r.a.Close(); err != nil {
			t.Fatalf("keep=%v: Close: %v", tc.keep, err)
		}
		s := r.lb.State()
		if s.Uplink != tc.wantUplink || s.Unpinned != tc.wantUnpinned || !s.Closed || !r.routes.Closed || !r.hn.Closed {
			t.Errorf("keep=%v: after Close uplink %q unpinned %v closed lb %v routes %v hostnet %v", tc.keep, s.Uplink, s.Unpinned, s.Closed, r.routes.Closed, r.hn.Closed)
		}
		if got := len(r.routes.Routes()) == 0; got != tc.wantNoRoute {
			t.Errorf("keep=%v: VIP routes %v after Close", tc.keep, r.routes.Routes())
		}
	}
}

// TestReconcilePeerReportsBackendDown: a peer's report takes a backend out of the load
// balancer (and the VIP out of BGP when nothing healthy is left) only for backends the
// desired state places on that peer; a report that comes back up puts it back.
func TestReconcilePeerReportsBackendDown(t *testing.T) {
	const www = "lands-www/80/tcp"
	both := []string{"198.18.0.11/3", "198.18.0.12/1"} // h1 (self): weights 1+2; h2: 1
	for _, tc := range []struct {
		name        string
		reports     []map[string]hoststatus.Backends // read in turn, one pass after each
		localDown   []hoststatus.BackendKey          // this host's own checks
		wantChanged bool                             // the last read changed what peers hold down
		wantWWW     []string
		wantAPI     []string // next hops of the internal VIP's route (health-api)
		wantAdverts []string
	}{
		{name: "no reports", reports: []map[string]hoststatus.Backends{nil},
			wantWWW: both, wantAPI: []string{"198.18.30.3"}, wantAdverts: []string{"198.19.255.2/32"}},
		{name: "h2 reports its own lands-www backend down",
			reports:     []map[string]hoststatus.Backends{{"h2": hoststatus.Backends{key("lands-www", "198.18.20.3"): {Reason: "refused"}}}},
			wantChanged: true, wantWWW: []string{"198.18.0.11/3"}, wantAPI: []string{"198.18.30.3"}, wantAdverts: []string{"198.19.255.2/32"}},
		{name: "h2 reports its own health-api backend down",
			reports:     []map[string]hoststatus.Backends{{"h2": hoststatus.Backends{key("health-api", "198.18.30.3"): {Reason: "timeout"}}}},
			wantChanged: true, wantWWW: both, wantAPI: nil, wantAdverts: []string{"198.19.255.2/32"}},
		{name: "h2 reports h1's backends down",
			reports: []map[string]hoststatus.Backends{{"h2": hoststatus.Backends{key("lands-www", "198.18.20.2"): {Reason: "refused"}, key("lands-www", "198.18.20.4"): {Reason: "refused"}}}},
			wantWWW: both, wantAPI: []string{"198.18.30.3"}, wantAdverts: []string{"198.19.255.2/32"}},
		{name: "a host not in the desired state reports h2's backend down",
			reports: []map[string]hoststatus.Backends{{"h9": hoststatus.Backends{key("lands-www", "198.18.20.3"): {Reason: "refused"}}}},
			wantWWW: both, wantAPI: []string{"198.18.30.3"}, wantAdverts: []string{"198.19.255.2/32"}},
		{name: "h2 reports its backend up",
			reports: []map[string]hoststatus.Backends{{"h2": hoststatus.Backends{key("lands-www", "198.18.20.3"): {Up: true}}}},
			wantWWW: both, wantAPI: []string{"198.18.30.3"}, wantAdverts: []string{"198.19.255.2/32"}},
		{name: "h2 reports its backend down, then up again",
			reports: []map[string]hoststatus.Backends{
				{"h2": hoststatus.Backends{key("lands-www", "198.18.20.3"): {Reason: "refused"}}},
				{"h2": hoststatus.Backends{key("lands-www", "198.18.20.3"): {Up: true}}}},
			wantChanged: true, wantWWW: both, wantAPI: []string{"198.18.30.3"}, wantAdverts: []string{"198.19.255.2/32"}},
		{name: "h2's backend down by report, h1's by its own checks: nothing left to advertise",
			reports:     []map[string]hoststatus.Backends{{"h2": hoststatus.Backends{key("lands-www", "198.18.20.3"): {Reason: "refused"}}}},
			localDown:   []hoststatus.BackendKey{key("lands-www", "198.18.20.2"), key("lands-www", "198.18.20.4")},
			wantChanged: true, wantWWW: nil, wantAPI: []string{"198.18.30.3"}, wantAdverts: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, "h1", false)
			for _, k := range tc.localDown {
				r.health.down[k] = true
			}
			st := labState()
			r.pass(t, st)
			var changed bool
			for _, rep := range tc.reports {
				r.ctl.set(func(c *fakeController) { c.peers = rep })
				changed = r.a.pollPeers(context.Background())
				r.pass(t, st)
			}
			if changed != tc.wantChanged {
				t.Errorf("last peer read changed=%v, want %v", changed, tc.wantChanged)
			}
			if got := lbBackends(t, r.lb, www); !slices.Equal(got, tc.wantWWW) {
				t.Errorf("lands-www backends %v, want %v", got, tc.wantWWW)
			}
			var gotAPI []string
			for _, nh := range r.routes.Routes()[netip.MustParseAddr("198.19.0.10")] {
				gotAPI = append(gotAPI, nh.Addr.String())
			}
			if got := gotAPI; !slices.Equal(got, tc.wantAPI) {
				t.Errorf("health-api backends %v, want %v", got, tc.wantAPI)
			}
			if got := r.bgp.Advertised(); !slices.Equal(got, tc.wantAdverts) {
				t.Errorf("advertised %v, want %v", got, tc.wantAdverts)
			}
		})
	}
}

// TestReconcileReadinessPerSegment: every segment and service of the desired state has its
// own readiness in the status; a host-network failure marks the segments not ready and leaves
// the services ready, a load-balancer or VIP-route failure the reverse; any failure makes the
// host not ready and is named in its error.
func TestReconcileReadinessPerSegment(t *testing.T) {
	errBoom := errors.New("boom")
	for _, tc := range []struct {
		name         string
		break_       func(r *rig, st *desired.State)
		wantSegments string // "ready" or the prefix "not ready"
		wantServices string
		wantXDP      string
		wantError    string // substring of the status error ("" = ready)
	}{
		{"everything converges", func(*rig, *desired.State) {}, "ready", "ready", "attached to eth0", ""},
		{"host network fails", func(r *rig, _ *desired.State) { r.hn.Err = errBoom }, "not ready", "ready", "attached to eth0", "host network: boom"},
		{"desired host network does not translate", func(_ *rig, st *desired.State) { st.Segments[1].Prefix4 = netip.Prefix{} },
			"not ready", "ready", "attached to eth0", "host network:"},
		{"load balancer refuses the services", func(r *rig, _ *desired.State) { r.lb.SetErr = errBoom }, "ready", "not ready", "attached to eth0", "load balancer: boom"},
		{"VIP routes fail", func(r *rig, _ *desired.State) { r.routes.Err = errBoom }, "ready", "not ready", "attached to eth0", "vip routes: boom"},
		{"XDP does not attach", func(r *rig, _ *desired.State) { r.lb.AttachErr = errBoom }, "ready", "ready", "not attached: attaching xdp to eth0: boom", "attaching xdp to eth0: boom"},
		{"BGP speaker refuses", func(r *rig, _ *desired.State) { r.bgp.Err = errBoom }, "ready", "ready", "attached to eth0", "bgp: boom"},
		{"no uplink: segments cannot be trunked, XDP not attached", func(_ *rig, st *desired.State) { st.Uplink = "" },
			"not ready", "ready", "", "host network: segments need an uplink interface"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, "h1", false)
			st := labState()
			tc.break_(r, st)
			got := r.pass(t, st)
			var segs []string
			for _, s := range st.Segments {
				segs = append(segs, s.Name)
				if v := got.Segments[s.Name]; !strings.HasPrefix(v, tc.wantSegments) {
					t.Errorf("segment %s: %q, want %q", s.Name, v, tc.wantSegments)
				}
			}
			if len(got.Segments) != len(segs) {
				t.Errorf("segments in status %v, want exactly %v", got.Segments, segs)
			}
			for _, s := range st.Services {
				if v := got.Services[s.Name]; !strings.HasPrefix(v, tc.wantServices) {
					t.Errorf("service %s: %q, want %q", s.Name, v, tc.wantServices)
				}
			}
			if len(got.Services) != len(st.Services) {
				t.Errorf("services in status %v, want %d", got.Services, len(st.Services))
			}
			if got.XDP != tc.wantXDP {
				t.Errorf("xdp %q, want %q", got.XDP, tc.wantXDP)
			}
			if got.Ready != (tc.wantError == "") || !strings.Contains(got.Error, tc.wantError) {
				t.Errorf("ready %v error %q, want error containing %q", got.Ready, got.Error, tc.wantError)
			}
			r.ctl.mu.Lock()
			defer r.ctl.mu.Unlock()
			if len(r.ctl.reports) != 1 || !reflect.DeepEqual(r.ctl.reports[0], got) {
				t.Errorf("reported %+v, want the status %+v", r.ctl.reports, got)
			}
		})
	}
}

// TestReconcileAdvertisesOnlyWhileAttachedAndHealthy: a public VIP is advertised only while
// the load balancer is attached to the uplink and has the services programmed, and the VIP
// has a healthy backend somewhere; internal VIPs never are.
func TestReconcileAdvertisesOnlyWhileAttachedAndHealthy(t *testing.T) {
	errBoom := errors.New("boom")
	allLocal := []hoststatus.BackendKey{key("lands-www", "198.18.20.2"), key("lands-www", "198.18.20.4")}
	vip := []string{"198.19.255.2/32"}
	for _, tc := range []struct {
		name      string
		break_    func(r *rig, st *desired.State)
		localDown []hoststatus.BackendKey
		peerDown  hoststatus.Backends // h2's report
		want      []string
	}{
		{name: "attached, backends healthy", break_: func(*rig, *desired.State) {}, want: vip},
		{name: "XDP does not attach", break_: func(r *rig, _ *desired.State) { r.lb.AttachErr = errBoom }},
		{name: "no uplink: XDP not attached here", break_: func(_ *rig, st *desired.State) { st.Uplink = "" }},
		{name: "load balancer refuses the services", break_: func(r *rig, _ *desired.State) { r.lb.SetErr = errBoom }},
		{name: "this host's backends down, h2's healthy", break_: func(*rig, *desired.State) {}, localDown: allLocal, want: vip},
		{name: "h2's backend down, this host's healthy", break_: func(*rig, *desired.State) {},
			peerDown: hoststatus.Backends{key("lands-www", "198.18.20.3"): {Reason: "refused"}}, want: vip},
		{name: "every backend down", break_: func(*rig, *desired.State) {}, localDown: allLocal,
			peerDown: hoststatus.Backends{key("lands-www", "198.18.20.3"): {Reason: "refused"}}},
		{name: "VIP routes fail: still attached and programmed", break_: func(r *rig, _ *desired.State) { r.routes.Err = errBoom }, want: vip},
		{name: "no BGP peers", break_: func(_ *rig, st *desired.State) { st.BGP.Peers = nil }},
		{name: "no BGP", break_: func(_ *rig, st *desired.State) { st.BGP = nil }},
		{name: "the service turned internal", break_: func(_ *rig, st *desired.State) { st.Services[0].Scope = "internal" }},
		// A VIP whose backends are all drained (weight 0) or down takes no new connection:
		// withdrawn, though its established flows still drain.
		{name: "every backend drained", break_: func(_ *rig, st *desired.State) { drain(st, 0, 1, 2) }},
		{name: "this host's backends drained, h2's down", break_: func(_ *rig, st *desired.State) { drain(st, 0, 1) },
			peerDown: hoststatus.Backends{key("lands-www", "198.18.20.3"): {Reason: "refused"}}},
		{name: "this host's backends down, h2's drained", break_: func(_ *rig, st *desired.State) { drain(st, 2) }, localDown: allLocal},
		{name: "one of this host's backends drained, the other down, h2's drained", break_: func(_ *rig, st *desired.State) { drain(st, 0, 2) },
			localDown: allLocal[1:]},
		{name: "h2's backend drained, this host's healthy", break_: func(_ *rig, st *desired.State) { drain(st, 2) }, want: vip},
		{name: "this host's backends drained, h2's healthy", break_: func(_ *rig, st *desired.State) { drain(st, 0, 1) }, want: vip},
		{name: "uplink would hide VLAN tags from XDP: not attached", break_: func(r *rig, _ *desired.State) {
			r.lb.AttachErr = fmt.Errorf("attaching xdp to eth0: %w: eth0: rx-vlan-hw-parse is fixed on", lbmap.ErrVLANTagsHidden)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, "h1", false)
			st := labState()
			tc.break_(r, st)
			for _, k := range tc.localDown {
				r.health.down[k] = true
			}
			r.a.mu.Lock()
			r.a.last = st
			r.a.mu.Unlock()
			if tc.peerDown != nil {
				r.ctl.set(func(c *fakeController) { c.peers = map[string]hoststatus.Backends{"h2": tc.peerDown} })
				r.a.pollPeers(context.Background())
			}
			r.pass(t, st)
			if got := r.bgp.Advertised(); !slices.Equal(got, tc.want) {
				t.Errorf("advertised %v, want %v", got, tc.want)
			}
		})
	}
	// The status says how the uplink hands VLAN tags to XDP, or why it was not attached.
	r := newRig(t, "h1", false)
	r.lb.VLANNote = "vlan tags in the frame (rx-vlan-hw-parse off on eth0)"
	if st := r.pass(t, labState()); st.XDP != "attached to eth0; vlan tags in the frame (rx-vlan-hw-parse off on eth0)" {
		t.Fatalf("status XDP %q", st.XDP)
	}
	r = newRig(t, "h1", false)
	r.lb.AttachErr = fmt.Errorf("attaching xdp to eth0: %w", lbmap.ErrVLANTagsHidden)
	if st := r.pass(t, labState()); !strings.Contains(st.XDP, "not attached") || !strings.Contains(st.XDP, "VLAN tags would be hidden") {
		t.Fatalf("status XDP %q", st.XDP)
	}
	// Attaching again after a failure brings the advertisement back, on the next pass.
	r = newRig(t, "h1", false)
	r.lb.AttachErr = errBoom
	r.pass(t, labState())
	if got := r.bgp.Advertised(); len(got) != 0 {
		t.Fatalf("advertised %v while XDP is not attached", got)
	}
	r.lb.AttachErr = nil
	r.pass(t, labState())
	if got := r.bgp.Advertised(); !slices.Equal(got, vip) {
		t.Fatalf("advertised %v after XDP attached, want %v", got, vip)
	}
}

// drain sets the weight of the first service's backends at the indexes to 0.
func drain(st *desired.State, idx ...int) {
	for _, i := range idx {
		st.Services[0].Backends[i].Weight = 0
	}
}

// A pass that did not converge (the host network waits for a guest port) is retried as soon
// as a guest port appears (Config.DeviceChanges), not at its backoff; a device appearing
// while everything converged starts no pass.
func TestDeviceChangeRetriesAFailedPass(t *testing.T) {
	r := newRig(t, "h1", false)
	devices := make(chan struct{}, 1)
	r.a.cfg.DeviceChanges = devices
	r.hn.SetErr(errors.New(`guest port gv0001: Link not found`))
	r.ctl.set(func(c *fakeController) { c.states = []*desired.State{labState()} })
	passes := func() int { return r.lb.State().Sets } // every pass sets the LB, converged or not
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.a.Run(ctx)
	eventually(t, "two failed passes", 3*time.Second, func() bool { return passes() >= 2 }) // at 0 and 500 ms; the next at +1 s
	time.Sleep(100 * time.Millisecond)
	before := passes()
	r.hn.SetErr(nil)
	start := time.Now()
	devices <- struct{}{}
	eventually(t, "a pass after the guest port appeared", 2*time.Second, func() bool { _, ok := r.hn.Current(); return ok })
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("pass %v after the device appeared: the backoff (1 s) decided, not the device", d)
	}
	time.Sleep(50 * time.Millisecond)
	after := passes()
	devices <- struct{}{} // converged: no pass
	time.Sleep(200 * time.Millisecond)
	if passes() != after || after != before+1 {
		t.Fatalf("passes: %d before the device, %d after its pass, %d after a device while converged", before, after, passes())
	}
}

// A checked backend placed on another host after the first pass counts as down until a peer
// read that began peerSettle after it appeared: then it is what its host reports (down while
// unchecked, up once absent from the down list). Backends of the first pass (a restarted
// agent's) and of services without a check are in use at once.
func TestNewRemoteBackendWaitsForAPeerRead(t *testing.T) {
	r := newRig(t, "h1", false)
	st := labState()
	r.pass(t, st)
	if got := lbBackends(t, r.lb, "lands-www/80/tcp"); !slices.Equal(got, []string{"198.18.0.11/3", "198.18.0.12/1"}) {
		t.Fatalf("first pass: backends %v, want both hosts' (seeded)", got)
	}
	st = labState()
	st.Revision = 2
	hc := &desired.HealthCheck{Type: "tcp", IntervalMs: 1000, TimeoutMs: 500, HealthyThreshold: 2, UnhealthyThreshold: 2}
	st.Services = append(st.Services,
		desired.Service{Name: "new-www", Department: "lands", VIP: netip.MustParseAddr("198.19.255.9"), Scope: "public", Mode: "dsr", TableID: 1001,
			Ports: []desired.Port{{Port: 80, Protocol: "tcp", TargetPort: 80}}, HealthCheck: hc,
			Backends: []desired.Backend{{Address: netip.MustParseAddr("198.18.20.9"), Weight: 1, VM: "new-1", Host: "h2", Segment: "lands-web"}}},
		desired.Service{Name: "new-udp", Department: "lands", VIP: netip.MustParseAddr("198.19.255.10"), Scope: "public", Mode: "dsr", TableID: 1001,
			Ports:    []desired.Port{{Port: 53, Protocol: "udp", TargetPort: 53}},
			Backends: []desired.Backend{{Address: netip.MustParseAddr("198.18.20.10"), Weight: 1, VM: "new-2", Host: "h2", Segment: "lands-web"}}})
	inUse := func(when string, want bool) {
		t.Helper()
		got := lbBackends(t, r.lb, "new-www/80/tcp")
		if adv := slices.Contains(r.bgp.Advertised(), "198.19.255.9/32"); adv != want || (len(got) == 1) != want {
			t.Fatalf("%s: new remote backend: LB backends %v, advertised %v; want in use %v", when, got, adv, want)
		}
	}
	unchecked := map[string]hoststatus.Backends{"h2": {key("new-www", "198.18.20.9"): {Reason: "not checked yet"}}}
	r.pass(t, st)
	inUse("before any peer read", false)
	if got := lbBackends(t, r.lb, "new-udp/53/udp"); len(got) != 1 {
		t.Fatalf("new remote backend without a check: LB backends %v, want it in use at once", got)
	}
	r.ctl.set(func(c *fakeController) { c.peers = nil }) // its host has not reported it yet
	r.a.pollPeers(context.Background())                  // began right after it appeared: does not count
	r.pass(t, st)
	inUse("after a read that began too early", false)
	time.Sleep(peerSettle)
	r.ctl.set(func(c *fakeController) { c.peers = unchecked })
	r.a.pollPeers(context.Background())
	r.pass(t, st)
	inUse("its host reports it unchecked", false)
	r.ctl.set(func(c *fakeController) { c.peers = nil })
	r.a.pollPeers(context.Background())
	r.pass(t, st)
	inUse("its host checked it (no longer down)", true)
}

// TestReadinessPerGuest: one guest's missing port is reported as that guest's (its VM not
// ready, with the port and the reason), not as every segment of the host being not ready; the
// other guests and the segments stay ready, and the host's error names the guest. Once the
// port is there, the guest is ready.
func TestReadinessPerGuest(t *testing.T) {
	r := newRig(t, "h1", false)
	st := labState()
	st.VMs = append(st.VMs, desired.VM{Name: "health-web-1", Department: "health", Interfaces: []desired.Interface{{Segment: "health-web", VLAN: 130,
		MAC: "02:00:00:00:30:02", Prefix4: netip.MustParsePrefix("198.18.30.2/24"), Gateway4: netip.MustParseAddr("198.18.30.1")}}})
	broken := GuestPort("health-web-1", "health-web")
	r.hn.SetErr(errors.Join(&hostnet.PortError{Ifname: broken, Segment: "health-web", Err: errors.New("Link not found")}))
	got := r.pass(t, st)
	for _, s := range st.Segments {
		if v := got.Segments[s.Name]; v != "ready" {
			t.Errorf("segment %s: %q, want ready (only a guest is broken)", s.Name, v)
		}
	}
	want := map[string]string{"lands-web-1": "ready", "health-web-1": "not ready: guest " + broken + ` on segment "health-web": Link not found`}
	if !reflect.DeepEqual(got.Guests, want) {
		t.Errorf("guests %q, want %q", got.Guests, want)
	}
	if got.Ready || !strings.Contains(got.Error, broken) {
		t.Errorf("host ready=%v error %q: want not ready, naming port %s", got.Ready, got.Error, broken)
	}
	// A host-network fault other than a port's: segments and every guest wait on it.
	r.hn.SetErr(errors.Join(errors.New("trunk: boom"), &hostnet.PortError{Ifname: broken, Segment: "health-web", Err: errors.New("Link not found")}))
	got = r.pass(t, st)
	if v := got.Segments["lands-web"]; v != "not ready: trunk: boom" {
		t.Errorf("segment lands-web: %q, want not ready: trunk: boom", v)
	}
	if v := got.Guests["lands-web-1"]; !strings.HasPrefix(v, "not ready: its segments") {
		t.Errorf("guest lands-web-1 with the segments broken: %q", v)
	}
	r.hn.SetErr(nil)
	got = r.pass(t, st)
	want = map[string]string{"lands-web-1": "ready", "health-web-1": "ready"}
	if !reflect.DeepEqual(got.Guests, want) || !got.Ready {
		t.Errorf("after the port appeared: guests %q ready=%v, want %q, ready", got.Guests, got.Ready, want)
	}
}

// TestStoppedGuestIsNoFault: a VM asked to be stopped has no port (libvirt keeps the domain
// without a tap). That is reported as "stopped" (while its port is still there, as what it
// is), the host stays ready, and its guest stays in
// the host network plan (guards and anti-spoofing ready for its start); another guest's
// missing port is still that guest's fault.
func TestStoppedGuestIsNoFault(t *testing.T) {
	r := newRig(t, "h1", false)
	st := labState()
	iface := func(mac, addr string) []desired.Interface {
		return []desired.Interface{{Segment: "health-web", VLAN: 130, MAC: mac, Prefix4: netip.MustParsePrefix(addr), Gateway4: netip.MustParseAddr("198.18.30.1")}}
	}
	st.VMs = append(st.VMs,
		desired.VM{Name: "health-off", Department: "health", PowerState: desired.PowerStopped, Interfaces: iface("02:00:00:00:30:03", "198.18.30.3/24")},
		desired.VM{Name: "health-on", Department: "health", PowerState: "running", Interfaces: iface("02:00:00:00:30:04", "198.18.30.4/24")})
	off, on := GuestPort("health-off", "health-web"), GuestPort("health-on", "health-web")
	missing := func(port string) error {
		return &hostnet.PortError{Ifname: port, Segment: "health-web", Err: errors.New("Link not found")}
	}
	for _, tc := range []struct {
		name      string
		err       error
		wantReady bool
		want      map[string]string
	}{
		{"stopped VM's port absent", errors.Join(missing(off)), true,
			map[string]string{"lands-web-1": "ready", "health-off": "stopped", "health-on": "ready"}},
		{"stopped absent, running VM's port absent too", errors.Join(missing(off), missing(on)), false,
			map[string]string{"lands-web-1": "ready", "health-off": "stopped", "health-on": "not ready: guest " + on + ` on segment "health-web": Link not found`}},
		{"stopped VM's port present (not stopped yet, or a netns guest that cannot stop)", nil, true,
			map[string]string{"lands-web-1": "ready", "health-off": "ready", "health-on": "ready"}},
	} {
		r.hn.SetErr(tc.err)
		got := r.pass(t, st)
		if !reflect.DeepEqual(got.Guests, tc.want) || got.Ready != tc.wantReady {
			t.Errorf("%s: guests %q ready=%v (error %q), want %q ready=%v", tc.name, got.Guests, got.Ready, got.Error, tc.want, tc.wantReady)
		}
		if strings.Contains(got.Error, off) {
			t.Errorf("%s: host error %q names the stopped VM's port %s", tc.name, got.Error, off)
		}
	}
	hn, err := hostNetwork(st)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(hn.Guests, func(g hostnet.Guest) bool { return g.Ifname == off }) {
		t.Errorf("stopped VM's guest %s left the host network plan: %+v", off, hn.Guests)
	}
}

// TestHealthPassLeavesHostNetwork: a pass for a backend's health (here or a peer's) leaves out
// the host network the previous pass made whole for the same desired state, and reports the
// same readiness; a new desired state, a full pass, or a host network the last Set did not
// converge is set again.
func TestHealthPassLeavesHostNetwork(t *testing.T) {
	r := newRig(t, "h1", false)
	first, second := labState(), labState()
	steps := []struct {
		desc       string
		st         *desired.State
		full       bool
		hnErr      error
		wantSets   int  // Sets the fake took (a failed one is not kept)
		wantStatus bool // the status equals the previous step's
	}{
		{"first pass", first, true, nil, 1, false},
		{"health changed", first, false, nil, 1, true},
		{"a peer's report changed", first, false, nil, 1, true},
		{"resync", first, true, nil, 2, true},
		{"new desired state, health-triggered", second, false, nil, 3, true},
		{"a device busy", second, true, errors.New("device busy"), 3, false},
		{"health changed after a failed Set", second, false, nil, 4, false},
		{"health changed again", second, false, nil, 4, true},
	}
	var prev hoststatus.Status
	for _, s := range steps {
		r.hn.SetErr(s.hnErr)
		r.a.mu.Lock()
		r.a.last = s.st
		r.a.mu.Unlock()
		r.a.pass(context.Background(), s.st, s.full)
		r.hn.SetErr(nil)
		if got := len(r.hn.Sets); got != s.wantSets {
			t.Errorf("%s: host network set %d times, want %d", s.desc, got, s.wantSets)
		}
		got := r.a.Status()
		if s.wantStatus && !reflect.DeepEqual(got.Segments, prev.Segments) {
			t.Errorf("%s: segments %v, want %v as before", s.desc, got.Segments, prev.Segments)
		}
		if s.wantStatus && !reflect.DeepEqual(got.Guests, prev.Guests) {
			t.Errorf("%s: guests %v, want %v as before", s.desc, got.Guests, prev.Guests)
		}
		prev = got
	}
}

// TestDeviceChangeSetsHostNetworkAgain: under Run, a health change leaves out a converged host
// network, but once a guest port appeared meanwhile (a VM re-made: a device change while
// converged) the next health pass sets the host network again, so the new port gets its guards.
func TestDeviceChangeSetsHostNetworkAgain(t *testing.T) {
	r := newRig(t, "h1", false)
	devices := make(chan struct{}, 1)
	r.a.cfg.DeviceChanges = devices
	st := labState()
	st.Revision = 7
	r.ctl.set(func(c *fakeController) { c.states = []*desired.State{st} })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.a.Run(ctx) }()
	sets := r.hn.SetCount
	eventually(t, "first pass", 5*time.Second, func() bool { return r.a.Status().Revision == st.Revision && sets() == 1 })
	for _, step := range []struct {
		desc     string
		device   bool
		wantSets int
	}{
		{"health changed", false, 1},
		{"a guest port re-made, then health changed", true, 2},
		{"health changed again", false, 2},
	} {
		if step.device {
			devices <- struct{}{}
			time.Sleep(50 * time.Millisecond) // taken while converged: no pass of its own
		}
		r.health.changed <- struct{}{}
		eventually(t, step.desc+": a pass", 5*time.Second, func() bool { return len(r.health.changed) == 0 })
		time.Sleep(50 * time.Millisecond)
		if got := sets(); got != step.wantSets {
			t.Errorf("%s: host network set %d times, want %d", step.desc, got, step.wantSets)
		}
	}
	cancel()
	<-done
}
