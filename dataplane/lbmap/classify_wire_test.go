package lbmap

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/dataplane/trunk"
	tt "github.com/govcloud/govcloud/dataplane/trunk/trunktest"
	"github.com/govcloud/govcloud/lb"
	"github.com/vishvananda/netlink"
)

// TestWireDepartmentClassification runs a department's frame the way it really travels: a
// guest on host 1 sends on its segment, host 1's trunk program tags it with bpf_skb_vlan_push
// (the tag then rides in skb metadata) and redirects it out host 1's uplink, a Linux bridge
// (the top-of-rack switch) forwards it, and host 2's uplink receives it with xdp_lb (native)
// and the trunk program attached. lands (VLAN 120) and the public fabric both have a service
// on 198.19.0.10:80: the frame must be balanced in lands' domain or dropped, never to the
// public backend.
func TestWireDepartmentClassification(t *testing.T) {
	netnstest.RequirePrivileged(t)
	h1 := netnstest.New(t, "gct-c1")
	tor := netnstest.New(t, "gct-ct")
	h2 := netnstest.New(t, "gct-c2")
	for _, ns := range []*netnstest.NS{h1, tor, h2} {
		ns.MustRun(t, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	if err := netnstest.Veth(h1, "up1", tor, "fab1"); err != nil {
		t.Fatal(err)
	}
	if err := netnstest.Veth(h2, "up2", tor, "fab2"); err != nil {
		t.Fatal(err)
	}
	if err := netnstest.Veth(h1, "tp120", h1, "tb120"); err != nil {
		t.Fatal(err)
	}
	tor.MustRun(t, "ip", "link", "add", "fabric", "type", "bridge")
	for _, l := range []string{"fab1", "fab2"} {
		tor.MustRun(t, "ip", "link", "set", l, "master", "fabric")
	}
	tor.MustRun(t, "ip", "link", "set", "fabric", "up")

	bpffs := tt.BPFFS(t)
	// Host 1: the trunk in front of its segment.
	tr1, err := trunk.Load(filepath.Join(bpffs, "trunk1"))
	if err != nil {
		t.Fatal(err)
	}
	defer tr1.Close()
	up1, _ := h1.Netlink().LinkByName("up1")
	tp, _ := h1.Netlink().LinkByName("tp120")
	if err := tr1.SetUplink(up1.Attrs().Index); err != nil {
		t.Fatal(err)
	}
	if err := tr1.SetSegment(trunk.Segment{VLAN: 120, Ifindex: tp.Attrs().Index, Department: 7, ID: 20}); err != nil {
		t.Fatal(err)
	}
	var guest *tt.Sock
	if err := h1.Do(func() error {
		if err := tr1.Attach(trunk.RoleUplink, "up1", up1.Attrs().Index); err != nil {
			return err
		}
		if err := tr1.Attach(trunk.RoleSegment, "tp120", tp.Attrs().Index); err != nil {
			return err
		}
		guest, err = tt.Open("tb120")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer guest.Close()

	// Host 2: the load balancer on its uplink, the trunk behind it.
	tr2, err := trunk.Load(filepath.Join(bpffs, "trunk2"))
	if err != nil {
		t.Fatal(err)
	}
	defer tr2.Close()
	up2, _ := h2.Netlink().LinkByName("up2")
	if err := tr2.SetUplink(up2.Attrs().Index); err != nil {
		t.Fatal(err)
	}
	dp, err := Load(Options{ConnTableSize: 1 << 12, TableSize: 251})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	if err := dp.SetConfig(Config{EncapSource4: netip.MustParseAddr("198.18.0.2"), SNATSource4: netip.MustParseAddr("198.18.0.2")}); err != nil {
		t.Fatal(err)
	}
	h2.MustRun(t, "sysctl", "-qw", "net.ipv4.conf.all.forwarding=1") // the FIB lookup answers only a router
	if err := h2.AddrAdd("up2", "198.18.0.2/24"); err != nil {
		t.Fatal(err)
	}
	for i, a := range []string{"198.18.0.50", "198.18.0.60"} {
		if err := h2.Netlink().NeighAdd(&netlink.Neigh{LinkIndex: up2.Attrs().Index, State: netlink.NUD_PERMANENT, IP: ip(a),
			HardwareAddr: mac(fmt.Sprintf("02:00:00:00:00:%02x", 0x50+i)), Family: netlink.FAMILY_V4}); err != nil {
			t.Fatal(err)
		}
	}
	if err := dp.SetVLANDomains(map[uint16]uint32{120: 7}); err != nil {
		t.Fatal(err)
	}
	public := svc("public-web", 0, "198.19.0.10", 80, lb.TCP, lb.DSR, be("198.18.0.50", 0, 1))
	lands := svc("lands-web", 7, "198.19.0.10", 80, lb.TCP, lb.DSR, be("198.18.0.60", 0, 1))
	mustSet(t, dp, []lb.Service{public, lands})
	if err := h2.Do(func() error {
		if err := dp.AttachUplink("up2"); err != nil {
			return err
		}
		return tr2.Attach(trunk.RoleUplink, "up2", up2.Attrs().Index)
	}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = h2.Do(dp.DetachUplink) }()

	if got := dp.UplinkVLAN(); !strings.Contains(got, "tx-vlan-hw-insert") || !strings.Contains(got, "fab2") {
		t.Fatalf("UplinkVLAN() = %q, want the peer fab2's tx-vlan-hw-insert turned off", got)
	}
	sport := uint16(43000)
	var up1Sock *tt.Sock
	if err := h1.Do(func() (err error) { up1Sock, err = tt.Open("up1"); return }); err != nil {
		t.Fatal(err)
	}
	defer up1Sock.Close()

	l3 := func(sport uint16) []byte {
		return ipPacket(t, flow{src: "198.18.20.5", dst: "198.19.0.10", sport: sport, dport: 80, payload: "dept"})
	}
	gMAC, rMAC := mac("02:00:00:00:20:05"), mac("02:00:00:00:20:06")
	for _, tc := range []struct {
		name string
		send func(sport uint16) error
		// wantLands: balanced in lands' domain; else in the public one.
		wantLands bool
	}{
		{"guest frame tagged by the trunk (tag in skb metadata), through a bridge", func(p uint16) error {
			return guest.Send(frame(t, gMAC, rMAC, 0, l3(p)))
		}, true},
		{"priority-tagged guest frame, tagged by the trunk", func(p uint16) error {
			return guest.Send(tt.TagTCI(frame(t, gMAC, rMAC, 0, l3(p)), tt.Ether8021Q, 5<<13))
		}, true},
		{"802.1ad VLAN 120 from the fabric (tag in metadata at the bridge)", func(p uint16) error {
			return up1Sock.Send(tt.Tag(frame(t, gMAC, rMAC, 0, l3(p)), tt.Ether8021AD, 120))
		}, true},
		{"802.1Q VLAN 120 with DEI set from the fabric", func(p uint16) error {
			return up1Sock.Send(tt.TagTCI(frame(t, gMAC, rMAC, 0, l3(p)), tt.Ether8021Q, 1<<12|120))
		}, true},
		{"untagged from the fabric is public", func(p uint16) error {
			return up1Sock.Send(frame(t, gMAC, rMAC, 0, l3(p)))
		}, false},
		{"priority-tagged (VID 0) from the fabric is public", func(p uint16) error {
			return up1Sock.Send(tt.TagTCI(frame(t, gMAC, rMAC, 0, l3(p)), tt.Ether8021Q, 3<<13))
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			count := func() (pub, dept uint64) {
				t.Helper()
				c, err := dp.BackendCounters()
				if err != nil {
					t.Fatal(err)
				}
				return c["198.18.0.50:0"].Packets, c["198.18.0.60:0"].Packets
			}
			pub0, dept0 := count()
			const n = 5
			for i := 0; i < n; i++ {
				sport++
				if err := tc.send(sport); err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.Now().Add(2 * time.Second)
			var pub, dept uint64
			for time.Now().Before(deadline) {
				p, d := count()
				pub, dept = p-pub0, d-dept0
				if pub+dept >= n {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			wantPub, wantDept := uint64(0), uint64(n)
			if !tc.wantLands {
				wantPub, wantDept = n, 0
			}
			if pub != wantPub || dept != wantDept {
				drops, _ := dp.Drops()
				t.Fatalf("public backend got %d, lands backend %d; want %d and %d (drops %v)", pub, dept, wantPub, wantDept, drops)
			}
		})
	}
}
