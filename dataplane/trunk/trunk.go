// Package trunk loads and programs the eBPF 802.1Q trunk (bpf/trunk): which VLAN belongs to
// which segment-side port, where the uplink is, and the per-department counters. Maps and
// links are pinned under a bpffs directory so an agent restart keeps forwarding and counting.
//
// The package does not switch network namespaces: attach calls resolve interface indexes in
// the calling thread's namespace, so callers that manage another namespace call them from a
// thread inside it.
package trunk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/govcloud/govcloud/dataplane/bpfobj"
)

// DefaultPinPath is where production agents pin the trunk's maps and links.
const DefaultPinPath = "/sys/fs/bpf/govcloud/trunk"

// MaxVLAN is the highest usable VLAN id.
const MaxVLAN = 4094

// Direction of counted traffic, as seen from the segment.
type Direction uint32

const (
	RX Direction = 0 // arrived from the trunk into the segment
	TX Direction = 1 // left the segment onto the trunk
)

func (d Direction) String() string {
	switch d {
	case RX:
		return "rx"
	case TX:
		return "tx"
	}
	return fmt.Sprintf("dir%d", uint32(d))
}

// DropReason says why the trunk dropped a frame (mirrors TRUNK_DROP_* in trunk_consts.h).
type DropReason uint32

const (
	DropUnknownVLAN DropReason = 1
	DropDoubleTag   DropReason = 2
	DropWrongVLAN   DropReason = 3
	DropGatewayND   DropReason = 4
	DropNoPort      DropReason = 5
	DropMalformed   DropReason = 6
	DropNoUplink    DropReason = 7
	DropRateLimit   DropReason = 8 // a guest port's department is over its bandwidth limit
)

func (r DropReason) String() string {
	switch r {
	case DropUnknownVLAN:
		return "unknown_vlan"
	case DropDoubleTag:
		return "double_tag"
	case DropWrongVLAN:
		return "wrong_vlan"
	case DropGatewayND:
		return "gateway_nd"
	case DropNoPort:
		return "no_port"
	case DropMalformed:
		return "malformed"
	case DropNoUplink:
		return "no_uplink"
	case DropRateLimit:
		return "rate_limit"
	}
	return fmt.Sprintf("reason%d", uint32(r))
}

// Segment is one VLAN mapping on this host.
type Segment struct {
	VLAN       uint16
	Ifindex    int    // segment-side trunk port
	Department uint32 // department id (counter label)
	ID         uint32 // segment id (counter label)
	Gateway4   netip.Addr
	Gateway6   netip.Addr
}

// Counter is a packet and byte count summed over all CPUs.
type Counter struct {
	Packets uint64
	Bytes   uint64
}

// StatKey names one traffic counter.
type StatKey struct {
	Department uint32
	Segment    uint32
	Direction  Direction
}

// DropKey names one drop counter. Department and Segment are 0 when the frame could not be
// attributed (unknown VLAN, double tag on the uplink).
type DropKey struct {
	Department uint32
	Segment    uint32
	Reason     DropReason
}

// Trunk is the loaded program pair and its pinned maps.
type Trunk struct {
	objs    bpfobj.TrunkObjects
	pinPath string
}

// Load loads the trunk programs, reusing maps already pinned under pinPath (creating and
// pinning them otherwise). pinPath must be on a bpffs mount; "" means DefaultPinPath.
func Load(pinPath string) (*Trunk, error) {
	if pinPath == "" {
		pinPath = DefaultPinPath
	}
	if err := os.MkdirAll(filepath.Join(pinPath, "links"), 0o700); err != nil {
		return nil, fmt.Errorf("trunk pin path %s: %w", pinPath, err)
	}
	t := &Trunk{pinPath: pinPath}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pinPath}}
	err := bpfobj.LoadTrunkObjects(&t.objs, opts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// Pinned by an agent whose maps had another layout (an upgrade): the old maps cannot
		// serve the new program. Start them afresh (counters restart from zero).
		for _, name := range []string{bpfobj.TrunkMapTrunkSegments, bpfobj.TrunkMapTrunkPorts, bpfobj.TrunkMapTrunkCfg, bpfobj.TrunkMapTrunkStats, bpfobj.TrunkMapTrunkDrops,
			bpfobj.TrunkMapTrunkGuests, bpfobj.TrunkMapTrunkRates, bpfobj.TrunkMapTrunkBuckets} {
			_ = os.Remove(filepath.Join(pinPath, name))
		}
		err = bpfobj.LoadTrunkObjects(&t.objs, opts)
	}
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("loading trunk programs: %+v", verr)
		}
		return nil, fmt.Errorf("loading trunk programs (pin path %s): %w", pinPath, err)
	}
	return t, nil
}

// PinPath is the bpffs directory holding this trunk's maps and links.
func (t *Trunk) PinPath() string { return t.pinPath }

// FromSegment is the program for segment-side ports (tag and redirect to the uplink).
func (t *Trunk) FromSegment() *ebpf.Program { return t.objs.TrunkFromSegment }

// FromUplink is the program for the uplink (untag and redirect to the segment).
func (t *Trunk) FromUplink() *ebpf.Program { return t.objs.TrunkFromUplink }

// Close releases this process's handles; pinned maps and links stay and keep forwarding.
func (t *Trunk) Close() error { return t.objs.Close() }

// Unpin removes every pinned map and link (the links detach). Call Close as well.
func (t *Trunk) Unpin() error {
	var errs []error
	for _, m := range []*ebpf.Map{t.objs.TrunkSegments, t.objs.TrunkPorts, t.objs.TrunkCfg, t.objs.TrunkStats, t.objs.TrunkDrops,
		t.objs.TrunkGuests, t.objs.TrunkRates, t.objs.TrunkBuckets} {
		if err := m.Unpin(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(filepath.Join(t.pinPath, "links")); err != nil {
		errs = append(errs, err)
	}
	if err := os.Remove(t.pinPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Uplink returns the configured uplink ifindex (0: none).
func (t *Trunk) Uplink() (int, error) {
	var cfg bpfobj.TrunkTrunkConfig
	if err := t.objs.TrunkCfg.Lookup(uint32(0), &cfg); err != nil {
		return 0, fmt.Errorf("reading trunk config: %w", err)
	}
	return int(cfg.UplinkIfindex), nil
}

// SetUplink sets the interface tagged frames leave through.
func (t *Trunk) SetUplink(ifindex int) error {
	cfg := bpfobj.TrunkTrunkConfig{UplinkIfindex: uint32(ifindex)}
	if err := t.objs.TrunkCfg.Put(uint32(0), &cfg); err != nil {
		return fmt.Errorf("setting trunk uplink ifindex %d: %w", ifindex, err)
	}
	return nil
}

func encodeSegment(s Segment) (bpfobj.TrunkTrunkSegment, error) {
	v := bpfobj.TrunkTrunkSegment{
		Ifindex: uint32(s.Ifindex),
		DeptId:  s.Department,
		SegId:   s.ID,
		Vlan:    s.VLAN,
	}
	if s.Gateway4.IsValid() {
		if !s.Gateway4.Is4() {
			return v, fmt.Errorf("segment vlan %d: gateway4 %s is not IPv4", s.VLAN, s.Gateway4)
		}
		b := s.Gateway4.As4()
		v.Gw4 = binary.NativeEndian.Uint32(b[:]) // keep network byte order in memory
		v.Flags |= 1
	}
	if s.Gateway6.IsValid() {
		if !s.Gateway6.Is6() || s.Gateway6.Is4In6() {
			return v, fmt.Errorf("segment vlan %d: gateway6 %s is not IPv6", s.VLAN, s.Gateway6)
		}
		v.Gw6 = s.Gateway6.As16()
		v.Flags |= 2
	}
	return v, nil
}

func decodeSegment(v bpfobj.TrunkTrunkSegment) Segment {
	s := Segment{VLAN: v.Vlan, Ifindex: int(v.Ifindex), Department: v.DeptId, ID: v.SegId}
	if v.Flags&1 != 0 {
		var b [4]byte
		binary.NativeEndian.PutUint32(b[:], v.Gw4)
		s.Gateway4 = netip.AddrFrom4(b)
	}
	if v.Flags&2 != 0 {
		s.Gateway6 = netip.AddrFrom16(v.Gw6)
	}
	return s
}

// SetSegment maps s.VLAN to its port and labels. It replaces an earlier mapping of the VLAN
// (and of the port).
func (t *Trunk) SetSegment(s Segment) error {
	if s.VLAN == 0 || s.VLAN > MaxVLAN {
		return fmt.Errorf("segment vlan %d: out of range 1-%d", s.VLAN, MaxVLAN)
	}
	if s.Ifindex <= 0 {
		return fmt.Errorf("segment vlan %d: bad port ifindex %d", s.VLAN, s.Ifindex)
	}
	v, err := encodeSegment(s)
	if err != nil {
		return err
	}
	// Segment first: a port whose VLAN does not point back at it drops (no_port), never leaks.
	if err := t.objs.TrunkSegments.Put(uint32(s.VLAN), &v); err != nil {
		return fmt.Errorf("segment vlan %d: writing segment: %w", s.VLAN, err)
	}
	if err := t.objs.TrunkPorts.Put(uint32(s.Ifindex), &bpfobj.TrunkTrunkPort{Vlan: uint32(s.VLAN)}); err != nil {
		return fmt.Errorf("segment vlan %d: writing port ifindex %d: %w", s.VLAN, s.Ifindex, err)
	}
	return nil
}

// DeleteSegment removes the VLAN's mapping and its port entry. Missing entries are fine.
func (t *Trunk) DeleteSegment(vlan uint16) error {
	var v bpfobj.TrunkTrunkSegment
	if err := t.objs.TrunkSegments.Lookup(uint32(vlan), &v); err != nil {
		return fmt.Errorf("segment vlan %d: reading: %w", vlan, err)
	}
	if v.Ifindex != 0 {
		var p bpfobj.TrunkTrunkPort
		if err := t.objs.TrunkPorts.Lookup(v.Ifindex, &p); err == nil && p.Vlan == uint32(vlan) {
			if err := t.objs.TrunkPorts.Delete(v.Ifindex); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("segment vlan %d: deleting port %d: %w", vlan, v.Ifindex, err)
			}
		}
	}
	// Array entries cannot be deleted: zero means unused.
	if err := t.objs.TrunkSegments.Put(uint32(vlan), &bpfobj.TrunkTrunkSegment{}); err != nil {
		return fmt.Errorf("segment vlan %d: clearing: %w", vlan, err)
	}
	return nil
}

// Segments reads every VLAN mapping from the kernel.
func (t *Trunk) Segments() (map[uint16]Segment, error) {
	out := make(map[uint16]Segment)
	// The whole array in batches (a few system calls; iterating takes two per VLAN, 8192,
	// and the agent reads it on every pass and every scrape).
	n := int(t.objs.TrunkSegments.MaxEntries())
	keys, vals := make([]uint32, n), make([]bpfobj.TrunkTrunkSegment, n)
	var cursor ebpf.MapBatchCursor
	got := 0
	var err error
	for got < n {
		var c int
		c, err = t.objs.TrunkSegments.BatchLookup(&cursor, keys[got:], vals[got:], nil)
		got += c
		if err != nil {
			break
		}
	}
	if err == nil || errors.Is(err, ebpf.ErrKeyNotExist) {
		for i := range got {
			if vals[i].Ifindex != 0 {
				out[uint16(keys[i])] = decodeSegment(vals[i])
			}
		}
		return out, nil
	}
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return nil, fmt.Errorf("reading trunk segments: %w", err)
	}
	var (
		k uint32
		v bpfobj.TrunkTrunkSegment
	)
	it := t.objs.TrunkSegments.Iterate()
	for it.Next(&k, &v) {
		if v.Ifindex != 0 {
			out[uint16(k)] = decodeSegment(v)
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading trunk segments: %w", err)
	}
	return out, nil
}

// Ports reads the port -> VLAN table from the kernel.
func (t *Trunk) Ports() (map[int]uint16, error) {
	out := make(map[int]uint16)
	var (
		k uint32
		v bpfobj.TrunkTrunkPort
	)
	it := t.objs.TrunkPorts.Iterate()
	for it.Next(&k, &v) {
		out[int(k)] = uint16(v.Vlan)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading trunk ports: %w", err)
	}
	return out, nil
}

// DeletePort removes one port entry (a stale port whose segment is gone).
func (t *Trunk) DeletePort(ifindex int) error {
	if err := t.objs.TrunkPorts.Delete(uint32(ifindex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("deleting trunk port %d: %w", ifindex, err)
	}
	return nil
}

func sum(vals []bpfobj.TrunkTrunkCounter) Counter {
	var c Counter
	for _, v := range vals {
		c.Packets += v.Packets
		c.Bytes += v.Bytes
	}
	return c
}

// Stats returns every traffic counter, summed over CPUs.
func (t *Trunk) Stats() (map[StatKey]Counter, error) {
	return readPerCPU(t.objs.TrunkStats, "trunk stats", func(k bpfobj.TrunkTrunkStatKey) StatKey {
		return StatKey{Department: k.DeptId, Segment: k.SegId, Direction: Direction(k.Dir)}
	})
}

// Drops returns every drop counter, summed over CPUs.
func (t *Trunk) Drops() (map[DropKey]Counter, error) {
	return readPerCPU(t.objs.TrunkDrops, "trunk drops", func(k bpfobj.TrunkTrunkDropKey) DropKey {
		return DropKey{Department: k.DeptId, Segment: k.SegId, Reason: DropReason(k.Reason)}
	})
}

// readPerCPU reads a whole per-CPU counter map, each entry summed over CPUs, keyed by key(k).
func readPerCPU[K any, G comparable](m *ebpf.Map, what string, key func(K) G) (map[G]Counter, error) {
	out := make(map[G]Counter)
	var (
		k    K
		vals []bpfobj.TrunkTrunkCounter
	)
	it := m.Iterate()
	for it.Next(&k, &vals) {
		out[key(k)] = sum(vals)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", what, err)
	}
	return out, nil
}

// DropsByReason sums Drops over departments and segments.
func DropsByReason(d map[DropKey]Counter) map[DropReason]Counter {
	out := make(map[DropReason]Counter)
	for k, c := range d {
		s := out[k.Reason]
		s.Packets += c.Packets
		s.Bytes += c.Bytes
		out[k.Reason] = s
	}
	return out
}

// Role says which program an attachment runs.
type Role string

const (
	RoleUplink  Role = "uplink"
	RoleSegment Role = "segment"
	// RoleGuestTX and RoleGuestRX police a guest port: TCX ingress (what the guest sends)
	// and egress (what it receives).
	RoleGuestTX Role = "guesttx"
	RoleGuestRX Role = "guestrx"
)

// program is the role's program and TCX attach point.
func (t *Trunk) program(role Role) (*ebpf.Program, ebpf.AttachType) {
	switch role {
	case RoleUplink:
		return t.objs.TrunkFromUplink, ebpf.AttachTCXIngress
	case RoleGuestTX:
		return t.objs.GuestTx, ebpf.AttachTCXIngress
	case RoleGuestRX:
		return t.objs.GuestRx, ebpf.AttachTCXEgress
	}
	return t.objs.TrunkFromSegment, ebpf.AttachTCXIngress
}

func (t *Trunk) linkPin(role Role, name string) string {
	return filepath.Join(t.pinPath, "links", string(role)+"_"+name)
}

// Attach puts the role's program on ifindex's TCX hook (egress for RoleGuestRX, else ingress) and pins the link as
// role_name, where name identifies the interface (its name). If a pinned link exists, it is
// re-pointed at this process's program instead (an agent restart never detaches).
func (t *Trunk) Attach(role Role, name string, ifindex int) error {
	prog, where := t.program(role)
	pin := t.linkPin(role, name)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		info, ierr := l.Info()
		tcx := (*link.TCXInfo)(nil)
		if ierr == nil {
			tcx = info.TCX()
		}
		if tcx != nil && int(tcx.Ifindex) == ifindex {
			uerr := l.Update(prog)
			l.Close()
			if uerr != nil {
				return fmt.Errorf("updating %s link on %s: %w", role, name, uerr)
			}
			return nil
		}
		// Pinned for another (deleted and re-created) interface: replace it.
		_ = l.Unpin()
		l.Close()
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: where})
	if err != nil {
		return fmt.Errorf("attaching %s program to %s (ifindex %d): %w", role, name, ifindex, err)
	}
	defer l.Close()
	if err := l.Pin(pin); err != nil {
		return fmt.Errorf("pinning %s link of %s at %s: %w", role, name, pin, err)
	}
	return nil
}

// Attached lists the pinned attachments as role -> interface names.
func (t *Trunk) Attached() (map[Role][]string, error) {
	ents, err := os.ReadDir(filepath.Join(t.pinPath, "links"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return map[Role][]string{}, nil
		}
		return nil, fmt.Errorf("listing trunk links: %w", err)
	}
	out := make(map[Role][]string)
	for _, e := range ents {
		role, name, ok := strings.Cut(e.Name(), "_")
		if !ok {
			continue
		}
		out[Role(role)] = append(out[Role(role)], name)
	}
	return out, nil
}

// AttachedIfindex returns the interface a pinned attachment is on (0 when it is defunct
// because its interface went away), or an error if there is no such pin.
func (t *Trunk) AttachedIfindex(role Role, name string) (int, error) {
	l, err := link.LoadPinnedLink(t.linkPin(role, name), nil)
	if err != nil {
		return 0, err
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return 0, fmt.Errorf("link info of %s %s: %w", role, name, err)
	}
	if tcx := info.TCX(); tcx != nil {
		return int(tcx.Ifindex), nil
	}
	return 0, nil
}

// Detach removes a pinned attachment (the program leaves the interface).
func (t *Trunk) Detach(role Role, name string) error {
	pin := t.linkPin(role, name)
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		// Unreadable pin: remove the file so the kernel drops the link.
		if rerr := os.Remove(pin); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return fmt.Errorf("removing %s link pin of %s: %w", role, name, rerr)
		}
		return nil
	}
	defer l.Close()
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpinning %s link of %s: %w", role, name, err)
	}
	// A TCX link detaches when its last reference (pin and fds) goes.
	return nil
}
