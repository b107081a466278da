// Package frrtest runs FRR (zebra and bgpd from Debian's frr package) inside a test's network
// namespace as a BGP peer, and reads its state through vtysh's JSON output.
package frrtest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/dataplane/netnstest"
)

// Daemons is where Debian installs zebra and bgpd.
const Daemons = "/usr/lib/frr"

// Router is one FRR instance in a namespace.
type Router struct {
	NS  *netnstest.NS
	Dir string
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

// Options say which daemons StartWith runs besides bgpd.
type Options struct {
	// Zebra runs zebra, so BGP routes reach the kernel (and bgpd can reach bfdd).
	Zebra bool
	// BFD, when not empty, is bfdd's configuration ("bfd\n profile fast\n ..."): bfdd runs
	// (Zebra is implied) before bgpd, so bgpd's `neighbor X bfd` sessions start at once.
	BFD string
}

// StartWith runs the daemons o names and bgpd with conf in ns, waits until vtysh answers,
// and stops them when the test ends.
func StartWith(tb testing.TB, ns *netnstest.NS, conf string, o Options) *Router {
	tb.Helper()
	Require(tb)
	withZebra := o.Zebra || o.BFD != ""
	if o.BFD != "" {
		if _, err := os.Stat(filepath.Join(Daemons, "bfdd")); err != nil {
			netnstest.RequireTool(tb, filepath.Join(Daemons, "bfdd"))
		}
	}
	dir, err := os.MkdirTemp("", "gct-frr-")
	if err != nil {
		tb.Fatal(err)
	}
	r := &Router{NS: ns, Dir: dir}
	tb.Cleanup(func() { r.stop(); os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "frr.conf"), []byte(conf), 0o640); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bfdd.conf"), []byte(o.BFD), 0o640); err != nil {
		tb.Fatal(err)
	}
	if u, err := user.Lookup("frr"); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, p := range []string{dir, filepath.Join(dir, "frr.conf"), filepath.Join(dir, "bfdd.conf")} {
			if err := os.Chown(p, uid, gid); err != nil {
				tb.Fatal(err)
			}
		}
		_ = os.Chmod(dir, 0o755)
	}
	common := []string{"-d", "--vty_socket", dir, "-A", "127.0.0.1", "-P", "0", "-u", "frr", "-g", "frr"}
	zs := filepath.Join(dir, "zserv.api")
	if withZebra {
		args := append([]string{"-z", zs, "-i", filepath.Join(dir, "zebra.pid")}, common...)
		ns.MustRun(tb, filepath.Join(Daemons, "zebra"), args...)
		waitFile(tb, zs)
	}
	if o.BFD != "" {
		args := append([]string{"-f", filepath.Join(dir, "bfdd.conf"), "-i", filepath.Join(dir, "bfdd.pid"),
			"--bfdctl", filepath.Join(dir, "bfdd.sock"), "-z", zs}, common...)
		ns.MustRun(tb, filepath.Join(Daemons, "bfdd"), args...)
		waitFile(tb, filepath.Join(dir, "bfdd.vty"))
	}
	args := append([]string{"-f", filepath.Join(dir, "frr.conf"), "-i", filepath.Join(dir, "bgpd.pid")}, common...)
	if withZebra {
		args = append(args, "-z", zs)
	} else {
		args = append(args, "-Z")
	}
	ns.MustRun(tb, filepath.Join(Daemons, "bgpd"), args...)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := r.Vtysh("show bgp summary json"); err == nil {
			return r
		} else if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "bgpd.log"))
			tb.Fatalf("frr in %s did not answer vtysh: %v\n%s", ns.Name, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitFile(tb testing.TB, p string) {
	tb.Helper()
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(p); err == nil {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	tb.Fatalf("%s did not appear", p)
}

func (r *Router) stop() {
	for _, d := range []string{"bgpd", "bfdd", "zebra"} {
		b, err := os.ReadFile(filepath.Join(r.Dir, d+".pid"))
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Kill()
			}
		}
	}
}

// Vtysh runs vtysh commands against this instance and returns their output.
func (r *Router) Vtysh(cmds ...string) (string, error) {
	args := []string{"--vty_socket", r.Dir}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	t0 := time.Now()
	out, err := exec.CommandContext(ctx, "vtysh", args...).CombinedOutput()
	if d := time.Since(t0); d > 2*time.Second {
		fmt.Fprintf(os.Stderr, "frrtest: vtysh %q took %s\n", cmds, d)
	}
	if err != nil {
		return string(out), fmt.Errorf("vtysh %q in %s: %w: %s", cmds, r.NS.Name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// JSON runs one 'show ... json' command and decodes its output into v.
func (r *Router) JSON(cmd string, v any) error {
	out, err := r.Vtysh(cmd)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("vtysh %q: decoding %q: %w", cmd, truncate(out), err)
	}
	return nil
}

// Configure applies configuration lines ("router bgp 65000", "neighbor ...") in config mode.
func (r *Router) Configure(lines ...string) error {
	_, err := r.Vtysh(append([]string{"configure terminal"}, lines...)...)
	return err
}

// Neighbor is the part of 'show bgp neighbors ADDR json' the tests read.
type Neighbor struct {
	State              string `json:"bgpState"`
	LastResetDueTo     string `json:"lastResetDueTo"`
	LastNotification   string `json:"lastNotificationReason"`
	ConnectionsDropped int    `json:"connectionsDropped"`
	MessageStats       struct {
		NotificationsRecv int `json:"notificationsRecv"`
		UpdatesRecv       int `json:"updatesRecv"`
	} `json:"messageStats"`
	GracefulRestart struct {
		EndOfRIBRecv map[string]bool `json:"endOfRibRecv"`
	} `json:"gracefulRestartInfo"`
}

// Neighbor returns FRR's view of one neighbour.
func (r *Router) Neighbor(addr string) (Neighbor, error) {
	var m map[string]json.RawMessage
	if err := r.JSON("show bgp neighbors "+addr+" json", &m); err != nil {
		return Neighbor{}, err
	}
	var n Neighbor
	raw, ok := m[addr]
	if !ok {
		return n, fmt.Errorf("frr in %s: no neighbour %s in %s", r.NS.Name, addr, truncate(fmt.Sprint(m)))
	}
	return n, json.Unmarshal(raw, &n)
}

// Path is one path of a prefix in 'show bgp ipv4|ipv6 unicast PREFIX json'.
type Path struct {
	Valid    bool `json:"valid"`
	Bestpath *struct {
		Overall bool `json:"overall"`
	} `json:"bestpath"`
	Multipath bool `json:"multipath"`
	Stale     bool `json:"stale"`
	Peer      struct {
		PeerID string `json:"peerId"`
	} `json:"peer"`
	ASPath struct {
		String string `json:"string"`
	} `json:"aspath"`
	Community *struct {
		String string `json:"string"`
	} `json:"community"`
	LargeCommunity *struct {
		String string `json:"string"`
	} `json:"largeCommunity"`
	LocPrf   *uint32 `json:"locPrf"`
	Metric   *uint32 `json:"metric"`
	Nexthops []struct {
		IP string `json:"ip"`
	} `json:"nexthops"`
}

// Paths returns FRR's paths for prefix ("198.18.100.1/32"); none when FRR does not have it.
func (r *Router) Paths(prefix string) ([]Path, error) {
	afi := "ipv4"
	if strings.Contains(prefix, ":") {
		afi = "ipv6"
	}
	var v struct {
		Paths []Path `json:"paths"`
	}
	if err := r.JSON(fmt.Sprintf("show bgp %s unicast %s json", afi, prefix), &v); err != nil {
		return nil, err
	}
	return v.Paths, nil
}

// Prefixes returns the set of prefixes in FRR's BGP table for afi ("ipv4" or "ipv6").
func (r *Router) Prefixes(afi string) (map[string]bool, error) {
	var v struct {
		Routes map[string]json.RawMessage `json:"routes"`
	}
	if err := r.JSON("show bgp "+afi+" unicast json", &v); err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(v.Routes))
	for p := range v.Routes {
		out[p] = true
	}
	return out, nil
}

// Count returns how many prefixes FRR received from its peers for afi ("ipv4", "ipv6"),
// from the cheap summary view.
func (r *Router) Count(afi string) (int, error) {
	var v struct {
		Peers map[string]struct {
			PfxRcd int `json:"pfxRcd"`
		} `json:"peers"`
	}
	if err := r.JSON("show bgp "+afi+" unicast summary json", &v); err != nil {
		return 0, err
	}
	n := 0
	for _, p := range v.Peers {
		n += p.PfxRcd
	}
	return n, nil
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

func truncate(s string) string {
	if len(s) > 400 {
		return s[:400] + "..."
	}
	return s
}
