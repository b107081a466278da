package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/desired"
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
	return probeTarget{key: backendKey{Service: service, Addr: a}, addr: netip.AddrPortFrom(a, 80),
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
	if s := c.States()["www/198.18.20.4"]; s == "up" || s == "" {
		t.Fatalf("state of the dead backend %q, want down with a reason", s)
	}
}
