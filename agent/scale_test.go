package agent

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/controlplane/lbtables"
	"github.com/govcloud/govcloud/dataplane/lbmap"
	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/lb"
)

// The scale lab's desired state (issue 21) without the lab: 30 departments x 4 segments x 10
// public dsr services on 8 hosts, one VM per segment placed round-robin, each service's one
// backend that VM; host h's view of it.
const (
	scaleHosts    = 8
	scaleDepts    = 30
	scaleSegs     = 4
	scaleServices = 10
)

func scaleState(self int, rev int64) *desired.State {
	hostName := func(i int) string { return fmt.Sprintf("h%d", i+1) }
	hostAddr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(11 + i)}) }
	hc := &desired.HealthCheck{Type: "tcp", IntervalMs: 1000, TimeoutMs: 500, HealthyThreshold: 2, UnhealthyThreshold: 2}
	st := &desired.State{Host: hostName(self), Revision: rev, Uplink: "eth0", Address: hostAddr(self), Hosts: map[string]netip.Addr{},
		BGP: &desired.BGP{ASN: uint32(65101 + self), Peers: []desired.Peer{{Address: netip.MustParseAddr("198.18.0.1"), ASN: 65000}}}}
	for i := range scaleHosts {
		st.Hosts[hostName(i)] = hostAddr(i)
	}
	for d := range scaleDepts {
		dept := fmt.Sprintf("scale%02d", d)
		table := 2000 + d
		st.Departments = append(st.Departments, desired.Department{Name: dept, TableID: table})
		for s := range scaleSegs {
			n := d*scaleSegs + s
			seg := fmt.Sprintf("%s-s%d", dept, s)
			vm := seg + "-vm"
			vlan := 200 + n
			prefix := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(100 + n), 0}), 24)
			gw := netip.AddrFrom4([4]byte{198, 18, byte(100 + n), 1})
			addr := netip.AddrFrom4([4]byte{198, 18, byte(100 + n), 2})
			on := n % scaleHosts
			st.Segments = append(st.Segments, desired.Segment{Name: seg, Department: dept, VLAN: vlan, Prefix4: prefix, Gateway4: gw, TableID: table})
			if on == self {
				st.VMs = append(st.VMs, desired.VM{Name: vm, Department: dept, VCPUs: 1, MemoryMiB: 64, Interfaces: []desired.Interface{{Segment: seg, VLAN: vlan,
					MAC: fmt.Sprintf("02:00:00:00:%02x:02", n), Prefix4: netip.PrefixFrom(addr, 24), Gateway4: gw}}})
			} else {
				st.RemoteGuests = append(st.RemoteGuests, desired.RemoteGuest{VM: vm, Host: hostName(on), Segment: seg, MAC: fmt.Sprintf("02:00:00:00:%02x:02", n), Addr4: addr})
			}
			for v := range scaleServices {
				st.Services = append(st.Services, desired.Service{Name: fmt.Sprintf("%s-svc%d", seg, v), Department: dept, Scope: "public", Mode: "dsr", TableID: table,
					VIP: netip.AddrFrom4([4]byte{198, 19, byte(d), byte(1 + s*scaleServices + v)}), HealthCheck: hc,
					Ports:    []desired.Port{{Port: 80, Protocol: "tcp", TargetPort: 80}},
					Backends: []desired.Backend{{Address: addr, Weight: 1, VM: vm, Host: hostName(on), Segment: seg}}})
			}
		}
	}
	return st
}

// scaleTables is the controller's shared tables for a desired state, built once.
type scaleTables struct {
	resp *lbtables.FetchResponse
}

func newScaleTables(tb testing.TB, st *desired.State, size uint32) *scaleTables {
	want, errs := lbtables.Desired(st)
	if len(errs) > 0 {
		tb.Fatal(errs)
	}
	resp := &lbtables.FetchResponse{Revision: st.Revision, Size: size, Tables: map[string]lb.Delta{}, Current: map[string]lbtables.Summary{}}
	for n, bs := range want {
		t, _, err := lb.NextShared(size, nil, bs, uint64(st.Revision))
		if err != nil {
			tb.Fatal(err)
		}
		resp.Tables[n] = t.DeltaSince(0)
		resp.Current[n] = lbtables.SummaryOf(t)
	}
	return &scaleTables{resp: resp}
}

func (f *scaleTables) LBTables(_ context.Context, _ string, req lbtables.FetchRequest) (*lbtables.FetchResponse, error) {
	out := &lbtables.FetchResponse{Revision: f.resp.Revision, Size: f.resp.Size, Tables: map[string]lb.Delta{}, Current: f.resp.Current}
	for n, d := range f.resp.Tables {
		if req.Have[n] != d.Generation {
			out.Tables[n] = d
		}
	}
	return out, nil
}

// benchReconcile times passes of h1 over the scale state: the first (everything new) and an
// unchanged one, which the agent repeats on every health change, peer poll and resync.
func benchReconcile(b *testing.B, newLB func(b *testing.B) LoadBalancer) {
	st := scaleState(0, 10)
	tables := newScaleTables(b, st, lb.DefaultTableSize)
	for _, tc := range []struct {
		name  string
		first bool
	}{{"first", true}, {"unchanged", false}} {
		b.Run(tc.name, func(b *testing.B) {
			var r *rig
			setup := func() {
				if r != nil {
					_ = r.a.lb.Close()
				}
				r = newRig(b, "h1", false)
				r.a.cfg.Tables = tables
				if newLB != nil {
					r.a.lb = newLB(b)
				}
			}
			setup()
			b.Cleanup(func() { _ = r.a.lb.Close() })
			if !tc.first {
				r.pass(b, st)
			}
			for b.Loop() {
				if tc.first {
					b.StopTimer()
					setup()
					b.StartTimer()
				}
				if got := r.pass(b, st); !got.Ready {
					b.Fatalf("not ready: %s", got.Error)
				}
			}
		})
	}
}

// BenchmarkReconcileScaleLB is BenchmarkReconcileScale with the real XDP load balancer's maps
// (not attached: its uplink stays the fake's): 1200 Maglev tables of 65537 slots written.
func BenchmarkReconcileScaleLB(b *testing.B) {
	netnstest.RequirePrivileged(b)
	benchReconcile(b, func(b *testing.B) LoadBalancer {
		dp, err := lbmap.Load(lbmap.Options{ConnTableSize: 1 << 16})
		if err != nil {
			b.Fatal(err)
		}
		return fakeUplink{dp}
	})
}

// fakeUplink is a real load balancer whose uplink attachment is pretended (no interface).
type fakeUplink struct{ *lbmap.Dataplane }

func (fakeUplink) AttachUplink(string) error { return nil }
func (fakeUplink) DetachUplink() error       { return nil }
func (fakeUplink) UplinkVLAN() string        { return "" }

// BenchmarkReconcileScale is one reconcile pass of host h1 over the scale state on the fakes:
// the first pass (everything new) and an unchanged pass, which the agent repeats on every
// health change, peer poll and resync.
func BenchmarkReconcileScale(b *testing.B) { benchReconcile(b, nil) }
