// Package lab builds the whole system on one machine out of network namespaces: a
// top-of-rack router (gc-tor, FRR), hosts running the agent (gc-host1, gc-host2 by default;
// up to MaxHosts with Options.Hosts), a
// client outside the cloud (gc-client) and namespace guests (gc-vm-<name>) as VM backends (or,
// with Options.VMs, real VMs under libvirt made by a compute agent in each host), with the
// controller and its embedded etcd on the machine itself. Up builds and starts it,
// Verify re-checks the story, Down removes everything it made.
package lab

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// The contract of docs/DESIGN.md: names other tools and checks rely on.
const (
	NSTor    = "gc-tor"
	NSClient = "gc-client"
	API      = "https://127.0.0.1:8480"
	Metrics  = "127.0.0.1:9480"
)

// How many hosts the lab makes: DefaultHosts unless Options.Hosts says otherwise, at most
// MaxHosts (the ToR's FRR installs up to 8 equal-cost paths: maximum-paths 8).
const (
	DefaultHosts = 2
	MaxHosts     = 8
)

// HostNames returns the host namespaces of a lab of n hosts, in order: gc-host1 .. gc-hostN.
func HostNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("gc-host%d", i+1)
	}
	return out
}

// CheckHosts refuses a host count the lab cannot make (what --hosts takes: 1 to MaxHosts).
func CheckHosts(n int) error {
	if n < 1 || n > MaxHosts {
		return fmt.Errorf("--hosts %d: the lab makes from 1 to %d hosts", n, MaxHosts)
	}
	return nil
}

// Addresses of the lab (198.18.0.0/15 and documentation prefixes only).
const (
	torFabric   = "198.18.0.1"
	fabricCIDR  = "/24"
	torClient   = "198.51.100.1"
	clientAddr  = "198.51.100.10"
	clientCIDR  = "/24"
	fabricRange = "198.18.0.0/24"
	// IPv6 beside them (documentation prefix): the fabric's /64 and the client's link.
	torFabric6  = "2001:db8:18::1"
	fabric6CIDR = "/64"
	fabric6     = "2001:db8:18::/64"
	torClient6  = "2001:db8:51::1"
	clientAddr6 = "2001:db8:51::10"
)

// hostAddr6 is the IPv6 fabric address of the lab's i-th host (from 0): 2001:db8:18::11 onwards.
func hostAddr6(i int) string { return fmt.Sprintf("2001:db8:18::%d", 11+i) }

// hostAddr is the fabric address of the lab's i-th host (from 0): 198.18.0.11 onwards.
func hostAddr(i int) string { return fmt.Sprintf("198.18.0.%d", 11+i) }

// hostASN is the i-th host's AS number, each host its own (eBGP to the ToR, multipath-relax).
func hostASN(i int) int { return 65001 + i }

// torPort is the ToR's veth port toward the i-th host, a port of its bridge 'fabric'.
func torPort(i int) string { return fmt.Sprintf("gc-tor-h%d", i+1) }

// sh runs a command and returns a wrapped error with its output.
func sh(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// nsx runs a command inside a namespace.
func nsx(ns string, args ...string) error {
	return sh("ip", append([]string{"netns", "exec", ns}, args...)...)
}

func nsOut(ns string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s (in %s): %v: %s", strings.Join(args, " "), ns, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func nsExists(ns string) bool {
	_, err := os.Stat("/run/netns/" + ns)
	return err == nil
}

// labNamespaces lists every namespace the lab may have made (gc-tor, gc-host*, gc-client, gc-vm-*).
func labNamespaces() []string {
	ents, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range ents {
		n := e.Name()
		if n == NSTor || n == NSClient || strings.HasPrefix(n, "gc-host") || strings.HasPrefix(n, "gc-vm-") {
			out = append(out, n)
		}
	}
	return out
}

// buildTopology makes the namespaces and links of topologySteps(hosts), then the ToR's edge filter.
func buildTopology(hosts []string) error {
	for _, s := range topologySteps(hosts) {
		if err := sh(s[0], s[1:]...); err != nil {
			return err
		}
	}
	return edgeFilter()
}

// topologySteps are the commands that make the namespaces and links: the ToR's bridge is a
// plain (VLAN-unaware) bridge that carries the hosts' tagged department frames and the
// untagged fabric, on which the ToR routes 198.18.0.1; each host hangs off it on its own
// port; the client hangs off the ToR on its own routed link.
func topologySteps(hosts []string) [][]string {
	steps := [][]string{
		{"ip", "netns", "add", NSTor},
		{"ip", "netns", "add", NSClient},
		{"ip", "-n", NSTor, "link", "set", "lo", "up"},
		{"ip", "-n", NSClient, "link", "set", "lo", "up"},
		{"ip", "-n", NSTor, "link", "add", "fabric", "type", "bridge"},
		{"ip", "-n", NSTor, "addr", "add", torFabric + fabricCIDR, "dev", "fabric"},
		{"ip", "-n", NSTor, "link", "set", "fabric", "up"},
		{"ip", "link", "add", "gc-tor-cl", "netns", NSTor, "type", "veth", "peer", "name", "eth0", "netns", NSClient},
		{"ip", "-n", NSTor, "addr", "add", torClient + clientCIDR, "dev", "gc-tor-cl"},
		{"ip", "-n", NSTor, "link", "set", "gc-tor-cl", "up"},
		{"ip", "-n", NSClient, "addr", "add", clientAddr + clientCIDR, "dev", "eth0"},
		{"ip", "-n", NSClient, "link", "set", "eth0", "up"},
		{"ip", "-n", NSClient, "route", "add", "default", "via", torClient},
		// IPv6: no duplicate address detection (nodad), so addresses are usable at once.
		{"ip", "-n", NSTor, "addr", "add", torFabric6 + fabric6CIDR, "dev", "fabric", "nodad"},
		{"ip", "-n", NSTor, "addr", "add", torClient6 + "/64", "dev", "gc-tor-cl", "nodad"},
		{"ip", "-n", NSClient, "addr", "add", clientAddr6 + "/64", "dev", "eth0", "nodad"},
		{"ip", "-n", NSClient, "-6", "route", "add", "default", "via", torClient6},
		// ECMP over the hosts per flow (L4 hash), as a top-of-rack switch does.
		{"ip", "netns", "exec", NSTor, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", "net.ipv4.fib_multipath_hash_policy=1",
			"net.ipv6.conf.all.forwarding=1", "net.ipv6.fib_multipath_hash_policy=1"},
		// XDP forwards raw frames: senders must finish their checksums, as a NIC would.
		{"ip", "netns", "exec", NSClient, "ethtool", "-K", "eth0", "tx", "off"},
	}
	for i, h := range hosts {
		port := torPort(i)
		steps = append(steps,
			[]string{"ip", "netns", "add", h},
			[]string{"ip", "-n", h, "link", "set", "lo", "up"},
			[]string{"ip", "link", "add", port, "netns", NSTor, "type", "veth", "peer", "name", "eth0", "netns", h},
			[]string{"ip", "-n", NSTor, "link", "set", port, "master", "fabric"},
			[]string{"ip", "-n", NSTor, "link", "set", port, "up"},
			[]string{"ip", "-n", h, "addr", "add", hostAddr(i) + fabricCIDR, "dev", "eth0"},
			[]string{"ip", "-n", h, "link", "set", "eth0", "up"},
			[]string{"ip", "-n", h, "route", "add", "default", "via", torFabric},
			[]string{"ip", "-n", h, "addr", "add", hostAddr6(i) + fabric6CIDR, "dev", "eth0", "nodad"},
			[]string{"ip", "-n", h, "-6", "route", "add", "default", "via", torFabric6},
			[]string{"ip", "netns", "exec", h, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0"},
		)
	}
	return steps
}

// torEdge is what the README's "What the fabric must do" asks of the top-of-rack edge, for the
// lab's ToR: on its port toward the outside (gc-client), sources inside the cloud (fabric,
// segments, VIPs: 198.18.0.0/15; the IPv6 fabric 2001:db8:18::/64) are spoofed and dropped, and
// the fabric's addresses (every host's management plane and the ToR itself) are unreachable;
// VIPs and ICMP (ICMPv6 too: neighbour discovery) are not touched.
const torEdge = `table inet gc-edge {
	chain forward {
		type filter hook forward priority 0; policy accept;
		iifname "gc-tor-cl" ip saddr 198.18.0.0/15 counter drop
		iifname "gc-tor-cl" ip daddr 198.18.0.0/24 counter drop
		iifname "gc-tor-cl" ip6 saddr 2001:db8:18::/64 counter drop
		iifname "gc-tor-cl" ip6 daddr 2001:db8:18::/64 counter drop
	}
	chain input {
		type filter hook input priority 0; policy accept;
		iifname "gc-tor-cl" ip protocol icmp accept
		iifname "gc-tor-cl" meta l4proto ipv6-icmp accept
		iifname "gc-tor-cl" counter drop
	}
}
`

// edgeFilter loads torEdge into the ToR's namespace.
func edgeFilter() error {
	cmd := exec.Command("ip", "netns", "exec", NSTor, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(torEdge)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ToR edge filter: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
