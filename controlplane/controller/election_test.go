package controller_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/api"
	"github.com/govcloud/govcloud/controlplane/controller"
	"github.com/govcloud/govcloud/controlplane/store"
	"github.com/govcloud/govcloud/controlplane/store/etcdtest"
)

func embeddedEtcd(t *testing.T) string {
	t.Helper()
	e, err := store.StartEmbedded(t.TempDir(), quiet, store.EmbeddedOptions{NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e.Endpoint
}

// running is a controller started by runCtrl.
type running struct {
	url  string
	stop context.CancelFunc
	done chan error
}

// runCtrl starts a controller (plain HTTP) on the external etcd endpoint; it fails the test if
// the controller ends before it serves.
func runCtrl(t *testing.T, endpoint, id string, ttl time.Duration) *running {
	t.Helper()
	ready := make(chan string, 1)
	opt := controller.Options{DataDir: t.TempDir(), Listen: "127.0.0.1:0", EtcdEndpoints: []string{endpoint}, ID: id,
		ElectionTTL: ttl, Out: io.Discard, TLS: controller.TLSOptions{InsecureHTTP: true}, Ready: func(a string) { ready <- a }}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- controller.Run(ctx, quiet, opt) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
			t.Errorf("controller %s did not stop within 20s", id)
		}
	})
	select {
	case a := <-ready:
		r.url = "http://" + a
	case err := <-r.done:
		r.done <- err
	case <-time.After(30 * time.Second):
		t.Fatalf("controller %s not serving after 30s", id)
	}
	return r
}

// readiness is the controller's /healthz.
func (r *running) readiness() api.Readiness {
	var out api.Readiness
	resp, err := (&http.Client{Timeout: 3 * time.Second}).Get(r.url + "/healthz")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return out
}

// waitFor polls cond every 10 ms up to d and returns how long it took.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	t0 := time.Now()
	for !cond() {
		if time.Since(t0) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(t0)
}

// TestDuplicateIDRefused: a controller started with the id of a live one is refused with an
// error naming the id (its registration would have replaced the other's, and writes forwarded
// to the leader went astray); one with another id runs beside it; and once the first stopped,
// a controller with its id registers at once.
func TestDuplicateIDRefused(t *testing.T) {
	ep := embeddedEtcd(t)
	ttl := time.Second
	a := runCtrl(t, ep, "dup", ttl)
	waitFor(t, 10*time.Second, "controller dup leads", func() bool { return a.readiness().Leader.IsLeader })

	t0 := time.Now()
	b := runCtrl(t, ep, "dup", ttl)
	select {
	case err := <-b.done:
		if !errors.Is(err, controller.ErrDuplicateID) || !strings.Contains(err.Error(), `"dup"`) || !strings.Contains(err.Error(), "another controller") {
			t.Fatalf("second controller with id dup: %v, want ErrDuplicateID naming \"dup\" and another controller", err)
		}
		b.done <- err
		t.Logf("second controller with id dup refused after %s: %v", time.Since(t0).Round(time.Millisecond), err)
	case <-time.After(10 * time.Second):
		t.Fatal("second controller with id dup still runs after 10s, want it refused")
	}

	c := runCtrl(t, ep, "other", ttl)
	waitFor(t, 5*time.Second, "controller other ready", func() bool { return c.readiness().Ready })
	select {
	case err := <-c.done:
		t.Fatalf("controller with id other ended: %v", err)
	default:
	}

	a.stop()
	if err := <-a.done; err != nil {
		t.Fatalf("controller dup stopping: %v", err)
	}
	a.done <- nil
	d := runCtrl(t, ep, "dup", ttl)
	took := waitFor(t, 5*time.Second, "a new controller dup after the first stopped leads or follows", func() bool { return d.readiness().Ready })
	select {
	case err := <-d.done:
		t.Fatalf("controller dup started after the first stopped ended: %v", err)
	case <-time.After(ttl + 2*time.Second): // past the window a duplicate is refused after
	}
	t.Logf("controller dup started again after the first stopped: ready after %s", took.Round(time.Millisecond))
}

// TestStopHandsOverAtOnce: a leader told to stop ends its lease, so another controller leads at
// once; a leader cut off from etcd (as if killed) is followed only after its lease expires.
// The stop used to hand over no faster than the cut (the lease revoke ran with the cancelled
// context: "context canceled").
func TestStopHandsOverAtOnce(t *testing.T) {
	ep := embeddedEtcd(t)
	const ttl = 2 * time.Second
	handover := func(stopLeader bool) time.Duration {
		link := etcdtest.NewLink(t, ep)
		a := runCtrl(t, link.URL, "a", ttl)
		waitFor(t, 10*time.Second, "a leads", func() bool { return a.readiness().Leader.IsLeader })
		b := runCtrl(t, ep, "b", ttl)
		waitFor(t, 10*time.Second, "b follows a", func() bool { r := b.readiness(); return r.Ready && r.Leader.Leader == "a" })
		if stopLeader {
			a.stop()
		} else {
			link.Cut.Store(true)
		}
		took := waitFor(t, 15*time.Second, "b leads", func() bool { return b.readiness().Leader.IsLeader })
		b.stop()
		<-b.done
		b.done <- nil
		a.stop()
		link.Cut.Store(false)
		return took
	}
	cut := handover(false)
	stopped := handover(true)
	t.Logf("next leader after the leader was cut off: %s; after it was told to stop: %s (TTL %s)", cut.Round(time.Millisecond), stopped.Round(time.Millisecond), ttl)
	if stopped > 700*time.Millisecond {
		t.Errorf("next leader %s after the leader was told to stop, want within 700ms (the lease revoked at once; cut off: %s)", stopped, cut)
	}
}

// TestStopWithSilentEtcd: controllers whose etcd stopped answering — the leader, and a follower
// waiting in its campaign — still stop within a few seconds when told to: every etcd call on
// the way out is bounded. A follower used to wait forever in the campaign's cleanup.
func TestStopWithSilentEtcd(t *testing.T) {
	ep := embeddedEtcd(t)
	link := etcdtest.NewLink(t, ep)
	const ttl = time.Second
	a := runCtrl(t, link.URL, "a", ttl)
	waitFor(t, 10*time.Second, "a leads", func() bool { return a.readiness().Leader.IsLeader })
	b := runCtrl(t, link.URL, "b", ttl)
	waitFor(t, 10*time.Second, "b follows a", func() bool { r := b.readiness(); return r.Ready && r.Leader.Leader == "a" })
	link.Cut.Store(true)
	time.Sleep(300 * time.Millisecond)
	t0 := time.Now()
	a.stop()
	b.stop()
	for _, r := range []struct {
		name string
		c    *running
	}{{"a (leader)", a}, {"b (follower)", b}} {
		select {
		case err := <-r.c.done:
			r.c.done <- err
			t.Logf("controller %s stopped %s after it was told to, etcd silent (err %v)", r.name, time.Since(t0).Round(time.Millisecond), err)
		case <-time.After(8*time.Second - time.Since(t0)):
			t.Fatalf("controller %s still runs 8s after it was told to stop, etcd silent", r.name)
		}
	}
}
