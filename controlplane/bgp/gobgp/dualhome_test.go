package gobgp

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/bgp"
	"github.com/govcloud/govcloud/controlplane/bgp/frrtest"
	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/vishvananda/netlink"
)

// torNeighbor is one session in a generated FRR configuration.
type torNeighbor struct {
	addr string
	asn  uint32
	// extra lines under the neighbour (global scope), e.g. "bfd".
	extra []string
}

// frrConf renders a ToR's bgpd configuration: eBGP without policy, every neighbour activated
// in the family of its address, ECMP over up to 8 paths.
func frrConf(asn uint32, routerID string, global []string, ns ...torNeighbor) string {
	var b strings.Builder
	fmt.Fprintf(&b, "frr defaults datacenter\nhostname tor%d\n!\nrouter bgp %d\n bgp router-id %s\n", asn, asn, routerID)
	b.WriteString(" no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n bgp bestpath as-path multipath-relax\n")
	for _, l := range global {
		b.WriteString(" " + l + "\n")
	}
	for _, n := range ns {
		fmt.Fprintf(&b, " neighbor %s remote-as %d\n neighbor %s timers connect 1\n", n.addr, n.asn, n.addr)
		for _, l := range n.extra {
			fmt.Fprintf(&b, " neighbor %s %s\n", n.addr, l)
		}
	}
	for _, afi := range []string{"ipv4", "ipv6"} {
		fmt.Fprintf(&b, " address-family %s unicast\n  maximum-paths 8\n", afi)
		for _, n := range ns {
			if strings.Contains(n.addr, ":") == (afi == "ipv6") {
				fmt.Fprintf(&b, "  neighbor %s activate\n", n.addr)
			}
		}
		b.WriteString(" exit-address-family\n")
	}
	b.WriteString("!\n")
	return b.String()
}

// TestDualHomedHost: a host with two ToRs on separate subnets (IPv4 /31s; IPv6 a /127 on one
// side and a /64 on the other), four sessions. Each ToR must get, on each session, a next hop
// on its own subnet, install the VIPs in its kernel and forward to them; with one ToR gone,
// the other keeps forwarding.
func TestDualHomedHost(t *testing.T) {
	netnstest.RequirePrivileged(t)
	frrtest.Require(t)
	h := netnstest.New(t, "gct-dh")
	tors := []struct {
		name, link      string
		hostV4, torV4   string
		hostV6, torV6   string
		asn             uint32
		routerID, plen6 string
		ns              *netnstest.NS
		frr             *frrtest.Router
	}{
		{name: "tor1", link: "u1", hostV4: "198.18.11.1", torV4: "198.18.11.0", hostV6: "2001:db8:11::1", torV6: "2001:db8:11::", plen6: "127", asn: 65011, routerID: "198.18.11.0"},
		{name: "tor2", link: "u2", hostV4: "198.18.12.1", torV4: "198.18.12.0", hostV6: "2001:db8:12::2", torV6: "2001:db8:12::1", plen6: "64", asn: 65012, routerID: "198.18.12.0"},
	}
	const hostASN = 65110
	vip4, vip6 := netip.MustParseAddr("198.18.110.1"), netip.MustParseAddr("2001:db8:110::1")
	must(t, h.AddrAdd("lo", vip4.String()+"/32"))
	must(t, h.AddrAdd("lo", vip6.String()+"/128"))
	cfg := bgp.Config{RouterID: netip.MustParseAddr("198.18.11.1"), ASN: hostASN}
	for i := range tors {
		tr := &tors[i]
		tr.ns = netnstest.New(t, "gct-"+tr.name)
		must(t, netnstest.Veth(tr.ns, "down", h, tr.link))
		must(t, tr.ns.AddrAdd("down", tr.torV4+"/31"))
		must(t, tr.ns.AddrAdd("down", tr.torV6+"/"+tr.plen6))
		must(t, h.AddrAdd(tr.link, tr.hostV4+"/31"))
		must(t, h.AddrAdd(tr.link, tr.hostV6+"/"+tr.plen6))
		tr.frr = frrtest.Start(t, tr.ns, frrConf(tr.asn, tr.routerID, nil,
			torNeighbor{addr: tr.hostV4, asn: hostASN}, torNeighbor{addr: tr.hostV6, asn: hostASN}), true)
		cfg.Peers = append(cfg.Peers,
			bgp.Peer{Address: netip.MustParseAddr(tr.torV4), ASN: tr.asn, HoldTime: 3 * time.Second, Keepalive: time.Second},
			bgp.Peer{Address: netip.MustParseAddr(tr.torV6), ASN: tr.asn, HoldTime: 3 * time.Second, Keepalive: time.Second})
	}
	sp := startSpeaker(t, h)
	sp.MustSet(cfg, []bgp.Advertisement{deptAdvert(netip.PrefixFrom(vip4, 32), hostASN), deptAdvert(netip.PrefixFrom(vip6, 128), hostASN)})
	waitEstablished(t, sp, "198.18.11.0", "2001:db8:11::", "198.18.12.0", "2001:db8:12::1")

	for _, tr := range tors {
		for _, c := range []struct {
			vip     netip.Addr
			nexthop string
		}{{vip4, tr.hostV4}, {vip6, tr.hostV6}} {
			pfx := netip.PrefixFrom(c.vip, c.vip.BitLen()).String()
			frrtest.WaitFor(t, tr.name+" to hold "+pfx+" as a valid path", 10*time.Second, func() (bool, error) {
				paths, err := tr.frr.Paths(pfx)
				if err != nil || len(paths) != 1 {
					return false, err
				}
				p := paths[0]
				if len(p.Nexthops) == 0 || p.Nexthops[0].IP != c.nexthop {
					return false, fmt.Errorf("next hops %+v, want %s (the host's address on %s's subnet)", p.Nexthops, c.nexthop, tr.name)
				}
				return p.Valid && p.Bestpath != nil && p.Bestpath.Overall, fmt.Errorf("path %+v not valid and best", p)
			})
			frrtest.WaitFor(t, tr.name+"'s kernel route to "+c.vip.String(), 10*time.Second, func() (bool, error) {
				fam := "-4"
				if c.vip.Is6() {
					fam = "-6"
				}
				out, err := tr.ns.Run("ip", fam, "route", "show", c.vip.String())
				return strings.Contains(out, "via "+c.nexthop) && strings.Contains(out, "proto bgp"), fmt.Errorf("%v: %q", err, out)
			})
			if out, err := tr.ns.Run("ping", "-c", "1", "-W", "2", c.vip.String()); err != nil {
				t.Errorf("%s cannot reach %s through its BGP route: %v\n%s", tr.name, c.vip, err, out)
			}
		}
	}

	// tor1 dies (its link goes away): tor2 keeps the routes and keeps forwarding.
	must(t, tors[0].ns.Netlink().LinkDel(mustLink(t, tors[0].ns, "down")))
	frrtest.WaitFor(t, "the speaker to see tor1's sessions down", 15*time.Second, func() (bool, error) {
		return !sp.Peer("198.18.11.0").Established && !sp.Peer("2001:db8:11::").Established, nil
	})
	for _, vip := range []netip.Addr{vip4, vip6} {
		if out, err := tors[1].ns.Run("ping", "-c", "1", "-W", "2", vip.String()); err != nil {
			t.Errorf("with tor1 down, tor2 cannot reach %s: %v\n%s", vip, err, out)
		}
	}
	if st := sp.Peer("198.18.12.0"); !st.Established || st.Advertised != 1 {
		t.Errorf("tor2's IPv4 session after tor1 died: %+v", st)
	}
}

func mustLink(t *testing.T, ns *netnstest.NS, name string) netlinkLink {
	t.Helper()
	l, err := ns.Netlink().LinkByName(name)
	must(t, err)
	return l
}

// TestASNsAtFRR: the department's communities as FRR receives them, for 2-byte, reserved,
// first 4-byte and largest 4-byte ASNs on both ends of the session: the large community
// always, the standard one only where its ASN half is a real 16-bit ASN.
func TestASNsAtFRR(t *testing.T) {
	netnstest.RequirePrivileged(t)
	frrtest.Require(t)
	tor, h := netnstest.New(t, "gct-asnt"), netnstest.New(t, "gct-asnh")
	must(t, netnstest.Veth(tor, "t", h, "up"))
	must(t, tor.AddrAdd("t", "198.18.13.0/31"))
	must(t, h.AddrAdd("up", "198.18.13.1/31"))
	const dept = 1001
	for _, tc := range []struct {
		name                    string
		fabric, local           uint32
		wantStandard, wantLarge string // "" = none
	}{
		{"2-byte fabric and host", 65000, 65001, "65000:1001", "65001:1:1001"},
		{"fabric AS 65535: no 65535:x (well-known range)", 65535, 65001, "", "65001:1:1001"},
		{"fabric AS 65536, the first 4-byte ASN", 65536, 65001, "", "65001:1:1001"},
		{"4-byte private fabric and host", 4200000000, 4200000001, "", "4200000001:1:1001"},
		{"largest 4-byte host ASN, 2-byte fabric", 65000, 4294967294, "65000:1001", "4294967294:1:1001"},
		{"host AS 65535 under a 4-byte fabric", 4294967294, 65535, "", "65535:1:1001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frr := frrtest.Start(t, tor, frrConf(tc.fabric, "198.18.13.0", nil, torNeighbor{addr: "198.18.13.1", asn: tc.local}), false)
			sp := startSpeaker(t, h)
			cs, lc := bgp.DepartmentCommunities(tc.fabric, tc.local, dept)
			vip := netip.MustParsePrefix("198.18.113.1/32")
			sp.MustSet(bgp.Config{RouterID: netip.MustParseAddr("198.18.13.1"), ASN: tc.local, Peers: []bgp.Peer{
				{Address: netip.MustParseAddr("198.18.13.0"), ASN: tc.fabric, HoldTime: 9 * time.Second}}},
				[]bgp.Advertisement{{Prefix: vip, Communities: cs, LargeCommunities: []bgp.LargeCommunity{lc}}})
			var p frrtest.Path
			frrtest.WaitFor(t, "FRR AS"+fmt.Sprint(tc.fabric)+" to hold the VIP", 20*time.Second, func() (bool, error) {
				paths, err := frr.Paths(vip.String())
				if len(paths) == 1 {
					p = paths[0]
				}
				return len(paths) == 1, err
			})
			var std, large string
			if p.Community != nil {
				std = p.Community.String
			}
			if p.LargeCommunity != nil {
				large = p.LargeCommunity.String
			}
			if std != tc.wantStandard || large != tc.wantLarge {
				t.Errorf("at FRR: community %q large %q; want %q and %q", std, large, tc.wantStandard, tc.wantLarge)
			}
			if p.ASPath.String != fmt.Sprint(tc.local) {
				t.Errorf("AS path at FRR %q, want %d", p.ASPath.String, tc.local)
			}
		})
	}
}

type netlinkLink = netlink.Link
