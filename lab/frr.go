package lab

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// startFRR runs zebra and bgpd in gc-tor without systemd, configured by frrConfig.
func (l *Lab) startFRR() error {
	dir := l.frrDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "frr.conf"), []byte(frrConfig(dir, len(l.hosts))), 0o644); err != nil {
		return err
	}
	if err := sh("chown", "-R", "frr:frr", dir); err != nil {
		return err
	}
	common := []string{"-z", dir + "/zserv.api", "--vty_socket", dir, "-A", "127.0.0.1", "-P", "0", "-u", "frr", "-g", "frr"}
	if err := nsx(NSTor, append([]string{"/usr/lib/frr/zebra", "-d", "-i", dir + "/zebra.pid"}, common...)...); err != nil {
		return fmt.Errorf("zebra: %w", err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := nsx(NSTor, append([]string{"/usr/lib/frr/bgpd", "-d", "-f", dir + "/frr.conf", "-i", dir + "/bgpd.pid"}, common...)...); err != nil {
		return fmt.Errorf("bgpd: %w", err)
	}
	return nil
}

// frrConfig is the ToR's FRR configuration for a lab of n hosts (logging into dir): AS 65000,
// two eBGP neighbours per host (IPv4 unicast over the IPv4 fabric, IPv6 unicast over the IPv6
// one), multipath across different neighbour ASNs (up to MaxHosts
// paths), graceful restart, no policy required.
func frrConfig(dir string, n int) string {
	var conf strings.Builder
	fmt.Fprintf(&conf, "frr defaults datacenter\nhostname gc-tor\nlog file %s/frr.log\n!\n", dir)
	fmt.Fprintf(&conf, "router bgp 65000\n bgp router-id %s\n no bgp ebgp-requires-policy\n bgp bestpath as-path multipath-relax\n bgp graceful-restart\n", torFabric)
	for i := range n {
		fmt.Fprintf(&conf, " neighbor %s remote-as %d\n", hostAddr(i), hostASN(i))
	}
	// A second session per host over the IPv6 fabric carries the IPv6 VIPs (IPv6 unicast only).
	for i := range n {
		fmt.Fprintf(&conf, " neighbor %s remote-as %d\n", hostAddr6(i), hostASN(i))
	}
	fmt.Fprintf(&conf, " address-family ipv4 unicast\n  maximum-paths %d\n", MaxHosts)
	for i := range n {
		fmt.Fprintf(&conf, "  no neighbor %s activate\n", hostAddr6(i))
	}
	fmt.Fprintf(&conf, " exit-address-family\n address-family ipv6 unicast\n  maximum-paths %d\n", MaxHosts)
	for i := range n {
		fmt.Fprintf(&conf, "  neighbor %s activate\n", hostAddr6(i))
	}
	conf.WriteString(" exit-address-family\n!\n")
	return conf.String()
}

// frrDir holds FRR's config, sockets and pid files. FRR drops to user frr, which must be
// able to reach it: not under a private (0700) directory such as a test's temp dir.
func (l *Lab) frrDir() string { return "/run/govcloud-lab-frr" }

// vtysh runs one FRR command in gc-tor.
func (l *Lab) vtysh(cmd string) ([]byte, error) {
	out, err := exec.Command("ip", "netns", "exec", NSTor, "vtysh", "--vty_socket", l.frrDir(), "-c", cmd).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("vtysh %q: %v: %s", cmd, err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// frrPaths returns the next hops of FRR's installed route to vip (IPv4 or IPv6); it fails
// unless there is one per host (ECMP).
func (l *Lab) frrPaths(vip string) ([]string, error) {
	show, host := "show ip route ", "/32"
	if strings.Contains(vip, ":") {
		show, host = "show ipv6 route ", "/128"
	}
	out, err := l.vtysh(show + vip + host + " json")
	if err != nil {
		return nil, err
	}
	var routes map[string][]frrRoute
	if err := json.Unmarshal(out, &routes); err != nil {
		return nil, fmt.Errorf("FRR route to %s: %v", vip, err)
	}
	var hops []string
	for _, r := range routes[vip+host] {
		if r.Protocol != "bgp" || !r.Selected {
			continue
		}
		for _, nh := range r.Nexthops {
			if nh.Active {
				hops = append(hops, nh.IP)
			}
		}
	}
	sort.Strings(hops)
	if len(hops) < len(l.hosts) {
		return hops, fmt.Errorf("FRR has %d path(s) to %s (%v), want one per host", len(hops), vip, hops)
	}
	return hops, nil
}

// frrRoute is one route of vtysh's "show ip route ... json", by prefix.
type frrRoute struct {
	Protocol string `json:"protocol"`
	Selected bool   `json:"selected"`
	Nexthops []struct {
		IP     string `json:"ip"`
		Active bool   `json:"active"`
	} `json:"nexthops"`
}
