package controller

import (
	"strings"
	"testing"
	"time"
)

func TestAdvertiseURL(t *testing.T) {
	for _, tc := range []struct {
		desc, advertise, scheme, listen string
		external                        bool
		want, wantErr                   string
	}{
		{"listen address as is", "", "https://", "198.51.100.5:8480", true, "https://198.51.100.5:8480", ""},
		{"IPv6 listen address", "", "https://", "[2001:db8::5]:8480", true, "https://[2001:db8::5]:8480", ""},
		{"wildcard with external etcd refused", "", "https://", "0.0.0.0:8480", true, "", "--advertise-url https://HOST:8480"},
		{"IPv6 wildcard with external etcd refused", "", "https://", "[::]:8480", true, "", "wildcard"},
		{"wildcard with embedded etcd: loopback", "", "https://", "0.0.0.0:8480", false, "https://127.0.0.1:8480", ""},
		{"given URL", "https://ctl1.govcloud.test:8480", "https://", "0.0.0.0:8480", true, "https://ctl1.govcloud.test:8480", ""},
		{"given URL trailing slash", "https://198.51.100.5:8480/", "https://", "0.0.0.0:8480", true, "https://198.51.100.5:8480", ""},
		{"given wildcard refused", "https://0.0.0.0:8480", "https://", "0.0.0.0:8480", true, "", "wildcard"},
		{"given scheme differs", "http://198.51.100.5:8480", "https://", "0.0.0.0:8480", true, "", `scheme "http"`},
		{"given without port", "https://198.51.100.5", "https://", "0.0.0.0:8480", true, "", "HOST:PORT"},
		{"given with path", "https://198.51.100.5:8480/api", "https://", "0.0.0.0:8480", true, "", "HOST:PORT"},
		{"plain HTTP API", "", "http://", "127.0.0.1:8480", false, "http://127.0.0.1:8480", ""},
	} {
		got, err := AdvertiseURL(tc.advertise, tc.scheme, tc.listen, tc.external)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: %q %v, want error naming %q", tc.desc, got, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || got != tc.want):
			t.Errorf("%s: %q %v, want %q", tc.desc, got, err, tc.want)
		}
	}
}

// TestLeaseSeconds: etcd's lease is the TTL rounded up to whole seconds (never shorter than
// asked, never 0); the controller's own view keeps the exact duration (election.lease).
func TestLeaseSeconds(t *testing.T) {
	for _, tc := range []struct {
		ttl  time.Duration
		want int64
	}{{100 * time.Millisecond, 1}, {500 * time.Millisecond, 1}, {time.Second, 1}, {1500 * time.Millisecond, 2}, {2 * time.Second, 2}, {5 * time.Second, 5}, {5001 * time.Millisecond, 6}} {
		if got := leaseSeconds(tc.ttl); got != tc.want {
			t.Errorf("leaseSeconds(%v) = %d, want %d", tc.ttl, got, tc.want)
		}
	}
}

// TestLeaseLapses: leadership counts exactly TTL after the last confirmed renewal, whatever
// etcd's whole-second lease says.
func TestLeaseLapses(t *testing.T) {
	e := &election{id: "c1", ttl: 300 * time.Millisecond}
	e.set("c1", true)
	e.guard.Key, e.guard.CreateRev = "/govcloud/leader/1", 1
	e.renewed(time.Now())
	if _, ok := e.lease(); !ok || !e.info().IsLeader {
		t.Fatal("no lease right after a renewal")
	}
	time.Sleep(350 * time.Millisecond)
	if _, ok := e.lease(); ok || e.info().IsLeader {
		t.Fatal("lease still valid 350 ms after the last renewal with a 300 ms TTL")
	}
	e.renewed(time.Now())
	if _, ok := e.lease(); !ok {
		t.Fatal("renewal did not restore the lease")
	}
}

// TestLateObservationKeepsLeader: an Observe answer naming the previous leader, made before
// this controller's campaign won and delivered after it, does not demote it (it used to clear
// "me": the controller then led, ran its allocators and refused every write). Observations
// still name the leader while this controller does not lead.
func TestLateObservationKeepsLeader(t *testing.T) {
	e := &election{id: "c3", ttl: time.Second}
	for _, step := range []struct {
		do         func()
		wantLeader string
		wantMe     bool
	}{
		{func() { e.observed("c2") }, "c2", false},                        // c2 leads, c3 campaigns
		{func() { e.set("c3", true); e.renewed(time.Now()) }, "c3", true}, // c3's campaign won
		{func() { e.observed("c2") }, "c3", true},                         // the late observation
		{func() { e.observed("c3") }, "c3", true},                         // the current one
		{func() { e.set("", false) }, "", false},                          // c3's lead ended
		{func() { e.observed("c1") }, "c1", false},                        // another leads
	} {
		step.do()
		info := e.info()
		if info.Leader != step.wantLeader || e.isMe() != step.wantMe || info.IsLeader != step.wantMe {
			t.Fatalf("leader %q me=%v isLeader=%v, want %q me=%v", info.Leader, e.isMe(), info.IsLeader, step.wantLeader, step.wantMe)
		}
	}
}

// TestExLeaderDoesNotForward: writes reaching a controller whose lead lapsed or ended within the
// drain window are served here (503 without a lease), not forwarded: they may have queued while
// it was paused as leader, and would run late at the new leader. A controller that never led,
// or whose lead ended longer ago, forwards to the leader it observes. Found by
// TestHAControlPlane: the write queued at a paused leader was forwarded when it resumed.
func TestExLeaderDoesNotForward(t *testing.T) {
	e := &election{id: "c2", ttl: 100 * time.Millisecond}
	for i, step := range []struct {
		name   string
		do     func()
		wantTo string // "" = serve here
	}{
		{"no leader known", func() {}, ""},
		{"c1 leads, c2 never led", func() { e.observed("c1") }, "c1"},
		{"c2 leads", func() { e.set("c2", true); e.renewed(time.Now()) }, ""},
		{"c2's lease lapsed (paused)", func() { e.validUntil = time.Now().Add(-time.Millisecond) }, ""},
		{"c2's lead ended", func() { e.set("", false) }, ""},
		{"c3 observed right after", func() { e.observed("c3") }, ""},
		{"c3 observed just inside the drain", func() { e.ledUntil = time.Now().Add(-e.drain() + 100*time.Millisecond) }, ""},
		{"the drain has passed", func() { e.ledUntil = time.Now().Add(-e.drain()) }, "c3"},
		{"c3's own id never forwards to itself", func() { e.id = "c3" }, ""},
	} {
		step.do()
		to, ok := e.forwardTo()
		if to != step.wantTo || ok != (step.wantTo != "") {
			t.Fatalf("step %d (%s): forwardTo = %q, %v; want %q", i, step.name, to, ok, step.wantTo)
		}
	}
	if d := (&election{ttl: 100 * time.Millisecond}).drain(); d != time.Second {
		t.Errorf("drain with a 100 ms TTL = %v, want the 1 s floor", d)
	}
	if d := (&election{ttl: 2 * time.Second}).drain(); d != 4*time.Second {
		t.Errorf("drain with a 2 s TTL = %v, want 4 s", d)
	}
}
