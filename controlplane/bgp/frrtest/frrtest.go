// Package frrtest runs FRR (package frr) inside a test's network namespace as a BGP peer,
// stopped and removed when the test ends.
package frrtest

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/bgp/frr"
	"github.com/govcloud/govcloud/dataplane/netnstest"
)

// Daemons is where Debian installs zebra and bgpd.
const Daemons = frr.Daemons

// Options say which daemons StartWith runs besides bgpd.
type Options = frr.Options

// Neighbor and Path are FRR's views of a neighbour and of one path of a prefix.
type (
	Neighbor = frr.Neighbor
	Path     = frr.Path
)

// Router is one FRR instance in a test's namespace.
type Router struct {
	*frr.Router
	NS *netnstest.NS
}

// Require skips (or fails under CI) when FRR is not installed.
func Require(tb testing.TB) {
	tb.Helper()
	netnstest.RequireTool(tb, "vtysh")
	for _, d := range []string{"zebra", "bgpd"} {
		if _, err := os.Stat(filepath.Join(Daemons, d)); err != nil {
			netnstest.RequireTool(tb, filepath.Join(Daemons, d))
		}
	}
}

// Start runs zebra (when withZebra, so BGP routes reach the kernel) and bgpd with conf in
// ns, waits until vtysh answers, and stops both when the test ends.
func Start(tb testing.TB, ns *netnstest.NS, conf string, withZebra bool) *Router {
	tb.Helper()
	return StartWith(tb, ns, conf, Options{Zebra: withZebra})
}

// StartWith runs the daemons o names and bgpd with conf in ns, waits until vtysh answers,
// and stops them when the test ends.
func StartWith(tb testing.TB, ns *netnstest.NS, conf string, o Options) *Router {
	tb.Helper()
	Require(tb)
	if o.BFD != "" {
		if _, err := os.Stat(filepath.Join(Daemons, "bfdd")); err != nil {
			netnstest.RequireTool(tb, filepath.Join(Daemons, "bfdd"))
		}
	}
	// Not the test's TempDir: FRR drops to user frr, which cannot enter a 0700 directory.
	dir, err := os.MkdirTemp("", "gct-frr-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { (&frr.Router{Netns: ns.Name, Dir: dir}).Stop(); os.RemoveAll(dir) })
	r, err := frr.Start(ns.Name, dir, conf, o)
	if err != nil {
		tb.Fatal(err)
	}
	return &Router{Router: r, NS: ns}
}

// WaitFor polls cond every 50 ms until it returns true or timeout passes.
func WaitFor(tb testing.TB, what string, timeout time.Duration, cond func() (bool, error)) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
