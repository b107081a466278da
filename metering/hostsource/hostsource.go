// Package hostsource adapts a host's counters to metering's source interfaces: the trunk's
// per-department traffic and drops, the host firewall's and the XDP load balancer's drops,
// the load balancer's per-VIP counters, the agent's backend health and BGP sessions (the
// network agent), and a compute provider's VM and volume usage (the compute agent). It also
// builds the two agents' ledger reporters.
//
// Counters are read at every scrape or report; nothing here keeps a copy.
package hostsource

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
	"github.com/govcloud/govcloud/dataplane/bpfobj"
	"github.com/govcloud/govcloud/dataplane/hostnet"
	"github.com/govcloud/govcloud/dataplane/lbmap"
	"github.com/govcloud/govcloud/dataplane/trunk"
	"github.com/govcloud/govcloud/metering"
)

// Agent is what the network agent exposes to metering: its last desired state (names of
// departments, segments and services; nil before the first) and its status (backend health,
// BGP sessions).
type Agent interface {
	Desired() *desired.State
	Status() hoststatus.Status
}

// Network returns the network agent's /metrics handler: the metering collector reading the
// trunk's and the load balancer's pinned counters and the host firewall's at every scrape.
func Network(a Agent, hn *hostnet.Host, lb *lbmap.Dataplane, host string) http.Handler {
	s := &agentSources{a: a, lb: lb}
	ts := &Trunk{Trunk: hn.Trunk(), Desired: a.Desired, LBDrops: lb.Drops, FirewallDrops: hn.Drops}
	c := metering.NewCollector(metering.Sources{Host: host, Traffic: ts, Service: s, BGP: s}, nil)
	// Reasons a department's own segment can cause; a 0 series each from the start.
	c.ZeroDropReasons = []string{trunk.DropWrongVLAN.String(), trunk.DropDoubleTag.String(), trunk.DropNoPort.String(), trunk.DropRateLimit.String()}
	return metering.Handler(c)
}

// agentSources adapts an agent and its load balancer to metering's service and BGP sources.
type agentSources struct {
	a  Agent
	lb *lbmap.Dataplane
}

func (s *agentSources) desiredState() *desired.State { return s.a.Desired() }

type names struct {
	dept map[uint32]string // department id (its table) -> name
	seg  map[uint32]string // segment id (its VLAN) -> name
}

// Trunk reads the trunk's pinned per-CPU counters, summed (a metering.TrafficSource).
// Departments and segments are named from the desired state; without one, by their ids
// ("dept<table>", "vlan<vid>").
type Trunk struct {
	Trunk         *trunk.Trunk
	Desired       func() *desired.State                    // names; nil or returning nil: ids
	LBDrops       func() (map[string]lbmap.Counter, error) // the load balancer's drops; may be nil
	FirewallDrops func() ([]hostnet.Drop, error)           // the host firewall's drops; may be nil
}

func (s *Trunk) desiredState() *desired.State {
	if s.Desired == nil {
		return nil
	}
	return s.Desired()
}

func (s *Trunk) names() names {
	n := names{dept: map[uint32]string{}, seg: map[uint32]string{}}
	if st := s.desiredState(); st != nil {
		for _, d := range st.Departments {
			n.dept[uint32(d.TableID)] = d.Name
		}
		for _, sg := range st.Segments {
			n.seg[uint32(sg.VLAN)] = sg.Name
		}
	}
	return n
}

func (n names) department(id uint32) string {
	if id == 0 {
		return ""
	}
	if v, ok := n.dept[id]; ok {
		return v
	}
	return fmt.Sprintf("dept%d", id)
}

func (n names) segment(id uint32) string {
	if id == 0 {
		return ""
	}
	if v, ok := n.seg[id]; ok {
		return v
	}
	return fmt.Sprintf("vlan%d", id)
}

// Segments lists the configured segments (the desired state's, else the trunk's).
func (s *Trunk) Segments() []metering.SegmentRef {
	var out []metering.SegmentRef
	if st := s.desiredState(); st != nil {
		for _, sg := range st.Segments {
			out = append(out, metering.SegmentRef{Department: sg.Department, Segment: sg.Name})
		}
		return out
	}
	segs, err := s.Trunk.Segments()
	if err != nil {
		return nil
	}
	n := s.names()
	for _, sg := range segs {
		out = append(out, metering.SegmentRef{Department: n.department(sg.Department), Segment: n.segment(sg.ID)})
	}
	return out
}

// Traffic reads the trunk's per-CPU counters, summed.
func (s *Trunk) Traffic() ([]metering.Traffic, error) {
	st, err := s.Trunk.Stats()
	if err != nil {
		return nil, err
	}
	n := s.names()
	out := make([]metering.Traffic, 0, len(st))
	for k, c := range st {
		out = append(out, metering.Traffic{Department: n.department(k.Department), Segment: n.segment(k.Segment),
			Direction: k.Direction.String(), Packets: c.Packets, Bytes: c.Bytes})
	}
	return out, nil
}

// Drops reads the trunk's drop counters, the host firewall's (per department, segment "";
// reasons in firewall.Reasons) and the load balancer's (reason lb_*, unattributed).
func (s *Trunk) Drops() ([]metering.Drop, error) {
	d, err := s.Trunk.Drops()
	if err != nil {
		return nil, err
	}
	n := s.names()
	out := make([]metering.Drop, 0, len(d)+8)
	for k, c := range d {
		out = append(out, metering.Drop{Department: n.department(k.Department), Segment: n.segment(k.Segment), Reason: k.Reason.String(), Packets: c.Packets})
	}
	if s.FirewallDrops != nil {
		fd, err := s.FirewallDrops()
		if err != nil {
			return out, err
		}
		for _, f := range fd {
			out = append(out, metering.Drop{Department: n.department(f.Department), Reason: f.Reason, Packets: f.Packets})
		}
	}
	if s.LBDrops == nil {
		return out, nil
	}
	ld, err := s.LBDrops()
	if err != nil {
		return out, err
	}
	for r, c := range ld {
		out = append(out, metering.Drop{Reason: "lb_" + r, Packets: c.Packets})
	}
	return out, nil
}

type vipKey struct {
	domain uint32
	addr   netip.Addr
}

// Services reads the load balancer's per-VIP counters, named by service.
func (s *agentSources) Services() ([]metering.ServiceCounter, error) {
	vc, err := s.lb.VIPCounters()
	if err != nil {
		return nil, err
	}
	byVIP := map[vipKey]desired.Service{}
	if st := s.desiredState(); st != nil {
		for _, svc := range st.Services {
			a := svc.VIP
			if !a.IsValid() {
				continue
			}
			dom := uint32(0)
			if svc.Scope == "internal" {
				dom = uint32(svc.TableID)
			}
			byVIP[vipKey{dom, a}] = svc
		}
	}
	out := make([]metering.ServiceCounter, 0, len(vc))
	for v, c := range vc {
		sc := metering.ServiceCounter{Service: v.Addr.String(), Bytes: c.Bytes, Packets: c.Packets, Connections: c.Conns, Public: v.Domain == 0}
		if svc, ok := byVIP[vipKey{v.Domain, v.Addr}]; ok {
			sc.Service, sc.Department = svc.Name, svc.Department
		}
		out = append(out, sc)
	}
	return out, nil
}

// Backends reads the health of the backends this host checks.
func (s *agentSources) Backends() ([]metering.BackendState, error) {
	dept := map[string]string{}
	if st := s.desiredState(); st != nil {
		for _, svc := range st.Services {
			dept[svc.Name] = svc.Department
		}
	}
	var out []metering.BackendState
	backends := s.a.Status().Backends
	for _, k := range backends.Keys() {
		out = append(out, metering.BackendState{Department: dept[k.Service], Service: k.Service, Backend: k.Addr.String(), Up: backends[k].Up})
	}
	return out, nil
}

// Connections reads the load balancer's active connections per service and target from the
// agent's last report (every target of its plan, 0 when none).
func (s *agentSources) Connections() ([]metering.BackendConnections, error) {
	dept := map[string]string{}
	if st := s.desiredState(); st != nil {
		for _, svc := range st.Services {
			dept[svc.Name] = svc.Department
		}
	}
	var out []metering.BackendConnections
	for _, c := range s.a.Status().Connections {
		out = append(out, metering.BackendConnections{Department: dept[c.Service], Service: c.Service, Target: c.Target.String(), Active: c.Active})
	}
	return out, nil
}

// Sessions reads the BGP speaker's peers from the agent's status.
func (s *agentSources) Sessions() ([]metering.BGPSession, error) {
	var out []metering.BGPSession
	for _, p := range s.a.Status().BGP {
		s := metering.BGPSession{Peer: p.Address.String(), Up: p.Established, Advertised: p.Advertised}
		if p.BFD != nil {
			s.BFD = p.BFD.State
		}
		out = append(out, s)
	}
	return out, nil
}

// NetworkReporter reports the host's trunk totals to the controller's usage ledger, per
// department segment (run next to the agent; see metering.Reporter). Its epoch is the boot
// and the inode of the pinned counter map: both change exactly when the counters restart
// from zero, and neither changes when the agent is restarted or killed.
func NetworkReporter(a Agent, tr *trunk.Trunk, host string, c *metering.Client) *metering.Reporter {
	ts := &Trunk{Trunk: tr, Desired: a.Desired}
	return &metering.Reporter{
		Host:   host,
		Source: metering.SourceNetwork,
		Epoch: func() string {
			return CounterEpoch(filepath.Join(tr.PinPath(), bpfobj.TrunkMapTrunkStats))
		},
		Samples: func() ([]metering.Sample, error) {
			tr, err := ts.Traffic()
			return metering.TrafficSamples(KnownTraffic(tr, a.Desired())), err
		},
		Send: c.Report,
	}
}

// KnownTraffic leaves out the counters of segments and departments st no longer names: the
// trunk keeps a deleted segment's counters (named by id, "vlan121"), and the controller
// refuses a whole report holding a sample of a segment not on the host, so one deleted
// segment that had traffic would stop the host's billing. What such a segment carried since
// the last accepted report is not billed. With no desired state yet (nil) nothing is left out.
func KnownTraffic(tr []metering.Traffic, st *desired.State) []metering.Traffic {
	if st == nil {
		return tr
	}
	segs := map[[2]string]bool{}
	for _, sg := range st.Segments {
		segs[[2]string{sg.Department, sg.Name}] = true
	}
	out := make([]metering.Traffic, 0, len(tr))
	for _, t := range tr {
		if segs[[2]string{t.Department, t.Segment}] {
			out = append(out, t)
		}
	}
	return out
}

// LBReporter reports the bytes to each public VIP this host's load balancer balanced (source
// lb: its counters live and restart apart from the trunk's). pinPath is where the load
// balancer pins its maps (lbmap.Options.PinPath); the epoch is the boot and the inode of the
// pinned per-VIP counter map.
func LBReporter(a Agent, lb *lbmap.Dataplane, pinPath, host string, c *metering.Client) *metering.Reporter {
	src := &agentSources{a: a, lb: lb}
	return &metering.Reporter{
		Host:   host,
		Source: metering.SourceLB,
		Epoch:  func() string { return CounterEpoch(filepath.Join(pinPath, bpfobj.LbMapVipStats)) },
		Samples: func() ([]metering.Sample, error) {
			sc, err := src.Services()
			return metering.VIPSamples(sc), err
		},
		Send: c.Report,
	}
}

// CounterEpoch names the life of a pinned map: "<boot id>/<inode of the pin>" (inode 0 when
// the pin is missing).
func CounterEpoch(pin string) string {
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	var ino uint64
	if fi, err := os.Stat(pin); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
	}
	return fmt.Sprintf("%s/%d", strings.TrimSpace(string(boot)), ino)
}

// computeSource adapts a compute provider to metering.ComputeSource.
type computeSource struct {
	p   compute.Provider
	ctx context.Context
}

func (s computeSource) usage() ([]compute.Usage, error) {
	ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
	defer cancel()
	return s.p.Usage(ctx)
}

// VMs implements metering.ComputeSource.
func (s computeSource) VMs() ([]metering.VMUsage, error) {
	us, err := s.usage()
	out := make([]metering.VMUsage, 0, len(us))
	for _, u := range us {
		out = append(out, metering.VMUsage{Department: u.Department, VM: u.VM, VCPUSeconds: u.VCPUSeconds})
	}
	return out, err
}

// Volumes implements metering.ComputeSource: one series per volume, the root disks as
// "<vm>/root" (compute.RootVolume).
func (s computeSource) Volumes() ([]metering.VolumeUsage, error) {
	us, err := s.usage()
	out := make([]metering.VolumeUsage, 0, len(us))
	for _, u := range us {
		for _, v := range u.Volumes {
			out = append(out, metering.VolumeUsage{Department: u.Department, Volume: v.Name, AllocatedBytes: v.AllocatedBytes})
		}
	}
	return out, err
}

// Compute is the compute agent's /metrics handler (govcloud_vm_vcpu_seconds_total,
// govcloud_volume_allocated_bytes), reading p's usage at every scrape (2 s bound).
func Compute(ctx context.Context, p compute.Provider, host string) http.Handler {
	return metering.Handler(metering.NewCollector(metering.Sources{Host: host, Compute: computeSource{p: p, ctx: ctx}}, nil))
}

// ComputeSamples turns a provider's usage into ledger samples: vCPU-seconds as per-VM
// counters (a restarted VM starts again from zero on its own), memory and volumes as levels
// the ledger integrates over time.
func ComputeSamples(us []compute.Usage) []metering.Sample {
	out := make([]metering.Sample, 0, 3*len(us))
	for _, u := range us {
		out = append(out,
			metering.Sample{Department: u.Department, Resource: metering.ResVCPUSeconds, Item: u.VM, Total: uint64(u.VCPUSeconds)},
			metering.Sample{Department: u.Department, Resource: metering.ResMemoryMiBSeconds, Item: u.VM, Gauge: true, Level: u.MemoryBytes >> 20},
			metering.Sample{Department: u.Department, Resource: metering.ResVolumeGiBSeconds, Item: u.VM, Gauge: true, Level: (u.VolumeBytes + 1<<30 - 1) >> 30})
	}
	return out
}

// ComputeReporter reports a compute host's VM usage to the ledger as host's compute
// source (the host its agent token or certificate names; the ledger keeps its state apart from
// the network agent's). The epoch is constant: vCPU time is a per-VM counter whose restarts the
// ledger sees per VM.
func ComputeReporter(ctx context.Context, p compute.Provider, host string, c *metering.Client) *metering.Reporter {
	src := computeSource{p: p, ctx: ctx}
	return &metering.Reporter{
		Host:   host,
		Source: metering.SourceCompute,
		Epoch:  func() string { return "compute" },
		Samples: func() ([]metering.Sample, error) {
			us, err := src.usage()
			return ComputeSamples(us), err
		},
		Send: c.Report,
	}
}
