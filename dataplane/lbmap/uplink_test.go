package lbmap

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/govcloud/govcloud/dataplane/netnstest"
	tt "github.com/govcloud/govcloud/dataplane/trunk/trunktest"
)

// TestAttachUplink: AttachUplink puts xdp_lb on the uplink once (again is a no-op), moves it
// to another interface, DetachUplink removes it and its pin; Close leaves a pinned link
// attached, and a dataplane loaded again from the pins takes the link over in place.
func TestAttachUplink(t *testing.T) {
	netnstest.RequirePrivileged(t)
	ns := netnstest.New(t, "gct-upl")
	peer := netnstest.New(t, "gct-uplp")
	for _, n := range []string{"up0", "up1"} {
		if err := netnstest.Veth(ns, n, peer, "p"+n); err != nil {
			t.Fatal(err)
		}
	}
	pins := filepath.Join(tt.BPFFS(t), "lb")
	load := func() *Dataplane {
		t.Helper()
		var dp *Dataplane
		if err := ns.Do(func() (err error) {
			dp, err = Load(Options{PinPath: pins, ConnTableSize: 1024, NATTableSize: 1024, TableSize: 251})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return dp
	}
	// xdpOn is the id of the XDP program attached to ifname (0: none).
	xdpOn := func(ifname string) uint32 {
		t.Helper()
		l, err := ns.Netlink().LinkByName(ifname)
		if err != nil {
			t.Fatal(err)
		}
		if x := l.Attrs().Xdp; x != nil && x.Attached {
			return x.ProgId
		}
		return 0
	}
	pinned := func(ifname string) bool {
		_, err := os.Stat(filepath.Join(pins, "link_xdp_"+ifname))
		return err == nil
	}
	dp := load()
	t.Cleanup(func() { _ = dp.Close() })
	info, err := dp.Program().Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	for _, step := range []struct {
		name       string
		do         func() error
		wantErr    string
		up0, up1   uint32 // program ids attached
		pin0, pin1 bool
	}{
		{"attach up0", func() error { return dp.AttachUplink("up0") }, "", uint32(id), 0, true, false},
		{"attach up0 again: no-op", func() error { return dp.AttachUplink("up0") }, "", uint32(id), 0, true, false},
		{"move to up1", func() error { return dp.AttachUplink("up1") }, "", 0, uint32(id), false, true},
		{"an interface that does not exist", func() error { return dp.AttachUplink("nope0") }, `interface "nope0"`, 0, 0, false, false},
		{"attach up0 after the failure", func() error { return dp.AttachUplink("up0") }, "", uint32(id), 0, true, false},
		{"detach", dp.DetachUplink, "", 0, 0, false, false},
		{"detach again: no-op", dp.DetachUplink, "", 0, 0, false, false},
	} {
		err := ns.Do(step.do)
		if (step.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), step.wantErr)) {
			t.Fatalf("%s: error %v, want %q", step.name, err, step.wantErr)
		}
		if g0, g1 := xdpOn("up0"), xdpOn("up1"); g0 != step.up0 || g1 != step.up1 {
			t.Fatalf("%s: programs on up0/up1 %d/%d, want %d/%d", step.name, g0, g1, step.up0, step.up1)
		}
		if p0, p1 := pinned("up0"), pinned("up1"); p0 != step.pin0 || p1 != step.pin1 {
			t.Fatalf("%s: pins up0/up1 %v/%v, want %v/%v", step.name, p0, p1, step.pin0, step.pin1)
		}
	}

	// Close keeps the pinned link (an agent restart); the next dataplane updates it in place.
	if err := ns.Do(func() error { return dp.AttachUplink("up0") }); err != nil {
		t.Fatal(err)
	}
	if err := dp.Close(); err != nil {
		t.Fatal(err)
	}
	if xdpOn("up0") == 0 || !pinned("up0") {
		t.Fatal("Close detached the pinned uplink program")
	}
	dp = load()
	info, err = dp.Program().Info()
	if err != nil {
		t.Fatal(err)
	}
	id2, _ := info.ID()
	if err := ns.Do(func() error { return dp.AttachUplink("up0") }); err != nil {
		t.Fatal(err)
	}
	if got := xdpOn("up0"); got != uint32(id2) {
		t.Fatalf("after reload: program %d on up0, want the new dataplane's %d", got, id2)
	}
	if err := ns.Do(dp.DetachUplink); err != nil || xdpOn("up0") != 0 || pinned("up0") {
		t.Fatalf("detach after reload: %v, program %d, pinned %v", err, xdpOn("up0"), pinned("up0"))
	}
}

// TestAttachUplinkVLANOffload: AttachUplink turns the uplink's rx VLAN offload and its veth
// peer's tx VLAN offload off (so tags reach xdp_lb in the frame) and says so; a veth whose
// peer lives in a namespace it cannot find is refused with ErrVLANTagsHidden and left without
// the program.
func TestAttachUplinkVLANOffload(t *testing.T) {
	netnstest.RequirePrivileged(t)
	ns := netnstest.New(t, "gct-vof")
	peer := netnstest.New(t, "gct-vofp")
	if err := netnstest.Veth(ns, "up0", peer, "pup0"); err != nil {
		t.Fatal(err)
	}
	// A namespace no name and no process holds: only this test's handle keeps it alive.
	var hidden netns.NsHandle
	if err := ns.Do(func() error {
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		if hidden, err = netns.New(); err != nil {
			return err
		}
		return netns.Set(orig)
	}); err != nil {
		t.Fatal(err)
	}
	defer hidden.Close()
	if err := ns.Netlink().LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up9"}, PeerName: "hid0", PeerNamespace: netlink.NsFd(int(hidden))}); err != nil {
		t.Fatal(err)
	}
	features := func(n *netnstest.NS, ifname string) string {
		t.Helper()
		return n.MustRun(t, "ethtool", "-k", ifname)
	}
	netnstest.RequireTool(t, "ethtool")
	var dp *Dataplane
	if err := ns.Do(func() (err error) {
		dp, err = Load(Options{ConnTableSize: 1024, NATTableSize: 1024, TableSize: 251})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	if err := ns.Do(func() error { return dp.AttachUplink("up0") }); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ns.Do(dp.DetachUplink) }()
	for _, c := range []struct {
		n       *netnstest.NS
		ifname  string
		feature string
	}{{ns, "up0", "rx-vlan-offload: off"}, {ns, "up0", "rx-vlan-stag-hw-parse: off"}, {peer, "pup0", "tx-vlan-offload: off"}, {peer, "pup0", "tx-vlan-stag-hw-insert: off"}} {
		if f := features(c.n, c.ifname); !strings.Contains(f, c.feature) {
			t.Errorf("%s after AttachUplink: want %q in\n%s", c.ifname, c.feature, f)
		}
	}
	if got, want := dp.UplinkVLAN(), "vlan tags in the frame (rx-vlan-hw-parse, rx-vlan-stag-hw-parse off on up0; tx-vlan-hw-insert, tx-vlan-stag-hw-insert off on veth peer pup0)"; got != want {
		t.Errorf("UplinkVLAN() = %q, want %q", got, want)
	}
	// Moving to the veth whose peer cannot be found is refused; nothing is attached there.
	err := ns.Do(func() error { return dp.AttachUplink("up9") })
	if !errors.Is(err, ErrVLANTagsHidden) {
		t.Fatalf("attaching to up9 (peer in an unreachable namespace): %v, want ErrVLANTagsHidden", err)
	}
	l, lerr := ns.Netlink().LinkByName("up9")
	if lerr != nil {
		t.Fatal(lerr)
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		t.Fatal("xdp attached to up9 although its peer's tags could be hidden")
	}
	if dp.UplinkVLAN() != "" {
		t.Fatalf("UplinkVLAN() = %q after a refused attach", dp.UplinkVLAN())
	}
}
