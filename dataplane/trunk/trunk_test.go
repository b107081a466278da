package trunk_test

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/dataplane/trunk"
	tt "github.com/govcloud/govcloud/dataplane/trunk/trunktest"
)

// TC verdicts as prog.Run returns them.
const (
	actNext     = 0xffffffff // TC_ACT_UNSPEC / TCX_NEXT
	actShot     = 2
	actRedirect = 7
)

var (
	guestA = tt.MAC("02:00:00:00:00:0a")
	guestB = tt.MAC("02:00:00:00:00:0b")
	ipA    = netip.MustParseAddr("198.18.20.10")
	ipB    = netip.MustParseAddr("198.18.20.11")
	gw4    = netip.MustParseAddr("198.18.20.1")
	gw6    = netip.MustParseAddr("2001:db8:20::1")
	ip6A   = netip.MustParseAddr("2001:db8:20::a")
)

// skbCtx is the settable prefix of struct __sk_buff up to ifindex.
type skbCtx struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto, Priority, IngressIfindex, Ifindex uint32
}

func load(t *testing.T) *trunk.Trunk {
	t.Helper()
	netnstest.RequirePrivileged(t)
	tr, err := trunk.Load(filepath.Join(tt.BPFFS(t), "trunk"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func run(t *testing.T, prog *ebpf.Program, ifindex uint32, in []byte) (uint32, []byte) {
	t.Helper()
	out := make([]byte, len(in)+64)
	opts := &ebpf.RunOptions{Data: in, DataOut: out, Context: skbCtx{Ifindex: ifindex}}
	ret, err := prog.Run(opts)
	if err != nil {
		t.Fatalf("prog.Run: %v", err)
	}
	return ret, opts.DataOut
}

func TestProgRun(t *testing.T) {
	tr := load(t)
	// Loopback (ifindex 1) stands in for the segment-side port: prog.Run only accepts
	// interfaces that exist, and lo always does.
	const port = 1
	if err := tr.SetUplink(7); err != nil {
		t.Fatal(err)
	}
	if err := tr.SetSegment(trunk.Segment{VLAN: 120, Ifindex: port, Department: 3, ID: 20, Gateway4: gw4, Gateway6: gw6}); err != nil {
		t.Fatal(err)
	}
	// VLAN 130 points at another port: lo must not be able to send into it.
	if err := tr.SetSegment(trunk.Segment{VLAN: 130, Ifindex: 99, Department: 4, ID: 30}); err != nil {
		t.Fatal(err)
	}

	udp := tt.Pad(tt.UDPFrame(guestB, guestA, ipA, ipB, 4000, 5000, []byte("hello trunk")), 60)
	arpGW := tt.ARP(tt.ARPRequest, guestA, ipA, nil, gw4)
	arpB := tt.ARP(tt.ARPRequest, guestA, ipA, nil, ipB)
	nsGW := tt.NeighborSolicit(guestA, ip6A, gw6)

	tests := []struct {
		name    string
		uplink  bool // run trunk_from_uplink, else trunk_from_segment
		in      []byte
		verdict uint32
		out     []byte // nil: output equals input
		drop    trunk.DropReason
	}{
		// Segment -> trunk. The pushed tag lives in skb metadata (bpf_skb_vlan_push), so the
		// data is unchanged here; TestWire sees the tag on the wire.
		{name: "push: untagged from segment is tagged and redirected", in: udp, verdict: actRedirect},
		{name: "push: ARP for another guest goes out", in: arpB, verdict: actRedirect},
		{name: "segment: ARP for the gateway stays home", in: arpGW, verdict: actShot, drop: trunk.DropGatewayND},
		{name: "segment: NS for the IPv6 gateway stays home", in: nsGW, verdict: actShot, drop: trunk.DropGatewayND},
		{name: "segment: tagged frame from an access port (own VLAN)", in: tt.Tag(udp, tt.Ether8021Q, 120), verdict: actShot, drop: trunk.DropWrongVLAN},
		{name: "segment: tagged frame from an access port (other VLAN)", in: tt.Tag(udp, tt.Ether8021Q, 130), verdict: actShot, drop: trunk.DropWrongVLAN},
		{name: "segment: double tag", in: tt.Tag(tt.Tag(udp, tt.Ether8021Q, 130), tt.Ether8021Q, 120), verdict: actShot, drop: trunk.DropDoubleTag},
		// Tag classification agrees with xdp_lb and Linux: a priority tag (VID 0, any PCP, either
		// TPID) is untagged traffic; 802.1ad is a tag like 802.1Q; a tag behind any tag is QinQ.
		{name: "segment: priority tag (802.1Q VID 0) is untagged traffic", in: tt.Tag(udp, tt.Ether8021Q, 0), verdict: actRedirect, out: udp},
		{name: "segment: priority tag with PCP 5 and DEI", in: tt.TagTCI(udp, tt.Ether8021Q, 5<<13|1<<12), verdict: actRedirect, out: udp},
		{name: "segment: priority tag 802.1ad VID 0", in: tt.Tag(udp, tt.Ether8021AD, 0), verdict: actRedirect, out: udp},
		{name: "segment: 802.1ad tag from an access port", in: tt.Tag(udp, tt.Ether8021AD, 120), verdict: actShot, drop: trunk.DropWrongVLAN},
		{name: "segment: priority tag over a VLAN tag is QinQ", in: tt.Tag(tt.Tag(udp, tt.Ether8021Q, 120), tt.Ether8021Q, 0), verdict: actShot, drop: trunk.DropDoubleTag},

		// Trunk -> segment: in-band tags are popped from the data.
		{name: "pop: tagged VLAN 120 delivered untagged", uplink: true, in: tt.Tag(udp, tt.Ether8021Q, 120), verdict: actRedirect, out: udp},
		{name: "pop: ARP between guests delivered", uplink: true, in: tt.Tag(arpB, tt.Ether8021Q, 120), verdict: actRedirect, out: arpB},
		{name: "uplink: untagged is the host's own traffic", uplink: true, in: udp, verdict: actNext},
		{name: "uplink: unknown VLAN", uplink: true, in: tt.Tag(udp, tt.Ether8021Q, 999), verdict: actShot, drop: trunk.DropUnknownVLAN},
		{name: "uplink: priority tag (802.1Q VID 0) is the host's untagged traffic", uplink: true, in: tt.Tag(udp, tt.Ether8021Q, 0), verdict: actNext, out: udp},
		{name: "uplink: priority tag with PCP 7", uplink: true, in: tt.TagTCI(udp, tt.Ether8021Q, 7<<13), verdict: actNext, out: udp},
		{name: "uplink: priority tag 802.1ad VID 0", uplink: true, in: tt.Tag(udp, tt.Ether8021AD, 0), verdict: actNext, out: udp},
		{name: "uplink: VLAN 120 with PCP 3 and DEI set", uplink: true, in: tt.TagTCI(udp, tt.Ether8021Q, 3<<13|1<<12|120), verdict: actRedirect, out: udp},
		{name: "uplink: VID 4095 (reserved) is unknown", uplink: true, in: tt.Tag(udp, tt.Ether8021Q, 4095), verdict: actShot, drop: trunk.DropUnknownVLAN},
		{name: "uplink: priority tag over VLAN 120 is QinQ", uplink: true, in: tt.Tag(tt.Tag(udp, tt.Ether8021Q, 120), tt.Ether8021Q, 0), verdict: actShot, drop: trunk.DropDoubleTag},
		{name: "uplink: 802.1ad in 802.1ad", uplink: true, in: tt.Tag(tt.Tag(udp, tt.Ether8021AD, 120), tt.Ether8021AD, 120), verdict: actShot, drop: trunk.DropDoubleTag},
		{name: "uplink: double tag 802.1Q in 802.1Q", uplink: true, in: tt.Tag(tt.Tag(udp, tt.Ether8021Q, 130), tt.Ether8021Q, 120), verdict: actShot, drop: trunk.DropDoubleTag},
		{name: "uplink: double tag 802.1ad outer", uplink: true, in: tt.Tag(tt.Tag(udp, tt.Ether8021Q, 120), tt.Ether8021AD, 120), verdict: actShot, drop: trunk.DropDoubleTag},
		{name: "uplink: single 802.1ad tag is VLAN 120 like 802.1Q", uplink: true, in: tt.Tag(udp, tt.Ether8021AD, 120), verdict: actRedirect, out: udp},
		{name: "uplink: single 802.1ad tag, unknown VLAN", uplink: true, in: tt.Tag(udp, tt.Ether8021AD, 999), verdict: actShot, drop: trunk.DropUnknownVLAN},
		{name: "uplink: gateway ARP from another host", uplink: true, in: tt.Tag(arpGW, tt.Ether8021Q, 120), verdict: actShot, out: arpGW, drop: trunk.DropGatewayND},
		{name: "uplink: truncated tag", uplink: true, in: tt.Tag(udp, tt.Ether8021Q, 120)[:16], verdict: actShot, drop: trunk.DropMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, err := tr.Drops()
			if err != nil {
				t.Fatal(err)
			}
			prog := tr.FromSegment()
			if tc.uplink {
				prog = tr.FromUplink()
			}
			ret, out := run(t, prog, port, tc.in)
			if ret != tc.verdict {
				t.Fatalf("verdict = %#x, want %#x", ret, tc.verdict)
			}
			want := tc.out
			if want == nil {
				want = tc.in
			}
			if !bytes.Equal(out, want) {
				t.Fatalf("output frame\n got %s\nwant %s", hex.EncodeToString(out), hex.EncodeToString(want))
			}
			after, err := tr.Drops()
			if err != nil {
				t.Fatal(err)
			}
			b, a := trunk.DropsByReason(before), trunk.DropsByReason(after)
			for r := trunk.DropReason(1); r <= trunk.DropNoUplink; r++ {
				d := a[r].Packets - b[r].Packets
				want := uint64(0)
				if r == tc.drop {
					want = 1
				}
				if d != want {
					t.Errorf("drops[%s] moved by %d, want %d", r, d, want)
				}
			}
		})
	}

	// The port whose VLAN points elsewhere: VLAN 130's entry names ifindex 99, so a port
	// entry claiming 130 for lo must not let lo send into VLAN 130.
	if err := tr.SetSegment(trunk.Segment{VLAN: 130, Ifindex: port, Department: 4, ID: 30}); err != nil {
		t.Fatal(err)
	}
	if err := tr.SetSegment(trunk.Segment{VLAN: 131, Ifindex: 99, Department: 4, ID: 31}); err != nil {
		t.Fatal(err)
	}
	if err := tr.SetSegment(trunk.Segment{VLAN: 130, Ifindex: 98, Department: 4, ID: 30}); err != nil {
		t.Fatal(err)
	}
	// lo's port entry still says 130, but segment 130 now belongs to ifindex 98.
	if ret, _ := run(t, tr.FromSegment(), port, udp); ret != actShot {
		t.Fatalf("stale port: verdict %#x, want shot", ret)
	}
	d, _ := tr.Drops()
	if got := d[trunk.DropKey{Reason: trunk.DropNoPort}].Packets; got != 1 {
		t.Fatalf("no_port drops = %d, want 1", got)
	}
}

// TestCountersExact sends N frames of known sizes each way and checks packets and bytes.
func TestCountersExact(t *testing.T) {
	tr := load(t)
	if err := tr.SetUplink(7); err != nil {
		t.Fatal(err)
	}
	if err := tr.SetSegment(trunk.Segment{VLAN: 120, Ifindex: 1, Department: 3, ID: 20}); err != nil {
		t.Fatal(err)
	}
	const n = 37
	tx := tt.Pad(tt.UDPFrame(guestB, guestA, ipA, ipB, 1, 2, nil), 100)
	rx := tt.Pad(tt.UDPFrame(guestA, guestB, ipB, ipA, 2, 1, nil), 300)
	for i := 0; i < n; i++ {
		if ret, _ := run(t, tr.FromSegment(), 1, tx); ret != actRedirect {
			t.Fatalf("tx verdict %#x", ret)
		}
		if ret, _ := run(t, tr.FromUplink(), 1, tt.Tag(rx, tt.Ether8021Q, 120)); ret != actRedirect {
			t.Fatalf("rx verdict %#x", ret)
		}
	}
	// Unknown VLAN drops count the untagged size too.
	for i := 0; i < 5; i++ {
		run(t, tr.FromUplink(), 1, tt.Tag(rx, tt.Ether8021Q, 500))
	}
	st, err := tr.Stats()
	if err != nil {
		t.Fatal(err)
	}
	want := map[trunk.StatKey]trunk.Counter{
		{Department: 3, Segment: 20, Direction: trunk.TX}: {Packets: n, Bytes: n * 100},
		{Department: 3, Segment: 20, Direction: trunk.RX}: {Packets: n, Bytes: n * 300},
	}
	for k, w := range want {
		if st[k] != w {
			t.Errorf("stats[%+v] = %+v, want %+v", k, st[k], w)
		}
	}
	if len(st) != len(want) {
		t.Errorf("stats has %d rows, want %d: %+v", len(st), len(want), st)
	}
	d, err := tr.Drops()
	if err != nil {
		t.Fatal(err)
	}
	if got, w := d[trunk.DropKey{Reason: trunk.DropUnknownVLAN}], (trunk.Counter{Packets: 5, Bytes: 5 * 300}); got != w {
		t.Errorf("unknown_vlan drops = %+v, want %+v", got, w)
	}
}

// TestPinnedReuse checks that counters and mappings survive a reload (an agent restart).
func TestPinnedReuse(t *testing.T) {
	netnstest.RequirePrivileged(t)
	dir := filepath.Join(tt.BPFFS(t), "trunk")
	tr, err := trunk.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.SetSegment(trunk.Segment{VLAN: 120, Ifindex: 1, Department: 3, ID: 20, Gateway4: gw4}); err != nil {
		t.Fatal(err)
	}
	if err := tr.SetUplink(7); err != nil {
		t.Fatal(err)
	}
	run(t, tr.FromSegment(), 1, tt.Pad(tt.UDPFrame(guestB, guestA, ipA, ipB, 1, 2, nil), 80))
	tr.Close()

	tr2, err := trunk.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer tr2.Close()
	segs, err := tr2.Segments()
	if err != nil {
		t.Fatal(err)
	}
	if s := segs[120]; s.Ifindex != 1 || s.Department != 3 || s.ID != 20 || s.Gateway4 != gw4 || s.Gateway6.IsValid() {
		t.Fatalf("segment after reload = %+v", s)
	}
	st, _ := tr2.Stats()
	if c := st[trunk.StatKey{Department: 3, Segment: 20, Direction: trunk.TX}]; c != (trunk.Counter{Packets: 1, Bytes: 80}) {
		t.Fatalf("tx counter after reload = %+v", c)
	}
	if err := tr2.DeleteSegment(120); err != nil {
		t.Fatal(err)
	}
	segs, _ = tr2.Segments()
	ports, _ := tr2.Ports()
	if len(segs) != 0 || len(ports) != 0 {
		t.Fatalf("after delete: segments %v ports %v", segs, ports)
	}
	if err := tr2.Unpin(); err != nil {
		t.Fatal(err)
	}
}

// TestIncompatiblePin replaces a pinned map made by an agent with another layout.
func TestIncompatiblePin(t *testing.T) {
	netnstest.RequirePrivileged(t)
	dir := filepath.Join(tt.BPFFS(t), "trunk")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	old, err := ebpf.NewMap(&ebpf.MapSpec{Name: "trunk_segments", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 16})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Pin(filepath.Join(dir, "trunk_segments")); err != nil {
		t.Fatal(err)
	}
	old.Close()
	tr, err := trunk.Load(dir)
	if err != nil {
		t.Fatalf("load over an incompatible pin: %v", err)
	}
	defer tr.Close()
	if err := tr.SetSegment(trunk.Segment{VLAN: 4094, Ifindex: 1}); err != nil {
		t.Fatal(err)
	}
}

// TestSegmentsReadBack: Segments returns exactly the segments set, from VLAN 1 to 4094 (the
// first and last a segment may have), each with its own values (the array is read in
// batches).
func TestSegmentsReadBack(t *testing.T) {
	netnstest.RequirePrivileged(t)
	tr, err := trunk.Load(filepath.Join(tt.BPFFS(t), "trunk"))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	want := map[uint16]trunk.Segment{}
	for i, vlan := range []uint16{1, 2, 100, 2047, 2048, 4093, 4094} {
		s := trunk.Segment{VLAN: vlan, Ifindex: 10 + i, Department: uint32(1 + i), ID: uint32(100 + i), Gateway4: gw4}
		if err := tr.SetSegment(s); err != nil {
			t.Fatalf("VLAN %d: %v", vlan, err)
		}
		want[vlan] = s
	}
	got, err := tr.Segments()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d segments read back, want %d: %v", len(got), len(want), got)
	}
	for vlan, s := range want {
		if g := got[vlan]; g.Ifindex != s.Ifindex || g.Department != s.Department || g.ID != s.ID || g.Gateway4 != gw4 {
			t.Errorf("VLAN %d: %+v, want %+v", vlan, g, s)
		}
	}
	if err := tr.Unpin(); err != nil {
		t.Fatal(err)
	}
}
