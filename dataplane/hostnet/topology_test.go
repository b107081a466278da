package hostnet_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/dataplane/hostnet"
	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/dataplane/trunk"
	tt "github.com/govcloud/govcloud/dataplane/trunk/trunktest"
)

type guestDef struct {
	name, host, segment, addr, mac string
	addr6                          string // optional
}

var (
	departments = []hostnet.Department{{Name: "lands", ID: 3, Table: 100}, {Name: "health", ID: 7, Table: 200}}
	segments    = []hostnet.Segment{
		{Name: "lands-web", Department: "lands", VLAN: 120, IPv4: pfx("198.18.20.0/24"), Gateway: ip("198.18.20.1"), IPv6: pfx("2001:db8:20::/64")},
		{Name: "lands-db", Department: "lands", VLAN: 121, IPv4: pfx("198.18.21.0/24"), Gateway: ip("198.18.21.1")},
		{Name: "health-web", Department: "health", VLAN: 130, IPv4: pfx("198.18.30.0/24"), Gateway: ip("198.18.30.1"), IPv6: pfx("2001:db8:30::/64")},
	}
	guests = []guestDef{
		{"g1a", "h1", "lands-web", "198.18.20.10", "02:00:00:00:01:0a", "2001:db8:20::a"},
		{"g2a", "h2", "lands-web", "198.18.20.11", "02:00:00:00:02:0a", "2001:db8:20::b"},
		{"g2b", "h2", "lands-db", "198.18.21.10", "02:00:00:00:02:0b", ""},
		{"g1h", "h1", "health-web", "198.18.30.10", "02:00:00:00:01:0c", "2001:db8:30::a"},
		{"g2h", "h2", "health-web", "198.18.30.11", "02:00:00:00:02:0c", "2001:db8:30::b"},
	}
	management = []netip.Prefix{pfx("192.0.2.0/24")}
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

func gatewayOf(seg string) string {
	for _, s := range segments {
		if s.Name == seg {
			return s.Gateway.String()
		}
	}
	panic(seg)
}

// desiredFor is the host's view: its own guests with ports, the others as remote.
func desiredFor(host string) hostnet.HostNetwork {
	d := hostnet.HostNetwork{Uplink: "up0", Departments: departments, Segments: segments, Management: management}
	for _, g := range guests {
		gg := hostnet.Guest{Segment: g.segment, MAC: tt.MAC(g.mac), Addr: ip(g.addr)}
		if g.addr6 != "" {
			gg.Addr6 = ip(g.addr6)
		}
		if g.host == host {
			gg.Ifname = "v" + g.name
		}
		d.Guests = append(d.Guests, gg)
	}
	return d
}

type lab struct {
	tor    *netnstest.NS
	hosts  map[string]*netnstest.NS
	nets   map[string]*hostnet.Host
	guests map[string]*netnstest.NS
}

func newLab(t *testing.T) *lab {
	t.Helper()
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "ping", "nft")
	l := &lab{hosts: map[string]*netnstest.NS{}, nets: map[string]*hostnet.Host{}, guests: map[string]*netnstest.NS{}}
	l.tor = netnstest.New(t, "gct-tor")
	l.tor.MustRun(t, "ip", "link", "add", "br0", "type", "bridge")
	l.tor.MustRun(t, "ip", "link", "set", "br0", "up")
	bpffs := tt.BPFFS(t)
	for i, h := range []string{"h1", "h2"} {
		ns := netnstest.New(t, "gct-"+h)
		l.hosts[h] = ns
		if err := netnstest.Veth(ns, "up0", l.tor, h); err != nil {
			t.Fatal(err)
		}
		l.tor.MustRun(t, "ip", "link", "set", h, "master", "br0")
		if err := ns.AddrAdd("up0", fmt.Sprintf("192.0.2.%d/24", i+1)); err != nil {
			t.Fatal(err)
		}
		hn, err := hostnet.New(hostnet.Config{NetNS: ns.Handle(), PinPath: filepath.Join(bpffs, h), StateDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := hn.Close(); err != nil {
				t.Errorf("closing %s: %v", h, err)
			}
		})
		l.nets[h] = hn
	}
	for _, g := range guests {
		gns := netnstest.New(t, "gct-"+g.name)
		l.guests[g.name] = gns
		if err := netnstest.Veth(l.hosts[g.host], "v"+g.name, gns, "eth0"); err != nil {
			t.Fatal(err)
		}
		gns.MustRun(t, "ip", "link", "set", "eth0", "address", g.mac)
		if err := gns.AddrAdd("eth0", g.addr+"/24"); err != nil {
			t.Fatal(err)
		}
		gns.MustRun(t, "ip", "route", "add", "default", "via", gatewayOf(g.segment))
		if g.addr6 != "" {
			if err := gns.AddrAdd("eth0", g.addr6+"/64"); err != nil {
				t.Fatal(err)
			}
		}
	}
	for h, hn := range l.nets {
		if err := hn.Set(desiredFor(h)); err != nil {
			t.Fatalf("Set on %s: %v", h, err)
		}
	}
	return l
}

func (l *lab) ping(t *testing.T, from, to string) error {
	t.Helper()
	_, err := l.guests[from].Run("ping", "-c1", "-W1", to)
	return err
}

func addrOf(name string) string {
	for _, g := range guests {
		if g.name == name {
			return g.addr
		}
	}
	panic(name)
}

func macOf(name string) net.HardwareAddr {
	for _, g := range guests {
		if g.name == name {
			return tt.MAC(g.mac)
		}
	}
	panic(name)
}

// echo starts a TCP and a UDP echo server on port in the guest.
func (l *lab) echo(t *testing.T, guest string, port int) {
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	if err := l.guests[guest].Do(func() (err error) {
		if ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port)); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, a, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], a)
		}
	}()
}

func (l *lab) dial(guest, network, addr string) (string, error) {
	var out string
	err := l.guests[guest].Do(func() error {
		c, err := net.DialTimeout(network, addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		msg := "govcloud-echo-" + network + "\n"
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		if network == "tcp4" {
			out, err = bufio.NewReader(c).ReadString('\n')
			return err
		}
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		out = string(buf[:n])
		return err
	})
	return out, err
}

// packetsRE matches the values of anonymous and named counters in "nft list" output.
var packetsRE = regexp.MustCompile(`packets \d+ bytes \d+`)

// nftDrops sums the host's nftables drop counters (all departments and reasons).
func nftDrops(t *testing.T, h *hostnet.Host) uint64 {
	t.Helper()
	ds, err := h.Drops()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, d := range ds {
		n += d.Packets
	}
	return n
}

// nftDrop is one department's drops for one reason.
func nftDrop(t *testing.T, h *hostnet.Host, dept uint32, reason string) uint64 {
	t.Helper()
	ds, err := h.Drops()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.Department == dept && d.Reason == reason {
			return d.Packets
		}
	}
	return 0
}

func TestTopology(t *testing.T) {
	l := newLab(t)

	t.Run("same segment across hosts: ping, TCP and UDP echo", func(t *testing.T) {
		if err := l.ping(t, "g1a", addrOf("g2a")); err != nil {
			t.Fatal(err)
		}
		l.echo(t, "g2a", 7007)
		for _, nw := range []string{"tcp4", "udp4"} {
			got, err := l.dial("g1a", nw, addrOf("g2a")+":7007")
			if err != nil || got != "govcloud-echo-"+nw+"\n" {
				t.Fatalf("%s echo: %q, %v", nw, got, err)
			}
		}
		if err := l.ping(t, "g1h", addrOf("g2h")); err != nil {
			t.Fatalf("health guests: %v", err)
		}
	})
	t.Run("IPv6 inside the segment and to its gateway", func(t *testing.T) {
		// Right after setup the guests' link-locals may still be in DAD: allow a few seconds.
		if _, err := l.guests["g1a"].Run("ping", "-6", "-c1", "-w5", "2001:db8:20::b"); err != nil {
			t.Fatal(err)
		}
		if _, err := l.guests["g1a"].Run("ping", "-6", "-c1", "-w5", "2001:db8:20::1"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a department's segments route to each other across hosts", func(t *testing.T) {
		if err := l.ping(t, "g1a", addrOf("g2b")); err != nil {
			t.Fatal(err)
		}
		if err := l.ping(t, "g2b", addrOf("g1a")); err != nil {
			t.Fatal(err)
		}
		if err := l.ping(t, "g2b", addrOf("g2a")); err != nil {
			t.Fatal(err)
		}
		if err := l.ping(t, "g1a", "198.18.20.1"); err != nil {
			t.Fatalf("own gateway: %v", err)
		}
	})
	t.Run("trunk counters moved for the department", func(t *testing.T) {
		st, err := l.nets["h1"].Trunk().Stats()
		if err != nil {
			t.Fatal(err)
		}
		for _, dir := range []trunk.Direction{trunk.TX, trunk.RX} {
			if c := st[trunk.StatKey{Department: 3, Segment: 120, Direction: dir}]; c.Packets == 0 || c.Bytes < 60*c.Packets {
				t.Errorf("lands-web %s on h1 = %+v", dir, c)
			}
		}
	})

	t.Run("other department cannot reach lands by IP", func(t *testing.T) {
		for _, dst := range []string{addrOf("g1a"), addrOf("g2a"), addrOf("g2b"), "198.18.20.1", "198.18.21.1", "192.0.2.1", "192.0.2.2"} {
			if err := l.ping(t, "g1h", dst); err == nil {
				t.Errorf("g1h reached %s", dst)
			}
		}
		if _, err := l.dial("g1h", "tcp4", addrOf("g2a")+":7007"); err == nil {
			t.Errorf("g1h opened TCP to g2a")
		}
	})

	// Raw frame attempts from g1h (health, host h1) and from the trunk. Each must not arrive
	// at any lands guest, and a drop counter must move.
	socks := map[string]*tt.Sock{}
	for _, g := range []string{"g1a", "g2a", "g2b", "g1h"} {
		if err := l.guests[g].Do(func() (err error) { socks[g], err = tt.Open("eth0"); return }); err != nil {
			t.Fatal(err)
		}
		defer socks[g].Close()
	}
	var torSock *tt.Sock
	if err := l.tor.Do(func() (err error) { torSock, err = tt.Open("h1"); return }); err != nil {
		t.Fatal(err)
	}
	defer torSock.Close()
	gwMAC := hostnet.DefaultGatewayMAC
	h1 := ip(addrOf("g1h"))
	attempts := []struct {
		name    string
		frame   []byte
		fromTor bool
		drop    trunk.DropReason // trunk counter expected to move; 0: the nft port chain's
	}{
		{name: "routed UDP through the gateway", frame: tt.UDPFrame(gwMAC, macOf("g1h"), h1, ip(addrOf("g1a")), 9, 9, []byte("att-routed"))},
		{name: "spoofed source IP (a lands address)", frame: tt.UDPFrame(gwMAC, macOf("g1h"), ip("198.18.20.99"), ip(addrOf("g1a")), 9, 9, []byte("att-spoof-ip"))},
		{name: "spoofed source MAC (g1a's)", frame: tt.UDPFrame(macOf("g1a"), macOf("g1a"), ip(addrOf("g1a")), ip(addrOf("g2a")), 9, 9, []byte("att-spoof-mac"))},
		{name: "direct L2 to a lands guest's MAC", frame: tt.UDPFrame(macOf("g2a"), macOf("g1h"), h1, ip(addrOf("g2a")), 9, 9, []byte("att-l2"))},
		{name: "ARP for a lands guest", frame: append(tt.ARP(tt.ARPRequest, macOf("g1h"), h1, nil, ip(addrOf("g1a"))), []byte("att-arp")...)},
		{name: "frame tagged with lands' VLAN", frame: tt.Tag(tt.UDPFrame(macOf("g2a"), macOf("g1h"), h1, ip(addrOf("g2a")), 9, 9, []byte("att-wrongvlan")), tt.Ether8021Q, 120)},
		{name: "double tag (130 outside, 120 inside)", frame: tt.Tag(tt.Tag(tt.UDPFrame(macOf("g2a"), macOf("g1h"), h1, ip(addrOf("g2a")), 9, 9, []byte("att-dbl")), tt.Ether8021Q, 120), tt.Ether8021Q, 130)},
		{name: "trunk: double tag into the uplink", fromTor: true, drop: trunk.DropDoubleTag, frame: tt.Tag(tt.Tag(tt.UDPFrame(macOf("g1a"), macOf("g2h"), h1, ip(addrOf("g1a")), 9, 9, []byte("att-tor-dbl")), tt.Ether8021Q, 120), tt.Ether8021Q, 130)},
		{name: "trunk: unknown VLAN", fromTor: true, drop: trunk.DropUnknownVLAN, frame: tt.Tag(tt.UDPFrame(macOf("g1a"), macOf("g2h"), h1, ip(addrOf("g1a")), 9, 9, []byte("att-tor-unk")), tt.Ether8021Q, 999)},
		{name: "trunk: gateway ARP injected", fromTor: true, drop: trunk.DropGatewayND, frame: tt.Tag(append(tt.ARP(tt.ARPRequest, macOf("g2h"), ip("198.18.20.99"), nil, ip("198.18.20.1")), []byte("att-tor-arp")...), tt.Ether8021Q, 120)},
	}
	for _, a := range attempts {
		t.Run("isolation: "+a.name, func(t *testing.T) {
			marker := []byte(a.name[:0])
			for _, m := range []string{"att-"} {
				i := strings.Index(string(a.frame), m)
				marker = a.frame[i:]
			}
			beforeNft := nftDrops(t, l.nets["h1"])
			beforeTrunk := dropCount(t, l.nets["h1"], a.drop)
			var err error
			if a.fromTor {
				err = torSock.Send(tt.Pad(a.frame, 60))
			} else {
				err = socks["g1h"].Send(tt.Pad(a.frame, 60))
			}
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan string, 3)
			for _, g := range []string{"g1a", "g2a", "g2b"} {
				go func() {
					got, err := socks[g].Capture(400 * time.Millisecond)
					if err != nil {
						done <- err.Error()
					} else if tt.Contains(got, marker) {
						done <- g + " received it"
					} else {
						done <- ""
					}
				}()
			}
			for range 3 {
				if msg := <-done; msg != "" {
					t.Error(msg)
				}
			}
			if a.drop != 0 {
				if d := dropCount(t, l.nets["h1"], a.drop) - beforeTrunk; d < 1 {
					t.Errorf("trunk %s drops did not move", a.drop)
				}
				return
			}
			afterNft := nftDrops(t, l.nets["h1"])
			switch {
			case strings.Contains(a.name, "routed"):
				// No route in the health table: the unreachable default ends the lookup (the
				// kernel's ICMP errors are rate limited, so ask the FIB instead of counting them).
				out, _ := l.hosts["h1"].Run("ip", "route", "get", addrOf("g1a"), "from", addrOf("g1h"), "iif", "gcbr130")
				if !strings.Contains(out, "unreachable") && !strings.Contains(out, "No route to host") {
					t.Errorf("route from health to lands is not unreachable: %s", out)
				}
			case strings.Contains(a.name, "ARP for"), strings.Contains(a.name, "direct L2"):
				// Stays inside VLAN 130's broadcast domain: nothing to drop, nothing arrives.
			case afterNft == beforeNft:
				t.Errorf("no nftables drop counter moved")
			}
		})
	}
}

func dropCount(t *testing.T, h *hostnet.Host, r trunk.DropReason) uint64 {
	t.Helper()
	d, err := h.Trunk().Drops()
	if err != nil {
		t.Fatal(err)
	}
	return trunk.DropsByReason(d)[r].Packets
}
