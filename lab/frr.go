package lab

import (
	"errors"
	"fmt"
	"strings"

	"github.com/govcloud/govcloud/controlplane/bgp/frr"
)

// startFRR runs zebra and bgpd in gc-tor without systemd, configured by frrConfig.
func (l *Lab) startFRR() error {
	_, err := frr.Start(NSTor, l.frrDir(), frrConfig(l.frrDir(), len(l.hosts)), frr.Options{Zebra: true})
	return err
}

// tor is the lab's FRR instance (running or not).
func (l *Lab) tor() *frr.Router { return &frr.Router{Netns: NSTor, Dir: l.frrDir()} }

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
	out, err := l.tor().Vtysh(cmd)
	return []byte(out), err
}

// frrPaths returns the next hops of FRR's installed route to vip (IPv4 or IPv6); it fails
// unless there is one per host (ECMP).
func (l *Lab) frrPaths(vip string) ([]string, error) {
	prefix := vip + "/32"
	if strings.Contains(vip, ":") {
		prefix = vip + "/128"
	}
	hops, err := l.tor().BGPNexthops(prefix)
	if err != nil && !errors.Is(err, frr.ErrNoRoute) {
		return nil, err
	}
	if len(hops) < len(l.hosts) {
		return hops, fmt.Errorf("FRR has %d path(s) to %s (%v), want one per host", len(hops), vip, hops)
	}
	return hops, nil
}
