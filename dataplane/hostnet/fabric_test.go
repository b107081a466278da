package hostnet_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govcloud/govcloud/dataplane/firewall"
	"github.com/govcloud/govcloud/dataplane/hostnet"
	"github.com/govcloud/govcloud/dataplane/netnstest"
	tt "github.com/govcloud/govcloud/dataplane/trunk/trunktest"
)

// Fabric addresses of TestFabricIsolation: the hosts' uplinks and the "fabric" router (the
// ToR namespace's bridge), which routes the segments and the VIPs to h1.
var (
	fabric4 = map[string]string{"h1": "192.0.2.1", "h2": "192.0.2.2", "tor": "192.0.2.254"}
	fabric6 = map[string]string{"h1": "2001:db8:ff::1", "h2": "2001:db8:ff::2", "tor": "2001:db8:ff::fe"}
	vip4    = ip("203.0.113.10")
	vip6    = ip("2001:db8:ee::10")
)

const (
	vipPort  = 5353 // VIP delivery allowed on this UDP port only
	dnsPort  = 53   // the tenants' explicit exception on the fabric router
	lands    = 3    // department ids (topology_test.go)
	health   = 7
	probePrt = 7007
)

// fabricDesired is host h's network for TestFabricIsolation: departments leave through the
// fabric router, VIP delivery into lands-web on h1, DNS on the router as the one exception.
func fabricDesired(h string, extra ...hostnet.TenantAllow) hostnet.HostNetwork {
	d := desiredFor(h)
	d.Departments = nil
	for _, dp := range departments {
		dp.Egress, dp.Egress6 = ip(fabric4["tor"]), ip(fabric6["tor"])
		d.Departments = append(d.Departments, dp)
	}
	if h == "h1" {
		for _, v := range []netip.Addr{vip4, vip6} {
			d.VIPPorts = append(d.VIPPorts, hostnet.VIPPort{Segment: "lands-web", VIP: v, Proto: unix.IPPROTO_UDP, Port: vipPort})
		}
	}
	d.TenantAllow = append([]hostnet.TenantAllow{
		{Proto: unix.IPPROTO_UDP, Addr: ip(fabric4["tor"]), Port: dnsPort},
		{Proto: unix.IPPROTO_UDP, Addr: ip(fabric6["tor"]), Port: dnsPort},
	}, extra...)
	return d
}

// TestFabricIsolation holds issue 20's findings 2, 3 and 4 as regression rows, IPv4 and IPv6:
// nothing from the uplink reaches a segment but replies and VIP delivery, tunnel packets never
// reach the stack, tenants reach no host's management plane and only their own gateway (with
// echo) and the explicit exceptions, and every drop counts by department and reason.
func TestFabricIsolation(t *testing.T) {
	l := newLab(t)
	tor, h1, h2 := l.tor, l.hosts["h1"], l.hosts["h2"]
	// The fabric: v6 on the uplinks, the ToR as a router holding the segment and VIP routes
	// toward h1, h2 able to answer tenants through it (so nothing is stopped by routing
	// alone: without the firewall every row below would get through).
	tor.MustRun(t, "ip", "addr", "add", fabric4["tor"]+"/24", "dev", "br0")
	tor.MustRun(t, "ip", "addr", "add", fabric6["tor"]+"/64", "dev", "br0", "nodad")
	tor.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	for _, r := range [][]string{
		{"198.18.20.0/24", fabric4["h1"]}, {"198.18.30.0/24", fabric4["h1"]}, {vip4.String() + "/32", fabric4["h1"]},
		{"2001:db8:20::/64", fabric6["h1"]}, {"2001:db8:30::/64", fabric6["h1"]}, {vip6.String() + "/128", fabric6["h1"]},
	} {
		tor.MustRun(t, "ip", "route", "add", r[0], "via", r[1])
	}
	h1.MustRun(t, "ip", "addr", "add", fabric6["h1"]+"/64", "dev", "up0", "nodad")
	h2.MustRun(t, "ip", "addr", "add", fabric6["h2"]+"/64", "dev", "up0", "nodad")
	h2.MustRun(t, "ip", "route", "add", "198.18.0.0/15", "via", fabric4["tor"])
	h2.MustRun(t, "ip", "route", "add", "2001:db8::/40", "via", fabric6["tor"])
	for _, g := range []string{"g1a", "g2a"} {
		l.guests[g].MustRun(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:20::1")
	}
	for _, g := range []string{"g1h", "g2h"} {
		l.guests[g].MustRun(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:30::1")
	}
	for h, hn := range l.nets {
		if err := hn.Set(fabricDesired(h)); err != nil {
			t.Fatalf("Set on %s: %v", h, err)
		}
	}
	// VIP delivery as viproute makes it: a host route in the main table via the backend.
	h1.MustRun(t, "ip", "route", "add", vip4.String()+"/32", "via", addrOf("g1a"), "dev", "gcbr120", "onlink")
	h1.MustRun(t, "ip", "-6", "route", "add", vip6.String()+"/128", "via", "2001:db8:20::a", "dev", "gcbr120", "onlink")

	// Services on the management plane: h1 and h2 listen on the agent's, BGP's, SSH's ports
	// and DNS; the router answers DNS (the exception) and 54 (not one).
	for _, ns := range []*netnstest.NS{h1, h2} {
		for _, p := range []int{9480, 179, 22} {
			listenTCP(t, ns, p)
		}
		echoUDP(t, ns, 53)
	}
	echoUDP(t, tor, dnsPort)
	echoUDP(t, tor, 54)
	l.echo(t, "g1a", probePrt)
	listenTCP(t, l.guests["g1a"], probePrt+1) // IPv6 too

	for _, h := range []string{"h1", "h2"} {
		for _, fam := range []string{"-4", "-6"} {
			out := l.hosts[h].MustRun(t, "ip", fam, "route", "show", "table", "main")
			for _, seg := range []string{"198.18.20.0/24", "198.18.21.0/24", "198.18.30.0/24", "2001:db8:20::/64", "2001:db8:30::/64"} {
				if strings.Contains(out, seg+" ") {
					t.Errorf("finding 2: %s's main table routes a segment (%s):\n%s", h, seg, out)
				}
			}
		}
	}

	socks := map[string]*tt.Sock{}
	for _, g := range []string{"g1a", "g1h", "g2a"} {
		if err := l.guests[g].Do(func() (err error) { socks[g], err = tt.Open("eth0"); return }); err != nil {
			t.Fatal(err)
		}
		defer socks[g].Close()
	}
	var torSock *tt.Sock
	if err := tor.Do(func() (err error) { torSock, err = tt.Open("br0"); return }); err != nil {
		t.Fatal(err)
	}
	defer torSock.Close()
	upMAC := linkMAC(t, h1, "up0")
	torMAC := linkMAC(t, tor, "br0")
	if err := exec.Command("modprobe", "-q", "ipip").Run(); err != nil {
		t.Log("no ipip module: the kernel could not decapsulate IPIP anyway; the tunnel rows still need the nftables drop")
	}
	_ = exec.Command("modprobe", "-q", "ip6_tunnel").Run()

	type count struct {
		host   string
		dept   uint32
		reason string
	}
	// Frames on the fabric's L2 tagged with lands-web's VLAN (what a remote guest's frames look
	// like on the trunk): only a remote guest's own MAC and addresses may come in.
	g1aMAC, g2aMAC := linkMAC(t, l.guests["g1a"], "eth0"), linkMAC(t, l.guests["g2a"], "eth0")
	tagged := func(f []byte) error { return torSock.Send(tt.Pad(tt.Tag(f, tt.Ether8021Q, 120), 60)) }
	udpFrom := func(srcMAC net.HardwareAddr, src string, marker string) []byte {
		return tt.UDPFrame(g1aMAC, srcMAC, ip(src), ip(addrOf("g1a")), 9, 9, []byte(marker))
	}
	rows := []struct {
		name    string
		send    func() error // the attempt
		arrive  string       // guest whose eth0 must (not) see the marker
		marker  string
		want    bool   // marker arrives / the attempt succeeds
		counter *count // must move (nil: none named)
		raw     bool   // a raw frame: its send succeeding says nothing
	}{
		// Finding 2: from the uplink into segments.
		{name: "finding 2 v4: routed from the uplink to a guest", arrive: "g1a", marker: "f2-routed4",
			send: func() error { return sendUDP(tor, "", addrOf("g1a"), 9, "f2-routed4") }},
		{name: "finding 2 v6: routed from the uplink to a guest", arrive: "g1a", marker: "f2-routed6",
			send: func() error { return sendUDP(tor, "", "2001:db8:20::a", 9, "f2-routed6") }},
		{name: "finding 2 v4: to a gateway address from the uplink", counter: &count{"h1", lands, firewall.ReasonFromFabric},
			send: func() error { return ping(tor, "198.18.20.1") }},
		{name: "finding 2 v6: to a gateway address from the uplink", counter: &count{"h1", lands, firewall.ReasonFromFabric},
			send: func() error { return ping(tor, "2001:db8:20::1") }},
		{name: "finding 2 v4: VIP delivery on the VIP's port", arrive: "g1a", marker: "vip-ok-4", want: true,
			send: func() error { return sendUDP(tor, "", vip4.String(), vipPort, "vip-ok-4") }},
		{name: "finding 2 v6: VIP delivery on the VIP's port", arrive: "g1a", marker: "vip-ok-6", want: true,
			send: func() error { return sendUDP(tor, "", vip6.String(), vipPort, "vip-ok-6") }},
		{name: "finding 2 v4: VIP on another port", arrive: "g1a", marker: "vip-no-4", counter: &count{"h1", lands, firewall.ReasonFromFabric},
			send: func() error { return sendUDP(tor, "", vip4.String(), vipPort+1, "vip-no-4") }},
		{name: "finding 2 v6: VIP on another port", arrive: "g1a", marker: "vip-no-6", counter: &count{"h1", lands, firewall.ReasonFromFabric},
			send: func() error { return sendUDP(tor, "", vip6.String(), vipPort+1, "vip-no-6") }},
		// Tunnels from the fabric never reach the stack (XDP decapsulates what is legitimate).
		{name: "finding 2 v4: IPIP to the host with a guest inside", arrive: "g1a", marker: "tun-ipip", counter: &count{"h1", 0, firewall.ReasonTunnel},
			send: func() error {
				return torSock.Send(tt.Eth(upMAC, torMAC, tt.EtherIPv4, tt.IPv4(ip(fabric4["tor"]), ip(fabric4["h1"]), unix.IPPROTO_IPIP,
					tt.IPv4(ip(fabric4["tor"]), ip(addrOf("g1a")), 17, tt.UDP4(ip(fabric4["tor"]), ip(addrOf("g1a")), 9, 9, []byte("tun-ipip"))))))
			}},
		{name: "finding 2 v6: 4in6 to the host with a guest inside", arrive: "g1a", marker: "tun-4in6", counter: &count{"h1", 0, firewall.ReasonTunnel},
			send: func() error {
				return torSock.Send(tt.Eth(upMAC, torMAC, 0x86dd, ipv6(ip(fabric6["tor"]), ip(fabric6["h1"]), unix.IPPROTO_IPIP,
					tt.IPv4(ip(fabric4["tor"]), ip(addrOf("g1a")), 17, tt.UDP4(ip(fabric4["tor"]), ip(addrOf("g1a")), 9, 9, []byte("tun-4in6"))))))
			}},
		{name: "finding 2 v4: GRE to the host", counter: &count{"h1", 0, firewall.ReasonTunnel}, raw: true,
			send: func() error {
				return torSock.Send(tt.Pad(tt.Eth(upMAC, torMAC, tt.EtherIPv4, tt.IPv4(ip(fabric4["tor"]), ip(fabric4["h1"]), unix.IPPROTO_GRE,
					[]byte{0, 0, 0x08, 0, 'g', 'r', 'e'})), 60))
			}},
		// The fabric's L2, tagged into lands-web: a remote guest's own frame gets in; a local
		// guest's MAC, a remote guest's MAC with another address and ARP claiming a guest's
		// address with another MAC do not (they would poison the bridge or a guest's ARP cache).
		{name: "fabric L2 v4: a remote guest's own frame", arrive: "g1a", marker: "fab-ok", want: true,
			send: func() error { return tagged(udpFrom(g2aMAC, addrOf("g2a"), "fab-ok")) }},
		{name: "fabric L2 v4: a local guest's MAC from the trunk", arrive: "g1a", marker: "fab-localmac", counter: &count{"h1", lands, firewall.ReasonFromFabric},
			send: func() error { return tagged(udpFrom(g1aMAC, addrOf("g2a"), "fab-localmac")) }},
		{name: "fabric L2 v4: a remote guest's MAC with another address", arrive: "g1a", marker: "fab-spoof4", counter: &count{"h1", lands, firewall.ReasonFromFabric},
			send: func() error { return tagged(udpFrom(g2aMAC, "198.18.20.99", "fab-spoof4")) }},
		// The distributed gateway's MAC is every host's: what a peer's gateway routes in comes
		// from one of the department's guests, never from outside or another department.
		{name: "fabric L2 v4: the gateway MAC routing from a lands address", arrive: "g1a", marker: "fab-gw-ok", want: true,
			send: func() error { return tagged(udpFrom(hostnet.DefaultGatewayMAC, "198.18.20.77", "fab-gw-ok")) }},
		{name: "fabric L2 v4: the gateway MAC with an outside source", arrive: "g1a", marker: "fab-gw-out", counter: &count{"h1", lands, firewall.ReasonFromFabric},
			send: func() error { return tagged(udpFrom(hostnet.DefaultGatewayMAC, "203.0.113.66", "fab-gw-out")) }},
		{name: "fabric L2 v4: the gateway MAC with another department's address", arrive: "g1a", marker: "fab-gw-dept", counter: &count{"h1", lands, firewall.ReasonFromFabric},
			send: func() error { return tagged(udpFrom(hostnet.DefaultGatewayMAC, addrOf("g1h"), "fab-gw-dept")) }},
		{name: "fabric L2 v4: ARP claiming a remote guest's address from another MAC", arrive: "g1a", marker: "fab-arp", counter: &count{"h1", lands, firewall.ReasonFromFabric},
			send: func() error {
				return tagged(append(tt.ARP(tt.ARPReply, torMAC, ip(addrOf("g2a")), g1aMAC, ip(addrOf("g1a"))), []byte("fab-arp")...))
			}},
		// (the trunk program drops this one first, as gateway_nd)
		{name: "fabric L2 v4: ARP with a remote guest's MAC claiming the gateway", arrive: "g1a", marker: "fab-arpgw",
			send: func() error {
				return tagged(append(tt.ARP(tt.ARPReply, g2aMAC, ip("198.18.20.1"), g1aMAC, ip(addrOf("g1a"))), []byte("fab-arpgw")...))
			}},
		// IPv4 options from a guest stop at its port: the kernel would act on them (and answer
		// a malformed one from the host's own address) before any input rule.
		{name: "guest v4: IP options to its host's fabric address", arrive: "g1a", marker: "ipopt", counter: &count{"h1", lands, firewall.ReasonIPOptions},
			send: func() error {
				opts := []byte{0x07, 0x27, 0x04, 0x00} // record route, length past the header
				return socks["g1a"].Send(tt.Eth(hostnet.DefaultGatewayMAC, g1aMAC, tt.EtherIPv4,
					withOptions(tt.IPv4(ip(addrOf("g1a")), ip(fabric4["h1"]), 17, tt.UDP4(ip(addrOf("g1a")), ip(fabric4["h1"]), 9, 9, []byte("ipopt"))), opts)))
			}},
		// Finding 4: toward another department's segment by way of the egress: never
		// deliverable, so dropped and counted on the host, not lost unseen at the ToR.
		{name: "finding 4 v4: to another department's segment through the egress", counter: &count{"h1", lands, firewall.ReasonCrossDepartment},
			send: func() error { return ping(l.guests["g1a"], "198.18.30.99") }},
		{name: "finding 4 v6: to another department's segment through the egress", counter: &count{"h1", lands, firewall.ReasonCrossDepartment},
			send: func() error { return ping(l.guests["g1a"], "2001:db8:30::99") }},
		// Finding 3: the management plane, whichever host the guest sits on.
		{name: "finding 3 v4: tenant to another host's fabric address", counter: &count{"h1", lands, firewall.ReasonToManagement},
			send: func() error { return mgmtPorts(l.guests["g1a"], fabric4["h2"]) }},
		{name: "finding 3 v6: tenant to another host's fabric address", counter: &count{"h1", lands, firewall.ReasonToManagement},
			send: func() error { return mgmtPorts(l.guests["g1a"], fabric6["h2"]) }},
		{name: "finding 3 v4: tenant on h2 to h1's fabric address", counter: &count{"h2", health, firewall.ReasonToManagement},
			send: func() error { return mgmtPorts(l.guests["g2h"], fabric4["h1"]) }},
		{name: "finding 3 v4: tenant to its own host's fabric address", counter: &count{"h1", lands, firewall.ReasonToHost},
			send: func() error { return mgmtPorts(l.guests["g1a"], fabric4["h1"]) }},
		{name: "finding 3 v6: tenant to its own host's fabric address", counter: &count{"h1", lands, firewall.ReasonToHost},
			send: func() error { return mgmtPorts(l.guests["g1a"], fabric6["h1"]) }},
		{name: "finding 3 v4: ping to the own gateway", want: true, send: func() error { return ping(l.guests["g1a"], "198.18.20.1") }},
		{name: "finding 3 v6: ping to the own gateway", want: true, send: func() error { return ping(l.guests["g1a"], "2001:db8:20::1") }},
		{name: "finding 3 v4: TCP to the own gateway", counter: &count{"h1", lands, firewall.ReasonToHost},
			send: func() error { return dialTCP(l.guests["g1a"], "198.18.20.1", 22, 0) }},
		{name: "finding 3 v4: ping to another department's gateway", counter: &count{"h1", lands, firewall.ReasonToHost},
			send: func() error { return ping(l.guests["g1a"], "198.18.30.1") }},
		{name: "finding 3 v6: ping to another department's gateway", counter: &count{"h1", lands, firewall.ReasonToHost},
			send: func() error { return ping(l.guests["g1a"], "2001:db8:30::1") }},
		{name: "finding 3 v4: the explicit exception (DNS on the router)", want: true,
			send: func() error { return udpEcho(l.guests["g1a"], fabric4["tor"], dnsPort, 0) }},
		{name: "finding 3 v6: the explicit exception (DNS on the router)", want: true,
			send: func() error { return udpEcho(l.guests["g1a"], fabric6["tor"], dnsPort, 0) }},
		{name: "finding 3 v4: the router's port next to the exception", counter: &count{"h1", lands, firewall.ReasonToManagement},
			send: func() error { return udpEcho(l.guests["g1a"], fabric4["tor"], 54, 0) }},
		// The host's own traffic into a segment.
		{name: "host v4: health probe with the department's mark", want: true,
			send: func() error { return dialTCP(h1, addrOf("g1a"), probePrt, 100) }},
		{name: "host v6: health probe with the department's mark", want: true,
			send: func() error { return dialTCP(h1, "2001:db8:20::a", probePrt+1, 100) }},
		{name: "host v4: health probe with another department's mark", send: func() error { return dialTCP(h1, addrOf("g1a"), probePrt, 200) }},
		{name: "host v4: unmarked packet through a VIP route into a segment", arrive: "g1a", marker: "host-out", counter: &count{"h1", lands, firewall.ReasonFromHost},
			send: func() error { return sendUDP(h1, "", vip4.String(), vipPort, "host-out") }},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			var before uint64
			if r.counter != nil {
				before = nftDrop(t, l.nets[r.counter.host], r.counter.dept, r.counter.reason)
			}
			if r.arrive != "" {
				_, _ = socks[r.arrive].Capture(50 * time.Millisecond) // drain
			}
			err := r.send()
			if r.raw && err != nil {
				t.Fatal(err)
			}
			if r.arrive == "" && !r.raw && (err == nil) != r.want {
				t.Errorf("succeeded=%v, want %v (%v)", err == nil, r.want, err)
			}
			if r.arrive != "" {
				got, cerr := socks[r.arrive].Capture(400 * time.Millisecond)
				if cerr != nil {
					t.Fatal(cerr)
				}
				if arrived := tt.Contains(got, []byte(r.marker)); arrived != r.want {
					t.Errorf("arrived at %s=%v, want %v (send: %v)", r.arrive, arrived, r.want, err)
				}
			}
			if r.counter != nil {
				if after := nftDrop(t, l.nets[r.counter.host], r.counter.dept, r.counter.reason); after <= before {
					t.Errorf("finding 4: %s drop-%d-%s did not move (%d)", r.counter.host, r.counter.dept, r.counter.reason, after)
				}
			}
		})
	}

	t.Run("finding 4: counters carry on across a changed rule set", func(t *testing.T) {
		before, err := l.nets["h1"].Drops()
		if err != nil {
			t.Fatal(err)
		}
		if err := l.nets["h1"].Set(fabricDesired("h1", hostnet.TenantAllow{Proto: unix.IPPROTO_TCP, Addr: ip("192.0.2.80"), Port: 80})); err != nil {
			t.Fatal(err)
		}
		if l.nets["h1"].Changes() == 0 {
			t.Fatal("a new exception changed nothing")
		}
		after, err := l.nets["h1"].Drops()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]uint64{}
		for _, d := range after {
			got[firewall.CounterName(d.Department, d.Reason)] = d.Packets
		}
		moved := 0
		for _, d := range before {
			n := firewall.CounterName(d.Department, d.Reason)
			if got[n] < d.Packets {
				t.Errorf("%s went back from %d to %d", n, d.Packets, got[n])
			}
			if d.Packets > 0 {
				moved++
			}
		}
		if moved == 0 {
			t.Error("no counter had counted anything before the change")
		}
	})
}

func linkMAC(t *testing.T, ns *netnstest.NS, name string) net.HardwareAddr {
	t.Helper()
	l, err := ns.Netlink().LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().HardwareAddr
}

// ipv6 builds an IPv6 header (hop limit 64) around payload.
func ipv6(src, dst netip.Addr, next uint8, payload []byte) []byte {
	h := make([]byte, 40, 40+len(payload))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6], h[7] = next, 64
	s, d := src.As16(), dst.As16()
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
	return append(h, payload...)
}

func ping(ns *netnstest.NS, addr string) error {
	_, err := ns.Run("ping", "-c1", "-W1", addr)
	return err
}

// sendUDP sends one datagram from ns (no answer expected).
func sendUDP(ns *netnstest.NS, _ string, addr string, port int, payload string) error {
	return ns.Do(func() error {
		c, err := net.Dial("udp", net.JoinHostPort(addr, fmt.Sprint(port)))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte(payload))
		return err
	})
}

// markDialer sets SO_MARK (as the agent's health checks do) when mark is not 0.
func markDialer(mark int) *net.Dialer {
	return &net.Dialer{Timeout: time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		if mark == 0 {
			return nil
		}
		var serr error
		if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark) }); err != nil {
			return err
		}
		return serr
	}}
}

// dialTCP opens (and closes) a TCP connection from ns, 1 s at most.
func dialTCP(ns *netnstest.NS, addr string, port, mark int) error {
	return ns.Do(func() error {
		c, err := markDialer(mark).Dial("tcp", net.JoinHostPort(addr, fmt.Sprint(port)))
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// udpEcho sends a datagram from ns and waits 1 s for it to come back.
func udpEcho(ns *netnstest.NS, addr string, port, mark int) error {
	return ns.Do(func() error {
		c, err := markDialer(mark).Dial("udp", net.JoinHostPort(addr, fmt.Sprint(port)))
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("fabric-echo")); err != nil {
			return err
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err == nil && string(buf[:n]) != "fabric-echo" {
			err = fmt.Errorf("echo %q", buf[:n])
		}
		return err
	})
}

// mgmtPorts tries the agent's metrics (9480), BGP (179), SSH (22) and DNS (53) at addr:
// nil only when none answers.
func mgmtPorts(ns *netnstest.NS, addr string) error {
	var got []string
	for _, p := range []int{9480, 179, 22} {
		if err := dialTCP(ns, addr, p, 0); err == nil || !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
			got = append(got, fmt.Sprintf("tcp %d: %v", p, err))
		}
	}
	if err := udpEcho(ns, addr, 53, 0); err == nil || !isTimeout(err) {
		got = append(got, fmt.Sprintf("udp 53: %v", err))
	}
	if len(got) > 0 {
		return nil // something answered (a connection, a reset or an ICMP error)
	}
	return errors.New("no answer")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func listenTCP(t *testing.T, ns *netnstest.NS, port int) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port)); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func echoUDP(t *testing.T, ns *netnstest.NS, port int) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) { pc, err = net.ListenPacket("udp", fmt.Sprintf(":%d", port)); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, a, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], a)
		}
	}()
}

// withOptions inserts IPv4 options (a multiple of 4 bytes) into an option-less IPv4 packet.
func withOptions(pkt, opts []byte) []byte {
	out := append(append(append([]byte{}, pkt[:20]...), opts...), pkt[20:]...)
	out[0] = 0x40 | byte((20+len(opts))/4)
	binary.BigEndian.PutUint16(out[2:], uint16(len(out)))
	out[10], out[11] = 0, 0
	var sum uint32
	for i := 0; i < 20+len(opts); i += 2 {
		sum += uint32(out[i])<<8 | uint32(out[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(out[10:], ^uint16(sum))
	return out
}
