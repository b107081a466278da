package netdev

import (
	"context"
	"testing"
	"time"

	"github.com/govcloud/govcloud/dataplane/netnstest"
)

// TestWatchNewLinks: in a namespace of its own, a new link named with the prefix signals, one
// with another name or a change of an existing link does not (veths: no dummy module here).
func TestWatchNewLinks(t *testing.T) {
	netnstest.RequirePrivileged(t)
	ns := netnstest.New(t, "gcwatch")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan struct{}, 1)
	if err := ns.Do(func() error { return WatchNewLinks(ctx, "gv", out) }); err != nil {
		t.Fatal(err)
	}
	signalled := func(within time.Duration) bool {
		select {
		case <-out:
			return true
		case <-time.After(within):
			return false
		}
	}
	for _, step := range []struct {
		cmd  []string
		want bool
	}{
		{[]string{"ip", "link", "add", "other0", "type", "veth", "peer", "name", "other1"}, false},
		{[]string{"ip", "link", "add", "gv0001", "type", "veth", "peer", "name", "eth8"}, true},
		{[]string{"ip", "link", "add", "eth9", "type", "veth", "peer", "name", "gv0002"}, true},
		{[]string{"ip", "link", "set", "other0", "up"}, false},
	} {
		ns.MustRun(t, step.cmd[0], step.cmd[1:]...)
		wait := time.Second
		if !step.want {
			wait = 300 * time.Millisecond
		}
		if got := signalled(wait); got != step.want {
			t.Fatalf("%v: signalled %v, want %v", step.cmd, got, step.want)
		}
		for signalled(100 * time.Millisecond) { // a veth's peer and state changes: drained
		}
	}
}
