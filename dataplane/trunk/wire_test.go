package trunk_test

import (
	"bytes"
	"encoding/hex"
	"path/filepath"
	"testing"
	"time"

	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/dataplane/trunk"
	tt "github.com/govcloud/govcloud/dataplane/trunk/trunktest"
)

// TestWire runs the programs on real veths: on receive the kernel moves a single tag into
// skb metadata before TC, so this covers the metadata path that prog.Run cannot, and shows
// the pushed tag on the wire.
func TestWire(t *testing.T) {
	netnstest.RequirePrivileged(t)
	host := netnstest.New(t, "gct-th")
	tor := netnstest.New(t, "gct-tt")
	// No IPv6 on these links: the kernel's own router solicitations would add to the counters.
	for _, ns := range []*netnstest.NS{host, tor} {
		ns.MustRun(t, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	if err := netnstest.Veth(host, "up0", tor, "tor0"); err != nil {
		t.Fatal(err)
	}
	if err := netnstest.Veth(host, "tp120", host, "tb120"); err != nil {
		t.Fatal(err)
	}
	tr, err := trunk.Load(filepath.Join(tt.BPFFS(t), "trunk"))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	up, _ := host.Netlink().LinkByName("up0")
	tp, _ := host.Netlink().LinkByName("tp120")
	if err := tr.SetUplink(up.Attrs().Index); err != nil {
		t.Fatal(err)
	}
	if err := tr.SetSegment(trunk.Segment{VLAN: 120, Ifindex: tp.Attrs().Index, Department: 3, ID: 20, Gateway4: gw4}); err != nil {
		t.Fatal(err)
	}
	var guestSock, torSock *tt.Sock
	if err := host.Do(func() error {
		if err := tr.Attach(trunk.RoleUplink, "up0", up.Attrs().Index); err != nil {
			return err
		}
		if err := tr.Attach(trunk.RoleSegment, "tp120", tp.Attrs().Index); err != nil {
			return err
		}
		guestSock, err = tt.Open("tb120")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer guestSock.Close()
	if err := tor.Do(func() error { torSock, err = tt.Open("tor0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer torSock.Close()

	frame := func(marker string) []byte {
		return tt.Pad(tt.UDPFrame(guestB, guestA, ipA, ipB, 4000, 5000, []byte(marker)), 60)
	}
	expect := func(s *tt.Sock, want []byte) {
		t.Helper()
		got, err := s.Capture(300 * time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range got {
			if !f.Outgoing && bytes.Equal(f.Data, want) {
				return
			}
		}
		var seen []string
		for _, f := range got {
			seen = append(seen, hex.EncodeToString(f.Data))
		}
		t.Fatalf("frame %s did not arrive; saw %v", hex.EncodeToString(want), seen)
	}
	absent := func(s *tt.Sock, marker string) {
		t.Helper()
		got, err := s.Capture(300 * time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if tt.Contains(got, []byte(marker)) {
			t.Fatalf("frame with %q arrived but must not", marker)
		}
	}
	drops := func(r trunk.DropReason) uint64 {
		d, err := tr.Drops()
		if err != nil {
			t.Fatal(err)
		}
		return trunk.DropsByReason(d)[r].Packets
	}

	t.Run("push on the wire", func(t *testing.T) {
		f := frame("push-1")
		if err := guestSock.Send(f); err != nil {
			t.Fatal(err)
		}
		expect(torSock, tt.Tag(f, tt.Ether8021Q, 120))
	})
	t.Run("pop from metadata", func(t *testing.T) {
		f := frame("pop-1")
		if err := torSock.Send(tt.Tag(f, tt.Ether8021Q, 120)); err != nil {
			t.Fatal(err)
		}
		expect(guestSock, f)
	})
	t.Run("802.1ad tag from the trunk (metadata) is VLAN 120 like 802.1Q", func(t *testing.T) {
		f := frame("pop-ad")
		if err := torSock.Send(tt.Tag(f, tt.Ether8021AD, 120)); err != nil {
			t.Fatal(err)
		}
		expect(guestSock, f)
	})
	t.Run("priority tag from the trunk (metadata) is the host's untagged traffic", func(t *testing.T) {
		before, err := tr.Drops()
		if err != nil {
			t.Fatal(err)
		}
		if err := torSock.Send(tt.TagTCI(frame("prio-1"), tt.Ether8021Q, 5<<13)); err != nil {
			t.Fatal(err)
		}
		absent(guestSock, "prio-1")
		after, err := tr.Drops()
		if err != nil {
			t.Fatal(err)
		}
		for r, c := range trunk.DropsByReason(after) {
			if c.Packets != trunk.DropsByReason(before)[r].Packets {
				t.Fatalf("priority-tagged frame counted as a %s drop", r)
			}
		}
	})
	t.Run("double tag from the trunk (outer in metadata)", func(t *testing.T) {
		before := drops(trunk.DropDoubleTag)
		if err := torSock.Send(tt.Tag(tt.Tag(frame("dbl-1"), tt.Ether8021Q, 120), tt.Ether8021Q, 120)); err != nil {
			t.Fatal(err)
		}
		absent(guestSock, "dbl-1")
		if d := drops(trunk.DropDoubleTag) - before; d != 1 {
			t.Fatalf("double_tag drops moved by %d, want 1", d)
		}
	})
	t.Run("unknown VLAN from the trunk", func(t *testing.T) {
		before := drops(trunk.DropUnknownVLAN)
		if err := torSock.Send(tt.Tag(frame("unk-1"), tt.Ether8021Q, 121)); err != nil {
			t.Fatal(err)
		}
		absent(guestSock, "unk-1")
		if d := drops(trunk.DropUnknownVLAN) - before; d != 1 {
			t.Fatalf("unknown_vlan drops moved by %d, want 1", d)
		}
	})
	t.Run("tagged frame from the segment (metadata)", func(t *testing.T) {
		before := drops(trunk.DropWrongVLAN)
		if err := guestSock.Send(tt.Tag(frame("wrong-1"), tt.Ether8021Q, 130)); err != nil {
			t.Fatal(err)
		}
		absent(torSock, "wrong-1")
		if d := drops(trunk.DropWrongVLAN) - before; d != 1 {
			t.Fatalf("wrong_vlan drops moved by %d, want 1", d)
		}
	})
	t.Run("gateway ARP stays on the host", func(t *testing.T) {
		before := drops(trunk.DropGatewayND)
		if err := guestSock.Send(tt.ARP(tt.ARPRequest, guestA, ipA, nil, gw4)); err != nil {
			t.Fatal(err)
		}
		got, _ := torSock.Capture(300 * time.Millisecond)
		for _, f := range got {
			if len(f.Data) > 17 && f.Data[16] == 0x08 && f.Data[17] == 0x06 {
				t.Fatalf("gateway ARP reached the trunk: %x", f.Data)
			}
		}
		if d := drops(trunk.DropGatewayND) - before; d != 1 {
			t.Fatalf("gateway_nd drops moved by %d, want 1", d)
		}
	})
	t.Run("counters are exact on the wire", func(t *testing.T) {
		before, err := tr.Stats()
		if err != nil {
			t.Fatal(err)
		}
		const n = 25
		out := tt.Pad(frame("cnt-tx"), 100)
		in := tt.Pad(frame("cnt-rx"), 200)
		for i := 0; i < n; i++ {
			if err := guestSock.Send(out); err != nil {
				t.Fatal(err)
			}
			if err := torSock.Send(tt.Tag(in, tt.Ether8021Q, 120)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(200 * time.Millisecond)
		after, err := tr.Stats()
		if err != nil {
			t.Fatal(err)
		}
		for dir, size := range map[trunk.Direction]uint64{trunk.TX: 100, trunk.RX: 200} {
			k := trunk.StatKey{Department: 3, Segment: 20, Direction: dir}
			got := trunk.Counter{Packets: after[k].Packets - before[k].Packets, Bytes: after[k].Bytes - before[k].Bytes}
			if want := (trunk.Counter{Packets: n, Bytes: n * size}); got != want {
				t.Errorf("%s moved by %+v, want %+v", dir, got, want)
			}
		}
	})
	t.Run("pinned links survive the loader", func(t *testing.T) {
		att, err := tr.Attached()
		if err != nil {
			t.Fatal(err)
		}
		if len(att[trunk.RoleUplink]) != 1 || len(att[trunk.RoleSegment]) != 1 {
			t.Fatalf("attached = %v", att)
		}
		if idx, err := tr.AttachedIfindex(trunk.RoleSegment, "tp120"); err != nil || idx != tp.Attrs().Index {
			t.Fatalf("tp120 link on ifindex %d (%v), want %d", idx, err, tp.Attrs().Index)
		}
		if err := tr.Detach(trunk.RoleSegment, "tp120"); err != nil {
			t.Fatal(err)
		}
		f := frame("detached-1")
		if err := guestSock.Send(f); err != nil {
			t.Fatal(err)
		}
		absent(torSock, "detached-1")
	})
}
