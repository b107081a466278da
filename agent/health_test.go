package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
)

// fakeDialer answers for the addresses marked open and refuses the rest.
type fakeDialer struct {
	mu   sync.Mutex
	open map[string]bool
}

func (f *fakeDialer) set(addr string, open bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.open[addr] = open
}

func (f *fakeDialer) dial(_ context.Context, _, addr string) (net.Conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.open[addr] {
		return nil, errors.New("connection refused")
	}
	a, b := net.Pipe()
	b.Close()
	return a, nil
}

func target(service, addr string) probeTarget {
	a := netip.MustParseAddr(addr)
	return probeTarget{key: hoststatus.BackendKey{Service: service, Addr: a}, addr: netip.AddrPortFrom(a, 80),
		hc: desired.HealthCheck{Type: "tcp", IntervalMs: 100, TimeoutMs: 50, HealthyThreshold: 3, UnhealthyThreshold: 3}}
}

// Backends a restarted agent finds start up (no flow moves before their checks run); a backend
// added later starts down and comes up on its first successful check, not after the healthy
// threshold; one that never answers stays down.
func TestCheckerNewBackendsWaitForTheirFirstCheck(t *testing.T) {
	fd := &fakeDialer{open: map[string]bool{}}
	c := NewChecker(slog.New(slog.NewTextHandler(io.Discard, nil)))
	c.dial = fd.dial
	defer c.Close()

	seed, booting, dead := target("www", "198.18.20.2"), target("www", "198.18.20.3"), target("www", "198.18.20.4")
	c.Set([]probeTarget{seed}) // refuses, but needs 3 failures to go down
	if !c.Healthy(seed.key) {
		t.Fatal("a backend of the first Set starts down")
	}
	c.Set([]probeTarget{seed, booting, dead})
	if c.Healthy(booting.key) || c.Healthy(dead.key) {
		t.Fatal("a backend added later starts up before any check")
	}
	fd.set(booting.addr.String(), true)
	deadline := time.Now().Add(2 * time.Second)
	for !c.Healthy(booting.key) {
		if time.Now().After(deadline) {
			t.Fatalf("booting backend not up 2s after it answers: %v", c.States())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c.Healthy(dead.key) {
		t.Fatalf("a backend that never answered is up: %v", c.States())
	}
	if s, ok := c.States()[dead.key]; !ok || s.Up || s.Reason == "" {
		t.Fatalf("state of the dead backend %+v (reported %v), want down with a reason", s, ok)
	}
}

// TestHTTPProbeStaysOnTheBackend: a health check never follows a redirect (an internal URL
// elsewhere is not fetched) and never sends its request to any address but the backend's.
func TestHTTPProbeStaysOnTheBackend(t *testing.T) {
	hit := make(chan string, 10)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hit <- r.URL.String() }))
	defer other.Close()
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/redirect":
			http.Redirect(w, r, other.URL+"/latest/meta-data", http.StatusFound)
		case "/down":
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			io.WriteString(w, "ok")
		}
	}))
	defer backend.Close()
	addr := netip.MustParseAddrPort(backend.Listener.Addr().String())
	c := &Checker{dial: (&net.Dialer{}).DialContext}
	for _, tc := range []struct {
		path   string
		wantUp bool
	}{
		{"/healthz", true},
		{"/redirect", true}, // a 3xx is an answer, not a hop
		{"/down", false},
		{"/healthz?full=1", true},
		{"http://" + other.Listener.Addr().String() + "/x", false}, // refused before any request
		{"//" + other.Listener.Addr().String() + "/x", false},
		{"@" + other.Listener.Addr().String() + "/x", false},
		{"healthz", false},
	} {
		tg := probeTarget{addr: addr, hc: desired.HealthCheck{Type: "http", Path: tc.path}}
		err := c.probe(context.Background(), tg, 2*time.Second)
		if (err == nil) != tc.wantUp {
			t.Errorf("path %q: error %v, want up=%v", tc.path, err, tc.wantUp)
		}
	}
	select {
	case u := <-hit:
		t.Fatalf("a probe reached another server: %s", u)
	default:
	}
}

// countingDialer is a fakeDialer that counts dials per address.
type countingDialer struct {
	fakeDialer
	n map[string]int
}

func (f *countingDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	f.mu.Lock()
	f.n[addr]++
	f.mu.Unlock()
	return f.fakeDialer.dial(ctx, network, addr)
}

func (f *countingDialer) count(addr string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n[addr]
}

// TestCheckerSharesProbes: backends of ten services on one VM (same address, port and check,
// as the scale lab's 10 services per VM) are one probe, not ten; each service still has its
// backend's state, and a service added later on a VM already found up is up at once (the
// same check has passed). A different check on the same address is a probe of its own.
func TestCheckerSharesProbes(t *testing.T) {
	fd := &countingDialer{fakeDialer: fakeDialer{open: map[string]bool{"198.18.20.2:80": true}}, n: map[string]int{}}
	c := NewChecker(slog.New(slog.NewTextHandler(io.Discard, nil)))
	c.dial = fd.dial
	defer c.Close()
	var ts []probeTarget
	for i := range 10 {
		ts = append(ts, target(fmt.Sprintf("svc%d", i), "198.18.20.2"))
	}
	c.Set(ts[:9])
	c.Set(ts)                          // svc9 added while running
	time.Sleep(550 * time.Millisecond) // about 5 intervals of 100 ms
	if n := fd.count("198.18.20.2:80"); n < 3 || n > 8 {
		t.Fatalf("%d dials to the shared backend in 550 ms with a 100 ms interval, want one probe's (about 6)", n)
	}
	st := c.States()
	for _, tg := range ts {
		if !c.Healthy(tg.key) || !st[tg.key].Up {
			t.Errorf("%s: not up (%+v)", tg.key, st[tg.key])
		}
	}
	if len(st) != 10 {
		t.Errorf("%d states, want one per service: %v", len(st), st)
	}
	slow := target("slow", "198.18.20.2")
	slow.hc.IntervalMs = 10000
	c.Set(append(ts, slow))
	if c.Healthy(slow.key) {
		t.Error("a backend with a check of its own, added later, is up before its first check")
	}
	c.Set(ts[:1])
	if _, ok := c.States()[ts[1].key]; ok || len(c.States()) != 1 {
		t.Errorf("removed services still reported: %v", c.States())
	}
}

// A backend added while the agent runs is probed fast until it first answers (a guest still
// booting takes traffic soon after it does, not an interval or a healthy threshold later),
// and a dead one is not probed faster than the backoff allows; both with a 1 s interval.
func TestCheckerProbesNewBackendsFastUntilTheyAnswer(t *testing.T) {
	cd := &countingDialer{fakeDialer: fakeDialer{open: map[string]bool{}}, n: map[string]int{}}
	c := NewChecker(slog.New(slog.NewTextHandler(io.Discard, nil)))
	c.dial = cd.dial
	defer c.Close()
	slow := func(service, addr string) probeTarget {
		t := target(service, addr)
		t.hc.IntervalMs = 1000
		return t
	}
	seed, booting, dead := slow("www", "198.18.20.2"), slow("www", "198.18.20.3"), slow("www", "198.18.20.4")
	c.Set([]probeTarget{seed})
	start := time.Now()
	c.Set([]probeTarget{seed, booting, dead})
	time.Sleep(150 * time.Millisecond)
	cd.set(booting.addr.String(), true)
	for !c.Healthy(booting.key) {
		if time.Since(start) > 900*time.Millisecond {
			t.Fatalf("booting backend (answering from 150 ms, interval 1 s) not up after %v", time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
	up := time.Since(start)
	time.Sleep(2*time.Second - up)
	n := cd.count(dead.addr.String())
	// 0, 100, 300, 700, 1500 ms: 5 probes in the first 2 s (one more or less for scheduling).
	if n < 4 || n > 6 {
		t.Fatalf("dead backend probed %d times in its first 2 s, want about 5 (100 ms doubling to the 1 s interval)", n)
	}
	if c.Healthy(dead.key) {
		t.Fatal("a backend that never answered is up")
	}
	t.Logf("booting backend up after %v; dead one probed %d times in 2 s", up, n)
}
