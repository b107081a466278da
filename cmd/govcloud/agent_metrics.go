package main

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

	"github.com/govcloud/govcloud/agent"
	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/dataplane/bpfobj"
	"github.com/govcloud/govcloud/dataplane/hostnet"
	"github.com/govcloud/govcloud/dataplane/lbmap"
	"github.com/govcloud/govcloud/dataplane/trunk"
	"github.com/govcloud/govcloud/metering"
)

// agentMetrics returns the agent's /metrics handler: the metering collector reading the
// trunk's and the load balancer's pinned counters at every scrape.
func agentMetrics(a *agent.Agent, dp *agentDataplane, host string) http.Handler {
	s := &agentSources{a: a, lb: dp.lb}
	ts := &trunkSource{tr: dp.hn.Trunk(), desired: s.desiredState, lbDrops: dp.lb.Drops, fwDrops: dp.hn.Drops}
	c := metering.NewCollector(metering.Sources{Host: host, Traffic: ts, Service: s, BGP: s}, nil)
	// Reasons a department's own segment can cause; a 0 series each from the start.
	c.ZeroDropReasons = []string{trunk.DropWrongVLAN.String(), trunk.DropDoubleTag.String(), trunk.DropNoPort.String()}
	return metering.Handler(c)
}

// agentSources adapts an agent and its load balancer to metering's source interfaces.
type agentSources struct {
	a  *agent.Agent
	lb *lbmap.Dataplane
}

// desiredState is the agent's last desired state, when the agent exposes it (names of
// departments, segments and services); without it counters are labelled by their ids.
func (s *agentSources) desiredState() *desired.State {
	if d, ok := any(s.a).(interface{ Desired() *desired.State }); ok {
		return d.Desired()
	}
	return nil
}

type names struct {
	dept map[uint32]string // department id (its table) -> name
	seg  map[uint32]string // segment id (its VLAN) -> name
}

// trunkSource reads the trunk's pinned per-CPU counters (a metering.TrafficSource).
type trunkSource struct {
	tr      *trunk.Trunk
	desired func() *desired.State                    // names; nil or returning nil: ids
	lbDrops func() (map[string]lbmap.Counter, error) // the load balancer's drops; may be nil
	fwDrops func() ([]hostnet.Drop, error)           // the host firewall's drops; may be nil
}

func (s *trunkSource) desiredState() *desired.State {
	if s.desired == nil {
		return nil
	}
	return s.desired()
}

func (s *trunkSource) names() names {
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
func (s *trunkSource) Segments() []metering.SegmentRef {
	var out []metering.SegmentRef
	if st := s.desiredState(); st != nil {
		for _, sg := range st.Segments {
			out = append(out, metering.SegmentRef{Department: sg.Department, Segment: sg.Name})
		}
		return out
	}
	segs, err := s.tr.Segments()
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
func (s *trunkSource) Traffic() ([]metering.Traffic, error) {
	st, err := s.tr.Stats()
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
func (s *trunkSource) Drops() ([]metering.Drop, error) {
	d, err := s.tr.Drops()
	if err != nil {
		return nil, err
	}
	n := s.names()
	out := make([]metering.Drop, 0, len(d)+8)
	for k, c := range d {
		out = append(out, metering.Drop{Department: n.department(k.Department), Segment: n.segment(k.Segment), Reason: k.Reason.String(), Packets: c.Packets})
	}
	if s.fwDrops != nil {
		fd, err := s.fwDrops()
		if err != nil {
			return out, err
		}
		for _, f := range fd {
			out = append(out, metering.Drop{Department: n.department(f.Department), Reason: f.Reason, Packets: f.Packets})
		}
	}
	if s.lbDrops == nil {
		return out, nil
	}
	ld, err := s.lbDrops()
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
		sc := metering.ServiceCounter{Service: v.Addr.String(), Bytes: c.Bytes, Packets: c.Packets, Connections: c.Conns}
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

// agentUsageReporter reports the host's traffic totals to the controller's usage ledger (for
// the agent command to run next to the agent; see metering.Reporter). Its epoch is the boot
// and the inode of the pinned counter map: both change exactly when the counters restart
// from zero, and neither changes when the agent is restarted or killed.
func agentUsageReporter(a *agent.Agent, dp *agentDataplane, host string, c *metering.Client) *metering.Reporter {
	ts := &trunkSource{tr: dp.hn.Trunk(), desired: (&agentSources{a: a}).desiredState}
	return &metering.Reporter{
		Host:   host,
		Source: metering.SourceNetwork,
		Epoch: func() string {
			return counterEpoch(filepath.Join(dp.hn.Trunk().PinPath(), bpfobj.TrunkMapTrunkStats))
		},
		Samples: func() ([]metering.Sample, error) {
			tr, err := ts.Traffic()
			return metering.TrafficSamples(tr), err
		},
		Send: c.Report,
	}
}

// counterEpoch names the life of a pinned map: boot id and the pin's inode.
func counterEpoch(pin string) string {
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

// computeMetrics is the compute agent's /metrics handler (govcloud_vm_vcpu_seconds_total,
// govcloud_volume_allocated_bytes).
func computeMetrics(ctx context.Context, p compute.Provider, host string) http.Handler {
	return metering.Handler(metering.NewCollector(metering.Sources{Host: host, Compute: computeSource{p: p, ctx: ctx}}, nil))
}

// computeSamples turns a provider's usage into ledger samples: vCPU-seconds as per-VM
// counters (a restarted VM starts again from zero on its own), memory and volumes as levels
// the ledger integrates over time.
func computeSamples(us []compute.Usage) []metering.Sample {
	out := make([]metering.Sample, 0, 3*len(us))
	for _, u := range us {
		out = append(out,
			metering.Sample{Department: u.Department, Resource: metering.ResVCPUSeconds, Item: u.VM, Total: uint64(u.VCPUSeconds)},
			metering.Sample{Department: u.Department, Resource: metering.ResMemoryMiBSeconds, Item: u.VM, Gauge: true, Level: u.MemoryBytes >> 20},
			metering.Sample{Department: u.Department, Resource: metering.ResVolumeGiBSeconds, Item: u.VM, Gauge: true, Level: (u.VolumeBytes + 1<<30 - 1) >> 30})
	}
	return out
}

// computeUsageReporter reports a compute host's VM usage to the ledger as host's compute
// source (the host its agent token or certificate names; the ledger keeps its state apart from
// the network agent's). The epoch is constant: vCPU time is a per-VM counter whose restarts the
// ledger sees per VM.
func computeUsageReporter(ctx context.Context, p compute.Provider, host string, c *metering.Client) *metering.Reporter {
	src := computeSource{p: p, ctx: ctx}
	return &metering.Reporter{
		Host:   host,
		Source: metering.SourceCompute,
		Epoch:  func() string { return "compute" },
		Samples: func() ([]metering.Sample, error) {
			us, err := src.usage()
			return computeSamples(us), err
		},
		Send: c.Report,
	}
}
