// Package frr runs FRR (zebra, bfdd and bgpd from Debian's frr package) in a named network
// namespace, as the lab's top-of-rack router and the BGP tests' peer, and reads its state
// through vtysh's JSON output.
package frr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Daemons is where Debian installs zebra, bfdd and bgpd.
const Daemons = "/usr/lib/frr"

// Options say which daemons Start runs besides bgpd.
type Options struct {
	// Zebra runs zebra, so BGP routes reach the kernel (and bgpd can reach bfdd).
	Zebra bool
	// BFD, when not empty, is bfdd's configuration ("bfd\n profile fast\n ..."): bfdd runs
	// (Zebra is implied) before bgpd, so bgpd's `neighbor X bfd` sessions start at once.
	BFD string
}

// Router is one FRR instance: its namespace and the directory of its configuration, pid
// files and vty sockets. A Router of a running instance can be made from the two alone
// (the lab's later commands do).
type Router struct {
	Netns string // named network namespace (/run/netns/NAME)
	Dir   string
}

// Start writes conf (bgpd's, frr.conf) into dir, runs the daemons o names and bgpd in netns,
// and waits up to 10 s until vtysh answers. dir must be reachable by user frr (FRR drops to
// it): not under a private 0700 directory. On an error the daemons it started are stopped.
func Start(netns, dir, conf string, o Options) (*Router, error) {
	withZebra := o.Zebra || o.BFD != ""
	need := []string{"zebra", "bgpd"}
	if o.BFD != "" {
		need = append(need, "bfdd")
	}
	for _, d := range need {
		if _, err := os.Stat(filepath.Join(Daemons, d)); err != nil {
			return nil, fmt.Errorf("frr: %s: %w (install Debian's frr package)", d, err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("frr: %w", err)
	}
	files := map[string]string{"frr.conf": conf, "bfdd.conf": o.BFD}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o640); err != nil {
			return nil, fmt.Errorf("frr: %w", err)
		}
	}
	if u, err := user.Lookup("frr"); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, p := range []string{dir, filepath.Join(dir, "frr.conf"), filepath.Join(dir, "bfdd.conf")} {
			if err := os.Chown(p, uid, gid); err != nil {
				return nil, fmt.Errorf("frr: %w", err)
			}
		}
		_ = os.Chmod(dir, 0o755)
	}
	r := &Router{Netns: netns, Dir: dir}
	fail := func(err error) (*Router, error) {
		r.Stop()
		return nil, err
	}
	common := []string{"-d", "--vty_socket", dir, "-A", "127.0.0.1", "-P", "0", "-u", "frr", "-g", "frr"}
	zs := filepath.Join(dir, "zserv.api")
	if withZebra {
		if err := r.daemon("zebra", zs, append([]string{"-z", zs, "-i", filepath.Join(dir, "zebra.pid")}, common...)...); err != nil {
			return fail(err)
		}
	}
	if o.BFD != "" {
		args := append([]string{"-f", filepath.Join(dir, "bfdd.conf"), "-i", filepath.Join(dir, "bfdd.pid"),
			"--bfdctl", filepath.Join(dir, "bfdd.sock"), "-z", zs}, common...)
		if err := r.daemon("bfdd", filepath.Join(dir, "bfdd.vty"), args...); err != nil {
			return fail(err)
		}
	}
	args := append([]string{"-f", filepath.Join(dir, "frr.conf"), "-i", filepath.Join(dir, "bgpd.pid")}, common...)
	if withZebra {
		args = append(args, "-z", zs)
	} else {
		args = append(args, "-Z")
	}
	if err := r.daemon("bgpd", "", args...); err != nil {
		return fail(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := r.Vtysh("show bgp summary json")
		if err == nil {
			return r, nil
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "bgpd.log"))
			return fail(fmt.Errorf("frr in %s did not answer vtysh within 10s: %w\n%s", netns, err, log))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// daemon starts one daemon (it forks, -d) and waits up to 5 s for file when not empty.
func (r *Router) daemon(name, file string, args ...string) error {
	cmd := exec.Command("ip", append([]string{"netns", "exec", r.Netns, filepath.Join(Daemons, name)}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("frr: %s in %s: %w: %s", name, r.Netns, err, strings.TrimSpace(string(out)))
	}
	if file == "" {
		return nil
	}
	for range 200 {
		if _, err := os.Stat(file); err == nil {
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("frr: %s in %s: %s did not appear within 5s", name, r.Netns, file)
}

// Daemon names, in the order Stop ends them.
var stopOrder = []string{"bgpd", "bfdd", "zebra"}

// PIDs are the process IDs in the instance's pid files, by daemon name (those readable).
func (r *Router) PIDs() map[string]int {
	out := map[string]int{}
	for _, d := range stopOrder {
		b, err := os.ReadFile(filepath.Join(r.Dir, d+".pid"))
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			out[d] = pid
		}
	}
	return out
}

// Stop kills the instance's daemons (SIGKILL, by their pid files); it leaves Dir.
func (r *Router) Stop() {
	pids := r.PIDs()
	for _, d := range stopOrder {
		if pid, ok := pids[d]; ok {
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Kill()
			}
		}
	}
}

// Vtysh runs vtysh commands against this instance (through its vty sockets, at most 20 s)
// and returns their output.
func (r *Router) Vtysh(cmds ...string) (string, error) {
	args := []string{"--vty_socket", r.Dir}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "vtysh", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("vtysh %q in %s: %w: %s", cmds, r.Netns, err, strings.TrimSpace(string(out)))
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

// Neighbor is the part of 'show bgp neighbors ADDR json' callers read.
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

// Neighbor returns FRR's view of one neighbour (addr as configured).
func (r *Router) Neighbor(addr string) (Neighbor, error) {
	var m map[string]json.RawMessage
	if err := r.JSON("show bgp neighbors "+addr+" json", &m); err != nil {
		return Neighbor{}, err
	}
	var n Neighbor
	raw, ok := m[addr]
	if !ok {
		return n, fmt.Errorf("frr in %s: no neighbour %s in %s", r.Netns, addr, truncate(fmt.Sprint(m)))
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

func afi(prefix string) string {
	if strings.Contains(prefix, ":") {
		return "ipv6"
	}
	return "ipv4"
}

// Paths returns FRR's BGP paths for prefix ("198.18.100.1/32"); none when FRR does not have it.
func (r *Router) Paths(prefix string) ([]Path, error) {
	var v struct {
		Paths []Path `json:"paths"`
	}
	if err := r.JSON(fmt.Sprintf("show bgp %s unicast %s json", afi(prefix), prefix), &v); err != nil {
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

// route is one route of zebra's 'show ip|ipv6 route PREFIX json', by prefix.
type route struct {
	Protocol string `json:"protocol"`
	Selected bool   `json:"selected"`
	Nexthops []struct {
		IP     string `json:"ip"`
		Active bool   `json:"active"`
	} `json:"nexthops"`
}

// selectedHops are the active next hops of the selected BGP routes among rs, sorted.
func selectedHops(rs []route) (hops []string, found bool) {
	for _, rt := range rs {
		if rt.Protocol != "bgp" || !rt.Selected {
			continue
		}
		found = true
		for _, nh := range rt.Nexthops {
			if nh.Active {
				hops = append(hops, nh.IP)
			}
		}
	}
	sort.Strings(hops)
	return hops, found
}

// BGPRoutes returns zebra's selected IPv4 BGP routes in one read ('show ip route bgp json'):
// the active next hops (sorted) by prefix ("198.19.255.1/32"). It needs zebra.
func (r *Router) BGPRoutes() (map[string][]string, error) {
	var routes map[string][]route
	if err := r.JSON("show ip route bgp json", &routes); err != nil {
		return nil, err
	}
	out := make(map[string][]string, len(routes))
	for p, rs := range routes {
		if hops, ok := selectedHops(rs); ok {
			out[p] = hops
		}
	}
	return out, nil
}

// ErrNoRoute is BGPNexthops' error when zebra has no selected BGP route to the prefix.
var ErrNoRoute = errors.New("no selected BGP route")

// BGPNexthops returns the active next hops (sorted) of zebra's selected BGP route to prefix
// ("198.19.255.1/32", "2001:db8::1/128"): what FRR installs, ECMP included. It needs zebra.
func (r *Router) BGPNexthops(prefix string) ([]string, error) {
	show := "show ip route "
	if afi(prefix) == "ipv6" {
		show = "show ipv6 route "
	}
	var routes map[string][]route
	if err := r.JSON(show+prefix+" json", &routes); err != nil {
		return nil, err
	}
	hops, found := selectedHops(routes[prefix])
	if !found {
		return nil, fmt.Errorf("frr in %s: %s: %w", r.Netns, prefix, ErrNoRoute)
	}
	return hops, nil
}

func truncate(s string) string {
	if len(s) > 400 {
		return s[:400] + "..."
	}
	return s
}
