// Package lbmap loads the XDP load balancer (bpf/lb), pins its maps under bpffs so an agent
// restart keeps flows, tables and counters, attaches it, and programs it from lb's desired
// state: a declarative Set that works out the difference itself and swaps each VIP's whole
// Maglev table in one pointer update.
package lbmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/bits"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/govcloud/govcloud/dataplane/bpfobj"
	"github.com/govcloud/govcloud/lb"
)

// DefaultPinPath is where the agent pins the load balancer's maps and links.
const DefaultPinPath = "/sys/fs/bpf/govcloud/lb"

// Capacities compiled into the object (bpf/lb/lb_consts.h).
const (
	MaxVIPs     = 4096
	MaxBackends = 16384
)

// Options tune Load. Zero values take the defaults.
type Options struct {
	// PinPath pins maps (and links) there; "" pins nothing (tests, benchmarks).
	PinPath string
	// TableSize is the Maglev table size, a prime (default lb.DefaultTableSize).
	TableSize uint32
	// ConnTableSize is the connection-table capacity (default 1<<20 flows).
	ConnTableSize uint32
	// NATTableSize is the nat-mode reverse table capacity (default 1<<18).
	NATTableSize uint32
	Log          *slog.Logger
}

// Encapsulation is how a dsr packet travels to its backend's host (bpf/lb/encap.h). Every
// host decapsulates both kinds in XDP (bpf/lb/decap.h), so hosts may send different ones.
type Encapsulation string

const (
	// EncapGUE (the default) puts the client's packet in UDP to the GUE port, right behind
	// the UDP header (GUE variant 1, direct IP), with a source port hashed from the flow
	// (49152-65535, RFC 8086 §3.2.1): NIC RSS and fabric ECMP spread the flows of one backend
	// host. IPv6 outer headers also carry a flow label hashed from the flow.
	EncapGUE Encapsulation = "gue"
	// EncapIPIP is plain IP in IP (RFC 2003, RFC 2473, RFC 4213): IPIP, 6in4, 4in6, IP6IP6.
	// An IPv4 outer header has only (source, destination, protocol) to spread by.
	EncapIPIP Encapsulation = "ipip"
)

// DefaultGUEPort is the UDP port GUE is sent to and accepted on when Config.GUEPort is 0.
const DefaultGUEPort = 6080

// MinMTU is the smallest Config.MTU accepted: the IPv6 minimum link MTU (RFC 8200 §5).
const MinMTU = 1280

// Config is the host-wide LB configuration.
type Config struct {
	UntaggedDomain uint32     // routing domain of untagged frames (0: public fabric)
	EncapSource4   netip.Addr // outer source of dsr IPv4 tunnels (this host's fabric address)
	EncapSource6   netip.Addr
	SNATSource4    netip.Addr // nat mode source toward backends
	SNATSource6    netip.Addr
	// Encap is the dsr encapsulation sent ("" is EncapGUE).
	Encap Encapsulation
	// GUEPort is the UDP destination port of GUE, sent and decapsulated (0 is
	// DefaultGUEPort). UDP to this port on a tunnel endpoint is the decapsulator's.
	GUEPort uint16
	// MTU caps an encapsulated packet (bytes, L3, MinMTU-65535); 0 leaves only the egress
	// device's MTU. A packet that would not fit is answered with ICMP frag-needed /
	// packet-too-big and counted as drop reason "too_big".
	MTU uint32
}

// Dataplane is a loaded load balancer.
type Dataplane struct {
	mu      sync.Mutex
	objs    bpfobj.LbObjects
	log     *slog.Logger
	pinPath string
	size    uint32
	slots   []uint32 // 0..size-1, keys for batch writes
	state   *lb.State
	vipAddr map[bpfobj.LbVipAddrKey]uint32
	local   map[netip.Addr]bool // this host's tunnel endpoints (SetDecapAddrs)
	// tunnelSrcs are the load-balancer hosts whose tunnels are accepted (SetTunnelSources).
	tunnelSrcs map[netip.Addr]bool
	// localVIPs are the VIPs with a backend here (SetLocalVIPs).
	localVIPs []LocalVIP
	// members mirrors vip_members: (VIP id, backend id) -> F_MEMBER_* flags.
	members map[bpfobj.LbMemberKey]uint32
	// membersSynced: the last Set's membership sync succeeded, so a Set whose plan changes
	// nothing (same VIPs, ids, backends and weights) has no membership to change either.
	membersSynced bool
	// vipGen mirrors vip_gen (0: none yet); gen is the highest generation handed out.
	vipGen map[uint32]uint32
	gen    uint32
	// restored is true when pinned maps held VIPs at Load: an earlier agent left the
	// dataplane forwarding (a restart or an upgrade).
	restored bool
	// writes counts map updates and deletions the setters made (Writes).
	writes atomic.Uint64

	// uplink is the XDP link AttachUplink made on interface uplinkIf (nil: none).
	uplinkMu sync.Mutex
	uplink   link.Link
	uplinkIf string
	// uplinkVLAN is what UplinkVLAN reports.
	uplinkVLAN string
	// plainTables: the pinned rings map takes only tables that are not memory-mappable (an
	// earlier build's template), written slot by slot.
	plainTables bool
	// tables are the Maglev tables this process installed, shared by VIPs with equal ones.
	tables ringShare
	// ringsChecked: a table went into the rings map alone, so plainTables is known.
	ringsChecked bool
}

// Writes is the number of map updates and deletions the setters (Set, SetConfig,
// SetVLANDomains, SetDecapAddrs, SetTunnelSources, SetLocalVIPs) made since Load. A setter
// given what the maps already hold writes nothing, so a steady state adds 0.
func (d *Dataplane) Writes() uint64 { return d.writes.Load() }

// Tables is the number of distinct Maglev tables this process installed and of VIPs using
// them: VIPs with equal tables share one (VIPs restored from pins and not rewritten since are
// not counted).
func (d *Dataplane) Tables() (tables, vips int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tables.count()
}

// Restored reports whether Load found VIPs programmed by an earlier agent.
func (d *Dataplane) Restored() bool { return d.restored }

// Load loads the objects (reusing pinned maps when present), restores the programmed state
// from them and returns the dataplane. Nothing is attached yet.
func Load(opts Options) (*Dataplane, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.TableSize == 0 {
		opts.TableSize = lb.DefaultTableSize
	}
	if !lb.IsPrime(opts.TableSize) {
		return nil, fmt.Errorf("maglev table size %d is not prime", opts.TableSize)
	}
	if opts.ConnTableSize == 0 {
		opts.ConnTableSize = 1 << 20
	}
	if opts.NATTableSize == 0 {
		opts.NATTableSize = 1 << 18
	}
	spec, err := bpfobj.LoadLb()
	if err != nil {
		return nil, fmt.Errorf("loading lb object spec: %w", err)
	}
	spec.Maps[bpfobj.LbMapRings].InnerMap.MaxEntries = opts.TableSize
	spec.Maps[bpfobj.LbMapConntrack].MaxEntries = opts.ConnTableSize
	spec.Maps[bpfobj.LbMapNatRev].MaxEntries = opts.NATTableSize
	if opts.PinPath == "" {
		for _, m := range spec.Maps {
			m.Pinning = ebpf.PinNone
		}
	} else if err := os.MkdirAll(opts.PinPath, 0o700); err != nil {
		return nil, fmt.Errorf("pin path %s: %w (is bpffs mounted at /sys/fs/bpf?)", opts.PinPath, err)
	} else if err := resizeCounterPin(opts.PinPath, spec.Maps[bpfobj.LbMapDropStats], opts.Log); err != nil {
		return nil, err
	} else if err := replaceConntrackPin(opts.PinPath, spec.Maps[bpfobj.LbMapConntrack], opts.Log); err != nil {
		return nil, err
	} else if err := resizeConfigPin(opts.PinPath, spec.Maps[bpfobj.LbMapConfig], opts.Log); err != nil {
		return nil, err
	}
	d := &Dataplane{log: opts.Log, pinPath: opts.PinPath, size: opts.TableSize, vipAddr: map[bpfobj.LbVipAddrKey]uint32{}, local: map[netip.Addr]bool{}, tunnelSrcs: map[netip.Addr]bool{},
		members: map[bpfobj.LbMemberKey]uint32{}, vipGen: map[uint32]uint32{}, tables: newRingShare()}
	err = spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: opts.PinPath}})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return nil, fmt.Errorf("pinned maps under %s do not match this build or its sizes (table %d, conntrack %d): %w; remove them to start afresh",
			opts.PinPath, opts.TableSize, opts.ConnTableSize, err)
	}
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("loading lb programs: %+v", ve)
		}
		return nil, fmt.Errorf("loading lb programs: %w", err)
	}
	d.slots = make([]uint32, opts.TableSize)
	for i := range d.slots {
		d.slots[i] = uint32(i)
	}
	if d.state, err = lb.NewState(opts.TableSize, MaxVIPs, MaxBackends); err != nil {
		d.objs.Close()
		return nil, err
	}
	if err := d.restore(); err != nil {
		d.objs.Close()
		return nil, fmt.Errorf("restoring lb state from %s: %w", opts.PinPath, err)
	}
	var cfg bpfobj.LbLbConfig
	if err := d.objs.Config.Lookup(uint32(0), &cfg); err != nil {
		d.objs.Close()
		return nil, fmt.Errorf("reading lb config: %w", err)
	}
	if cfg.RingSize != opts.TableSize || cfg.GuePort == 0 {
		// A fresh (or older) config: GUE is decapsulated on its default port before the
		// first SetConfig, so a restarted host never drops its peers' tunnels.
		cfg.RingSize = opts.TableSize
		if cfg.GuePort == 0 {
			cfg.GuePort = htons(DefaultGUEPort)
		}
		if err := d.objs.Config.Put(uint32(0), &cfg); err != nil {
			d.objs.Close()
			return nil, fmt.Errorf("writing lb config: %w", err)
		}
	}
	return d, nil
}

// resizeConfigPin removes a pinned config map whose value size differs from spec's (lb_config
// grew the encapsulation fields): the agent writes the whole config again with SetConfig, and
// until then the program balances with ring size and GUE port from Load. Flow state is never
// touched here.
func resizeConfigPin(pinPath string, spec *ebpf.MapSpec, log *slog.Logger) error {
	return removePinIf(pinPath, spec, log, "value_size", (*ebpf.Map).ValueSize, spec.ValueSize,
		"replacing pinned config map of another layout; SetConfig writes it again")
}

// resizeCounterPin removes a pinned counter map whose size differs from spec's (drop_stats
// grew from 9 to 32 reasons): the counters restart from zero, which Prometheus reads as a
// counter reset, instead of the whole load failing with ErrMapIncompatible. Flow state is
// never touched here.
func resizeCounterPin(pinPath string, spec *ebpf.MapSpec, log *slog.Logger) error {
	return removePinIf(pinPath, spec, log, "size", (*ebpf.Map).MaxEntries, spec.MaxEntries,
		"replacing pinned counter map of another size; its counters restart")
}

// removePinIf removes spec's map pinned under pinPath when attr of the pinned map (named what)
// differs from want, logging why; a missing pin is fine.
func removePinIf(pinPath string, spec *ebpf.MapSpec, log *slog.Logger, what string, attr func(*ebpf.Map) uint32, want uint32, why string) error {
	path := filepath.Join(pinPath, spec.Name)
	m, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening pinned map %s: %w", path, err)
	}
	have := attr(m)
	m.Close()
	if have == want {
		return nil
	}
	log.Info(why, "map", path, what, have, "want", want)
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing pinned map %s (%s %d, want %d): %w", path, what, have, want, err)
	}
	return nil
}

// Close releases this process's handles. Pinned maps (and a pinned, attached program) stay,
// so forwarding goes on while the agent restarts.
func (d *Dataplane) Close() error {
	d.mu.Lock()
	d.tables.closeAll()
	d.mu.Unlock()
	return errors.Join(d.closeUplink(), d.objs.Close())
}

// Program returns the load-balancing XDP program.
func (d *Dataplane) Program() *ebpf.Program { return d.objs.XdpLb }

// DecapProgram returns the decapsulation-only XDP program.
func (d *Dataplane) DecapProgram() *ebpf.Program { return d.objs.XdpDecap }

// PassProgram returns the trivial XDP_PASS program (the benchmarks' baseline).
func (d *Dataplane) PassProgram() *ebpf.Program { return d.objs.XdpPass }

// Objects exposes the raw maps for tests and benchmarks in this module.
func (d *Dataplane) Objects() *bpfobj.LbObjects { return &d.objs }

// Unpin removes the pinned maps of this dataplane (clean shutdown without keeping state).
func (d *Dataplane) Unpin() error {
	if d.pinPath == "" {
		return nil
	}
	return os.RemoveAll(filepath.Clean(d.pinPath))
}

// SetConfig writes the host-wide configuration.
func (d *Dataplane) SetConfig(c Config) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	cfg := bpfobj.LbLbConfig{RingSize: d.size, UntaggedDomain: c.UntaggedDomain, GuePort: htons(DefaultGUEPort), Mtu: c.MTU}
	switch c.Encap {
	case "", EncapGUE:
		cfg.EncapMode = encapGUE
	case EncapIPIP:
		cfg.EncapMode = encapIPIP
	default:
		return fmt.Errorf("encapsulation %q: want %q or %q", c.Encap, EncapGUE, EncapIPIP)
	}
	if c.GUEPort != 0 {
		cfg.GuePort = htons(c.GUEPort)
	}
	if c.MTU != 0 && (c.MTU < MinMTU || c.MTU > 65535) {
		return fmt.Errorf("encapsulation MTU %d: want 0 (the egress device's) or %d-65535", c.MTU, MinMTU)
	}
	for _, a := range []struct {
		addr netip.Addr
		v4   *uint32
		v6   *[4]uint32
		name string
	}{{c.EncapSource4, &cfg.EncapSrc4, &cfg.EncapSrc6, "encap source"}, {c.SNATSource4, &cfg.SnatSrc4, &cfg.SnatSrc6, "snat source"}} {
		if a.addr.IsValid() && !a.addr.Is4() {
			return fmt.Errorf("%s %s: want an IPv4 address", a.name, a.addr)
		}
		if a.addr.IsValid() {
			*a.v4 = addrWords(a.addr)[0]
		}
	}
	for _, a := range []struct {
		addr netip.Addr
		v6   *[4]uint32
		name string
	}{{c.EncapSource6, &cfg.EncapSrc6, "encap source"}, {c.SNATSource6, &cfg.SnatSrc6, "snat source"}} {
		if a.addr.IsValid() && !a.addr.Is6() {
			return fmt.Errorf("%s %s: want an IPv6 address", a.name, a.addr)
		}
		if a.addr.IsValid() {
			*a.v6 = addrWords(a.addr)
		}
	}
	var have bpfobj.LbLbConfig
	if err := d.objs.Config.Lookup(uint32(0), &have); err == nil && have == cfg {
		return nil
	}
	if err := d.objs.Config.Put(uint32(0), &cfg); err != nil {
		return fmt.Errorf("writing lb config: %w", err)
	}
	d.writes.Add(1)
	return nil
}

// SetVLANDomains replaces the VLAN -> routing-domain mapping (VLANs absent pass untouched).
func (d *Dataplane) SetVLANDomains(m map[uint16]uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	keys := make([]uint32, 4096)
	vals := make([]uint32, 4096)
	for i := range keys {
		keys[i] = uint32(i)
	}
	for vlan, dom := range m {
		if vlan == 0 || vlan > 4094 {
			return fmt.Errorf("vlan %d: want 1-4094", vlan)
		}
		vals[vlan] = dom
	}
	haveKeys, have := make([]uint32, len(keys)), make([]uint32, len(keys))
	var cursor ebpf.MapBatchCursor
	if n, err := d.objs.VlanDomain.BatchLookup(&cursor, haveKeys, have, nil); (err == nil || errors.Is(err, ebpf.ErrKeyNotExist)) && n == len(keys) && slices.Equal(have, vals) {
		return nil
	}
	if _, err := d.objs.VlanDomain.BatchUpdate(keys, vals, nil); err != nil {
		return fmt.Errorf("writing vlan domains: %w", err)
	}
	d.writes.Add(1)
	return nil
}

// SetDecapAddrs replaces the set of local tunnel endpoints (dsr backends on this host).
// Backends at these addresses are marked local: their packets go up this host's stack as they
// are, no tunnel.
func (d *Dataplane) SetDecapAddrs(addrs []netip.Addr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	local := map[netip.Addr]bool{}
	for _, a := range addrs {
		local[a] = true
	}
	if !maps.Equal(local, d.local) {
		d.local = local
		for key, id := range d.state.BackendIDs() {
			ap, err := netip.ParseAddrPort(key)
			if err != nil {
				continue
			}
			val := d.backendValue(lb.Backend{Addr: ap.Addr(), Port: ap.Port()})
			var have bpfobj.LbBackend
			if err := d.objs.Backends.Lookup(id, &have); err == nil && have == *val {
				continue
			}
			if err := d.objs.Backends.Put(id, val); err != nil {
				return fmt.Errorf("backend %s: %w", key, err)
			}
			d.writes.Add(1)
		}
	}
	want := map[bpfobj.LbVipAddrKey]bool{}
	for _, a := range addrs {
		want[addrKey(0, a)] = true
		var have uint32
		if err := d.objs.DecapAddrs.Lookup(addrKey(0, a), &have); err == nil && have == 1 {
			continue
		}
		if err := d.objs.DecapAddrs.Put(addrKey(0, a), uint32(1)); err != nil {
			return fmt.Errorf("decap address %s: %w", a, err)
		}
		d.writes.Add(1)
	}
	var k bpfobj.LbVipAddrKey
	var v uint32
	var stale []bpfobj.LbVipAddrKey
	it := d.objs.DecapAddrs.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading decap addresses: %w", err)
	}
	for _, k := range stale {
		if err := d.objs.DecapAddrs.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("removing decap address: %w", err)
		}
		d.writes.Add(1)
	}
	// Tunnels are accepted per (source, endpoint): the endpoints changed, so do the pairs.
	return d.syncPolicy(d.tunnelSrcs, local, d.localVIPs)
}

// Set programs the whole desired set of services. Calling it twice with the same services
// changes nothing. Each VIP's table is built in a fresh inner map and swapped in with one
// update of the outer map, so no packet sees a half-written table. Then each VIP's
// memberships are written: a connection-table entry is followed only to a backend that is
// still a member of its VIP (one removed from this VIP alone included), and a bare SYN only to
// one with weight > 0. Errors: invalid services, more than MaxVIPs VIPs, MaxBackends
// backends or MaxMembers (VIP, backend) pairs, and map writes (naming VIP or backend).
func (d *Dataplane) Set(services []lb.Service) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, s := range services {
		n += len(s.Backends)
	}
	if n > MaxMembers {
		return fmt.Errorf("%d (VIP, backend) pairs exceed the dataplane's %d", n, MaxMembers)
	}
	plan, err := d.state.Plan(services)
	if err != nil {
		return err
	}
	if err := d.apply(plan.Diff); err != nil {
		return err
	}
	diff := plan.Diff
	changes := len(diff.UpsertBackends) + len(diff.UpsertVIPs) + len(diff.DeleteVIPs) + len(diff.DeleteBackends)
	d.writes.Add(uint64(changes))
	d.state.Commit(plan)
	if changes == 0 && d.membersSynced {
		return nil
	}
	d.membersSynced = false
	if err := d.syncMembers(d.desiredMembers(services)); err != nil {
		return err
	}
	d.membersSynced = true
	return nil
}

// TableKeys returns VIP v's programmed Maglev table as the key (lb.Backend.Key) of each slot's
// backend ("" for an empty slot), or nil when v is not programmed: what the agent compares
// with the controller's shared table.
func (d *Dataplane) TableKeys(v lb.VIP) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.state.TableOf(v)
	if t.Len() == 0 {
		return nil
	}
	keys := map[uint32]string{}
	for k, id := range d.state.BackendIDs() {
		keys[id] = k
	}
	out := make([]string, t.Len())
	for i := range out {
		if id := t.At(i); id != lb.NoBackend {
			out[i] = keys[id]
		}
	}
	return out
}

func (d *Dataplane) apply(diff lb.Diff) error {
	for _, b := range diff.UpsertBackends {
		if err := d.objs.Backends.Put(b.ID, d.backendValue(b.Backend)); err != nil {
			return fmt.Errorf("backend %s (id %d): %w", b.Backend.Key(), b.ID, err)
		}
		if err := zeroPerCPU(d.objs.BackendStats, b.ID, bpfobj.LbLbCounter{}); err != nil {
			return fmt.Errorf("backend %s counters: %w", b.Backend.Key(), err)
		}
		if err := zeroPerCPU(d.objs.Nexthops, b.ID, bpfobj.LbNexthopCache{}); err != nil {
			return fmt.Errorf("backend %s next hop: %w", b.Backend.Key(), err)
		}
	}
	// Tables first (a VIP is seen by packets only once its meta is written below).
	if err := d.installTables(diff.UpsertVIPs); err != nil {
		return err
	}
	for _, u := range diff.UpsertVIPs {
		if u.New {
			if err := zeroPerCPU(d.objs.VipStats, u.ID, bpfobj.LbVipCounter{}); err != nil {
				return fmt.Errorf("VIP %s counters: %w", u.VIP, err)
			}
			// Entries left by an earlier VIP of this id are checked against the new one's
			// backends before they are followed.
			if err := d.newGeneration(u.ID); err != nil {
				return fmt.Errorf("VIP %s: %w", u.VIP, err)
			}
		}
		var flags uint32
		if u.Mode == lb.NAT {
			flags = 1
		}
		if err := d.objs.Vips.Put(vipKey(u.VIP), &bpfobj.LbVipMeta{Id: u.ID, Flags: flags}); err != nil {
			return fmt.Errorf("VIP %s: %w", u.VIP, err)
		}
		ak := addrKey(u.VIP.Domain, u.VIP.Addr)
		if u.New {
			d.vipAddr[ak]++
		}
		if err := d.objs.VipAddrs.Put(ak, d.vipAddr[ak]); err != nil {
			return fmt.Errorf("VIP %s address: %w", u.VIP, err)
		}
	}
	var gone []uint32 // VIP ids whose tables go, once their VIPs are gone
	for _, u := range diff.DeleteVIPs {
		if err := d.objs.Vips.Delete(vipKey(u.VIP)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("removing VIP %s: %w", u.VIP, err)
		}
		gone = append(gone, u.ID)
		ak := addrKey(u.VIP.Domain, u.VIP.Addr)
		if d.vipAddr[ak] > 0 {
			d.vipAddr[ak]--
		}
		if d.vipAddr[ak] == 0 {
			delete(d.vipAddr, ak)
			if err := d.objs.VipAddrs.Delete(ak); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("removing VIP address %s: %w", u.VIP.Addr, err)
			}
		} else if err := d.objs.VipAddrs.Put(ak, d.vipAddr[ak]); err != nil {
			return fmt.Errorf("VIP address %s: %w", u.VIP.Addr, err)
		}
	}
	if err := d.removeTables(gone); err != nil {
		return err
	}
	for _, id := range diff.DeleteBackends {
		// Inactive: connection-table entries that still name it pick a new backend.
		if err := d.objs.Backends.Put(id, &bpfobj.LbBackend{}); err != nil {
			return fmt.Errorf("removing backend id %d: %w", id, err)
		}
	}
	return nil
}

func (d *Dataplane) backendValue(b lb.Backend) *bpfobj.LbBackend {
	v := &bpfobj.LbBackend{Addr: addrWords(b.Addr), Port: htons(b.Port), Family: family(b.Addr), Flags: flagActive}
	if d.local[b.Addr] {
		v.Flags |= flagLocal
	}
	return v
}

// lb_config.encap_mode (bpf/lb/lb_consts.h).
const (
	encapIPIP = 0
	encapGUE  = 1
)

// Backend flags (bpf/lb/lb_consts.h).
const (
	flagActive = 1 << 0
	flagLocal  = 1 << 1
)

// installTables installs the table of each update that has one. Every update of a map of
// maps makes the kernel wait for an RCU grace period (expedited: all CPUs interrupted), which
// on a busy host took 12 s for the scale lab's 1200 VIPs; the tables are therefore put in
// one batch, waiting once. The first table of this process goes alone: it finds out whether
// the pinned rings map takes memory-mappable tables (swapTable). A kernel without batch
// updates of a map of maps gets one update per table.
func (d *Dataplane) installTables(ups []lb.VIPUpdate) error {
	var ids []uint32
	var rs []*ring
	for _, u := range ups {
		if u.Table.Len() == 0 {
			continue
		}
		if !d.ringsChecked {
			if err := d.swapTable(u.ID, u.Table); err != nil {
				return fmt.Errorf("VIP %s: %w", u.VIP, err)
			}
			d.ringsChecked = true
			continue
		}
		r, err := d.prepareTable(u.Table)
		if err != nil {
			d.tables.closeUnused()
			return fmt.Errorf("VIP %s: %w", u.VIP, err)
		}
		ids, rs = append(ids, u.ID), append(rs, r)
	}
	if len(ids) == 0 {
		return nil
	}
	fds := make([]uint32, len(rs))
	for i, r := range rs {
		fds[i] = uint32(r.m.FD())
	}
	if _, err := d.objs.Rings.BatchUpdate(ids, fds, nil); err != nil {
		if !errors.Is(err, ebpf.ErrNotSupported) && !errors.Is(err, unix.EINVAL) {
			d.tables.closeUnused()
			return fmt.Errorf("installing %d maglev tables: %w", len(ids), err)
		}
		for i, id := range ids {
			if err := d.objs.Rings.Put(id, rs[i].m); err != nil {
				d.tables.closeUnused()
				return fmt.Errorf("installing maglev table of VIP id %d: %w", id, err)
			}
		}
	}
	d.tables.useAll(ids, rs)
	return nil
}

// removeTables removes the tables of VIP ids (whose VIPs are gone), in one batch where the
// kernel allows it (installTables says why).
func (d *Dataplane) removeTables(ids []uint32) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := d.objs.Rings.BatchDelete(ids, nil); err != nil {
		for _, id := range ids {
			if err := d.objs.Rings.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("removing the maglev table of VIP id %d: %w", id, err)
			}
		}
	}
	for _, id := range ids {
		d.tables.drop(id)
	}
	return nil
}

// prepareTable returns an installed table equal to table, or a new one written with it and
// not yet installed anywhere. A new table is memory-mappable and written with one copy
// through a mapping; under pins of an earlier build (plainTables) each slot is one update of
// a batch (the kernel copies and updates element by element: about 6 ms for 65537 slots).
func (d *Dataplane) prepareTable(table lb.Slots) (*ring, error) {
	h := d.tables.hash(table)
	if r := d.tables.find(h, table); r != nil {
		return r, nil
	}
	spec := &ebpf.MapSpec{Name: "ring", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: d.size}
	if !d.plainTables {
		spec.Flags = unix.BPF_F_MMAPABLE
	}
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("creating maglev table: %w", err)
	}
	if d.plainTables {
		_, err = m.BatchUpdate(d.slots, table.List(), nil)
	} else {
		err = writeMapped(m, table)
	}
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("filling maglev table: %w", err)
	}
	return d.tables.add(m, table, h), nil
}

// swapTable installs table for VIP id in one update of its own. The first table of a process
// goes this way: a rings map pinned by an earlier build whose table template is not
// memory-mappable (an upgrade that kept the pins) refuses a memory-mappable table (EINVAL),
// and from then on tables are made like the template.
func (d *Dataplane) swapTable(id uint32, table lb.Slots) error {
	for {
		r, err := d.prepareTable(table)
		if err != nil {
			return err
		}
		err = d.objs.Rings.Put(id, r.m)
		if err == nil {
			d.tables.use(id, r)
			return nil
		}
		d.tables.closeUnused()
		if d.plainTables || !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("installing maglev table: %w", err)
		}
		d.log.Info("pinned maglev tables are not memory-mappable (an earlier build's); filling tables slot by slot")
		d.plainTables = true
	}
}

// writeMapped writes table into the memory-mappable array m (4-byte values) through a shared
// mapping: an array lays its values out 8 bytes apart. A shared table's slots are translated
// to backend IDs as they are written, with no copy in between. The mapping is removed before
// return.
func writeMapped(m *ebpf.Map, table lb.Slots) error {
	if table.Len() != int(m.MaxEntries()) {
		return fmt.Errorf("%d slots for a table of %d", table.Len(), m.MaxEntries())
	}
	size := (8*table.Len() + os.Getpagesize() - 1) &^ (os.Getpagesize() - 1)
	b, err := unix.Mmap(m.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mapping: %w", err)
	}
	if table.IDs == nil {
		for i, v := range table.Index {
			binary.NativeEndian.PutUint32(b[8*i:], v)
		}
	} else {
		for i, idx := range table.Index {
			binary.NativeEndian.PutUint32(b[8*i:], table.IDs[idx])
		}
	}
	return unix.Munmap(b)
}

// restore reads back VIPs, backends and tables left in pinned maps by a previous run.
func (d *Dataplane) restore() error {
	backends := map[uint32]lb.Backend{}
	var id uint32
	var be bpfobj.LbBackend
	it := d.objs.Backends.Iterate()
	for it.Next(&id, &be) {
		if be.Flags&1 != 0 {
			backends[id] = lb.Backend{Addr: wordsAddr(be.Addr, be.Family), Port: htons(be.Port)}
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading backends: %w", err)
	}
	var vips []lb.RestoredVIP
	var k bpfobj.LbVipKey
	var m bpfobj.LbVipMeta
	vit := d.objs.Vips.Iterate()
	for vit.Next(&k, &m) {
		r := lb.RestoredVIP{
			VIP:  lb.VIP{Domain: k.Domain, Addr: wordsAddr(k.Addr, k.Family), Port: htons(k.Port), Proto: lb.Protocol(k.Proto)},
			ID:   m.Id,
			Mode: lb.DSR,
		}
		if m.Flags&1 != 0 {
			r.Mode = lb.NAT
		}
		t, err := d.readTable(m.Id)
		if err != nil {
			return fmt.Errorf("VIP %s: %w", r.VIP, err)
		}
		r.Table = t
		vips = append(vips, r)
		d.vipAddr[addrKey(k.Domain, r.VIP.Addr)]++
	}
	if err := vit.Err(); err != nil {
		return fmt.Errorf("reading VIPs: %w", err)
	}
	// Tunnel sources, so the first SetDecapAddrs of a restarted agent keeps the pairs.
	srcs, err := d.TunnelSources()
	if err != nil {
		return err
	}
	for _, a := range srcs {
		d.tunnelSrcs[a] = true
	}
	if d.localVIPs, err = d.LocalVIPs(); err != nil {
		return err
	}
	if err := d.restoreMembers(); err != nil {
		return err
	}
	if len(vips) > 0 || len(backends) > 0 {
		d.restored = len(vips) > 0
		d.log.Info("restored load balancer state from pinned maps", "vips", len(vips), "backends", len(backends))
	}
	d.state.Restore(vips, backends)
	return nil
}

func (d *Dataplane) readTable(id uint32) ([]uint32, error) {
	var innerID uint32
	if err := d.objs.Rings.Lookup(id, &innerID); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("looking up table: %w", err)
	}
	inner, err := ebpf.NewMapFromID(ebpf.MapID(innerID))
	if err != nil {
		return nil, fmt.Errorf("opening table: %w", err)
	}
	defer inner.Close()
	if inner.MaxEntries() != d.size {
		d.log.Warn("pinned maglev table has another size; rebuilding it", "id", id, "size", inner.MaxEntries(), "want", d.size)
		return nil, nil
	}
	t := make([]uint32, d.size)
	var cursor ebpf.MapBatchCursor
	keys := make([]uint32, d.size)
	n, err := inner.BatchLookup(&cursor, keys, t, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, fmt.Errorf("reading table: %w", err)
	}
	if n != int(d.size) {
		return nil, fmt.Errorf("reading table: got %d of %d slots", n, d.size)
	}
	return t, nil
}

func zeroPerCPU[T any](m *ebpf.Map, id uint32, zero T) error {
	vals := make([]T, ebpf.MustPossibleCPU())
	for i := range vals {
		vals[i] = zero
	}
	return m.Put(id, vals)
}

func htons(p uint16) uint16 { return bits.ReverseBytes16(p) }

func family(a netip.Addr) uint8 {
	if a.Is4() {
		return 4
	}
	return 6
}

// addrWords lays an address out as the BPF side stores it: network byte order in memory.
func addrWords(a netip.Addr) [4]uint32 {
	var w [4]uint32
	if a.Is4() {
		b := a.As4()
		w[0] = le32(b[:])
		return w
	}
	b := a.As16()
	for i := range w {
		w[i] = le32(b[i*4:])
	}
	return w
}

func wordsAddr(w [4]uint32, fam uint8) netip.Addr {
	var b [16]byte
	for i := range w {
		b[i*4], b[i*4+1], b[i*4+2], b[i*4+3] = byte(w[i]), byte(w[i]>>8), byte(w[i]>>16), byte(w[i]>>24)
	}
	if fam == 4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func vipKey(v lb.VIP) bpfobj.LbVipKey {
	return bpfobj.LbVipKey{Domain: v.Domain, Addr: addrWords(v.Addr), Port: htons(v.Port), Proto: uint8(v.Proto), Family: family(v.Addr)}
}

func addrKey(domain uint32, a netip.Addr) bpfobj.LbVipAddrKey {
	return bpfobj.LbVipAddrKey{Domain: domain, Addr: addrWords(a), Family: family(a)}
}
