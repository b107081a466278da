package lbmap

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/lb"
)

// Issue 12 section 6: data-centre uplinks run MTU 9000. The programs are multi-buffer XDP
// (SEC("xdp.frags")): a 9000-byte frame spans several buffers, is balanced by its whole
// length, encapsulated, and answered with frag-needed where it does not fit.

// jumboRig is the packet rig with both veth ends at MTU 9000.
func jumboRig(t *testing.T) *rig {
	r := newRig(t, Options{})
	for _, n := range []string{"up0", "up1"} {
		l, err := r.ns.Netlink().LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.ns.Netlink().LinkSetMTU(l, 9000); err != nil {
			t.Fatalf("MTU 9000 on %s: %v", n, err)
		}
	}
	return r
}

// TestJumboFramesProgRun runs 9000-byte frames (several buffers in BPF_PROG_TEST_RUN) through
// xdp_lb and xdp_decap.
func TestJumboFramesProgRun(t *testing.T) {
	r := jumboRig(t)
	mustSet(t, r.dp, issue12Services())
	tcp4 := func(sport uint16, n int) []byte {
		return big(t, flow{src: client4, dst: "203.0.113.10", sport: sport, dport: 80, df: true}, n)
	}
	tcp6 := func(sport uint16, n int) []byte {
		return big(t, flow{src: client6, dst: "2001:db8:f::10", sport: sport, dport: 80}, n)
	}
	j4, j6 := tcp4(48000, 9000), tcp6(48001, 9000)
	other := big(t, flow{src: client4, dst: "203.0.113.99", sport: 48002, dport: 80}, 9000)
	for _, enc := range []struct {
		e   Encapsulation
		udp int
	}{{EncapIPIP, 0}, {EncapGUE, 8}} {
		t.Run(string(enc.e), func(t *testing.T) {
			if err := r.dp.SetConfig(rigConfig(enc.e)); err != nil {
				t.Fatal(err)
			}
			to := func(host string, inner []byte) []byte {
				if enc.e == EncapGUE {
					return gueTo(t, host, 0, inner)
				}
				return dsrTo(t, host, 0, inner)
			}
			fit4, fit6 := tcp4(48003, 8980-enc.udp), tcp6(48004, 8960-enc.udp)
			mid4 := tcp4(48005, 8900)
			runRows(t, r, r.dp.Program(), []pktRow{
				{name: "v4 9000-byte frame (IP 9000): frag-needed 8980-overhead", in: frame(t, ext, upMAC, 0, j4), verdict: xdpTX, out: tooBigReply(t, frame(t, ext, upMAC, 0, j4), 0, 8980-enc.udp), drop: "too_big"},
				{name: "v4 8900-byte packet balanced and encapsulated", in: frame(t, ext, upMAC, 0, mid4), verdict: xdpTX, out: to(hostA4, mid4), sent: true},
				{name: "v4 packet that just fits at MTU 9000", in: frame(t, ext, upMAC, 0, fit4), verdict: xdpTX, out: to(hostA4, fit4), sent: true},
				{name: "v6 9000: packet-too-big 8960-overhead", in: frame(t, ext, upMAC, 0, j6), verdict: xdpTX, out: tooBigReply(t, frame(t, ext, upMAC, 0, j6), 0, 8960-enc.udp), drop: "too_big"},
				{name: "v6 packet that just fits", in: frame(t, ext, upMAC, 0, fit6), verdict: xdpTX, out: to(hostA6, fit6), sent: true},
				{name: "9000 bytes to another address pass untouched", in: frame(t, ext, upMAC, 0, other)},
			})
		})
	}
	// The backend's host decapsulates jumbo tunnels in XDP.
	setupDecap(t, r)
	inner := big(t, flow{src: client4, dst: localTCP4, sport: 48006, dport: 80}, 8900)
	inner6 := big(t, flow{src: client6, dst: localTCP6, sport: 48007, dport: 80}, 8900)
	rows := []pktRow{
		{name: "decap: GUE/IPv4 jumbo", in: frame(t, ext, upMAC, 0, ipv4Hdr(lbHost4, self4, 17, nil, gueHdr(50000, DefaultGUEPort, inner), nil)), out: frame(t, ext, upMAC, 0, inner), decap: true},
		{name: "decap: IPIP jumbo", in: frame(t, ext, upMAC, 0, tunnel4(lbHost4, self4, inner, nil)), out: frame(t, ext, upMAC, 0, inner), decap: true},
		{name: "decap: IP6IP6 jumbo", in: frame(t, ext, upMAC, 0, tunnel6(lbHost6, self6, inner6)), out: frame(t, ext, upMAC, 0, inner6), decap: true},
	}
	runRows(t, r, r.dp.Program(), rows)
	runRows(t, r, r.dp.DecapProgram(), rows)
}

// TestJumboVeth attaches xdp_lb to a real veth at MTU 9000 (which only a multi-buffer
// program may: the kernel refuses others) and sends real datagrams from a client namespace:
// an 8900-byte one arrives GUE-encapsulated at the backend host's GUE port, whole; a 9000-byte
// DF one is answered with frag-needed, and the client's kernel lowers its path MTU to the VIP.
func TestJumboVeth(t *testing.T) {
	netnstest.RequirePrivileged(t)
	lbNS := netnstest.New(t, "gct-jlb")
	cl := netnstest.New(t, "gct-jcl")
	if err := netnstest.Veth(lbNS, "lb0", cl, "c0"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		ns   *netnstest.NS
		name string
	}{{lbNS, "lb0"}, {cl, "c0"}} {
		l, err := s.ns.Netlink().LinkByName(s.name)
		if err == nil {
			err = s.ns.Netlink().LinkSetMTU(l, 9000)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	const vip, backendHost = "203.0.113.20", "198.18.0.10"
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(lbNS.AddrAdd("lb0", self4+"/24"))
	must(cl.AddrAdd("c0", client4+"/24"))
	must(cl.AddrAdd("c0", backendHost+"/24"))
	cl.MustRun(t, "ip", "route", "add", vip+"/32", "via", self4)
	lbNS.MustRun(t, "sysctl", "-qw", "net.ipv4.conf.all.forwarding=1") // the FIB lookup answers only a router
	c0, _ := cl.Netlink().LinkByName("c0")
	lb0, _ := lbNS.Netlink().LinkByName("lb0")
	must(lbNS.Netlink().NeighAdd(&netlink.Neigh{LinkIndex: lb0.Attrs().Index, State: netlink.NUD_PERMANENT, IP: ip(backendHost), HardwareAddr: c0.Attrs().HardwareAddr, Family: netlink.FAMILY_V4}))
	must(cl.Netlink().NeighAdd(&netlink.Neigh{LinkIndex: c0.Attrs().Index, State: netlink.NUD_PERMANENT, IP: ip(self4), HardwareAddr: lb0.Attrs().HardwareAddr, Family: netlink.FAMILY_V4}))

	var dp *Dataplane
	must(lbNS.Do(func() (err error) { dp, err = Load(Options{ConnTableSize: 1024, NATTableSize: 1024}); return }))
	t.Cleanup(func() { dp.Close() })
	must(dp.SetConfig(Config{EncapSource4: netip.MustParseAddr(self4)}))
	mustSet(t, dp, []lb.Service{svc("jumbo", 0, vip, 9000, lb.UDP, lb.DSR, be(backendHost, 0, 1))})
	must(lbNS.Do(func() error { return dp.AttachUplink("lb0") }))
	t.Cleanup(func() { _ = dp.DetachUplink() })
	// The client side receives XDP_TX frames through an XDP program of its own.
	var passDP *Dataplane
	must(cl.Do(func() (err error) {
		passDP, err = Load(Options{ConnTableSize: 1024, NATTableSize: 1024, TableSize: 251})
		return
	}))
	t.Cleanup(func() { passDP.Close() })
	keepAttached(t, cl, passDP, "c0", passDP.PassProgram())

	// The backend host's GUE port, and the client's socket toward the VIP (DF: PMTUDISC_DO).
	var gue *net.UDPConn
	var conn *net.UDPConn
	must(cl.Do(func() (err error) {
		if gue, err = net.ListenUDP("udp4", &net.UDPAddr{IP: ip(backendHost), Port: DefaultGUEPort}); err != nil {
			return err
		}
		conn, err = net.DialUDP("udp4", &net.UDPAddr{IP: ip(client4), Port: 49000}, &net.UDPAddr{IP: ip(vip), Port: 9000})
		return err
	}))
	t.Cleanup(func() { gue.Close(); conn.Close() })
	raw, err := conn.SyscallConn()
	must(err)
	sockopt := func(set bool) (v int) {
		var serr error
		must(raw.Control(func(fd uintptr) {
			if set {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
			} else {
				v, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU)
			}
		}))
		must(serr)
		return v
	}
	sockopt(true)

	// 8900 bytes of IP (8872 of payload) fit once encapsulated (8928 <= 9000).
	payload := []byte(strings.Repeat("j", 8872))
	_, err = conn.Write(payload)
	must(err)
	buf := make([]byte, 10000)
	must(gue.SetReadDeadline(time.Now().Add(5 * time.Second)))
	n, from, err := gue.ReadFromUDP(buf)
	if err != nil {
		drops, _ := dp.Drops()
		bc, _ := dp.BackendCounters()
		vc, _ := dp.VIPCounters()
		t.Logf("drops %v backends %v vips %v", drops, bc, vc)
		t.Log(cl.MustRun(t, "ip", "-s", "link", "show", "c0"), lbNS.MustRun(t, "ip", "-s", "link", "show", "lb0"), lbNS.MustRun(t, "ip", "link", "show", "lb0"))
		t.Fatalf("no GUE datagram at the backend host: %v", err)
	}
	if n != 8900 || buf[0] != 0x45 || string(buf[16:20]) != string(ip(vip).To4()) || string(buf[28:n]) != string(payload) {
		t.Fatalf("GUE payload: %d bytes from %s, want the client's 8900-byte packet to %s whole", n, from, vip)
	}
	if from.Port < 49152 || !from.IP.Equal(ip(self4)) {
		t.Errorf("GUE source %s: want %s from a hashed port >= 49152", from, self4)
	}
	fmt.Printf("jumbo over a real veth at MTU 9000: 8900-byte datagram arrived GUE-encapsulated from %s\n", from)

	// 9000 bytes of IP with DF: the program answers frag-needed with 9000-28 = 8972.
	before, _ := dp.Drops()
	if _, err := conn.Write([]byte(strings.Repeat("k", 8972))); err != nil {
		t.Fatalf("first 9000-byte write: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	var mtu int
	for time.Now().Before(deadline) {
		if mtu = sockopt(false); mtu == 8972 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if mtu != 8972 {
		t.Fatalf("client's path MTU to the VIP %d, want 8972 (frag-needed from the program)", mtu)
	}
	if _, err := conn.Write([]byte(strings.Repeat("k", 8972))); !errors.Is(err, syscall.EMSGSIZE) {
		t.Errorf("second 9000-byte write: %v, want EMSGSIZE", err)
	}
	after, _ := dp.Drops()
	if d := after["too_big"].Packets - before["too_big"].Packets; d != 1 {
		t.Errorf("too_big moved by %d, want 1", d)
	}
	fmt.Printf("jumbo over a real veth: 9000-byte DF datagram answered with frag-needed; client path MTU to %s now %d\n", vip, mtu)
}

// An agent upgraded over pinned maps of the layout before the encapsulation fields (lb_config
// of 48 bytes) loads: the pinned config is replaced, not refused as incompatible.
func TestLoadReplacesOldConfigPin(t *testing.T) {
	netnstest.RequirePrivileged(t)
	dir := netnstest.TempPinDir(t)
	old, err := ebpf.NewMap(&ebpf.MapSpec{Name: "config", Type: ebpf.Array, KeySize: 4, ValueSize: 48, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Pin(filepath.Join(dir, "config")); err != nil {
		t.Fatal(err)
	}
	old.Close()
	dp, err := Load(Options{PinPath: dir, ConnTableSize: 1024, NATTableSize: 1024, TableSize: 251})
	if err != nil {
		t.Fatalf("Load over an old config pin: %v", err)
	}
	defer dp.Close()
	if err := dp.SetConfig(Config{Encap: EncapIPIP, MTU: 1500}); err != nil {
		t.Fatal(err)
	}
}
