package compute_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/desired"
)

func clientApply() client.ApplyOptions { return client.ApplyOptions{} }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func state() *desired.State {
	return &desired.State{Host: "h1", Revision: 7,
		VMs: []desired.VM{
			{Name: "b", Department: "lands", VCPUs: 2, MemoryMiB: 512, Volumes: []string{"d1"},
				Interfaces: []desired.Interface{{Segment: "web", VLAN: 120, MAC: "02:00:00:00:00:0b", Prefix4: netip.MustParsePrefix("198.18.20.11/24"), Gateway4: netip.MustParseAddr("198.18.20.1")}}},
			{Name: "a", Department: "lands", VCPUs: 1, MemoryMiB: 256,
				Interfaces: []desired.Interface{{Segment: "web", VLAN: 120, MAC: "02:00:00:00:00:0a", Prefix4: netip.MustParsePrefix("198.18.20.10/24"), Gateway4: netip.MustParseAddr("198.18.20.1")}}},
		},
		Volumes: []desired.Volume{{Name: "d1", Department: "lands", SizeGiB: 3}},
		Services: []desired.Service{
			{Name: "www", VIP: netip.MustParseAddr("198.19.255.2"), Mode: "dsr", Backends: []desired.Backend{{VM: "b"}, {VM: "a"}}},
			{Name: "api", VIP: netip.MustParseAddr("198.19.255.1"), Mode: "dsr", Backends: []desired.Backend{{VM: "b"}}},
			{Name: "natted", VIP: netip.MustParseAddr("198.19.255.3"), Mode: "nat", Backends: []desired.Backend{{VM: "b"}}},
		},
	}
}

func TestFromDesired(t *testing.T) {
	specs, err := compute.FromDesired(state(), naming)
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 2 || specs[0].Name != "a" || specs[1].Name != "b" {
		t.Fatalf("specs %+v: want a, b sorted", specs)
	}
	n := specs[1].NICs[0]
	if n.Bridge != "gcbr120" || n.Port != naming.Port("b", "web") || n.MAC.String() != "02:00:00:00:00:0b" || n.Addr.String() != "198.18.20.11/24" || n.Gateway.String() != "198.18.20.1" {
		t.Fatalf("nic %+v", n)
	}
	if len(specs[1].Volumes) != 1 || specs[1].Volumes[0].SizeGiB != 3 {
		t.Fatalf("volumes %+v", specs[1].Volumes)
	}
	// dsr backends serve their VIPs (sorted); a nat backend does not.
	if got := specs[1].ServesText(); got != "198.19.255.1,198.19.255.2" {
		t.Fatalf("b serves %q", got)
	}
	if got := specs[0].ServesText(); got != "198.19.255.2" {
		t.Fatalf("a serves %q", got)
	}
	noVIPs := specs[1]
	noVIPs.Serves = nil
	if noVIPs.Fingerprint() != specs[1].Fingerprint() {
		t.Fatal("the VIPs a VM serves changed its fingerprint (a running VM would be replaced)")
	}

	bad := state()
	bad.VMs[0].Interfaces[0].MAC = "zz"
	bad.VMs[1].Volumes = []string{"nosuch"}
	_, err = compute.FromDesired(bad, naming)
	for _, want := range []string{`vm "b": segment "web": mac "zz"`, `vm "a": volume "nosuch"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v: want %q", err, want)
		}
	}
}

func TestReconcileWithFake(t *testing.T) {
	ctx := context.Background()
	f := compute.NewFake()
	specs, _ := compute.FromDesired(state(), naming)
	if _, err := compute.Reconcile(ctx, f, specs, quiet); err != nil {
		t.Fatal(err)
	}
	if _, err := compute.Reconcile(ctx, f, specs, quiet); err != nil {
		t.Fatal(err)
	}
	if f.Ensures != 2 {
		t.Fatalf("ensures %d after two identical passes: want 2 (idempotent)", f.Ensures)
	}
	// A changed spec replaces the VM; an unwanted one is deleted; a failing one is reported.
	specs[0].MemoryMiB = 1024
	f.Fail["b"] = errors.New("no bridge")
	st, err := compute.Reconcile(ctx, f, specs[:1], quiet)
	if err != nil || f.Ensures != 3 || f.Deletes != 1 || len(st) != 1 {
		t.Fatalf("ensures %d deletes %d status %+v err %v", f.Ensures, f.Deletes, st, err)
	}
	st, err = compute.Reconcile(ctx, f, specs, quiet)
	if err == nil || !strings.Contains(err.Error(), `vm "b"`) || st[1].State != compute.Error {
		t.Fatalf("failing vm: status %+v err %v", st, err)
	}
	us, _ := f.Usage(ctx)
	if len(us) != 1 || us[0].MemoryBytes != 1024<<20 {
		t.Fatalf("usage %+v", us)
	}
}

// A volume of the host's desired state lives on with no VM using it (detached, or its VM
// deleted): the agent keeps every desired volume, not only the attached ones.
func TestAgentKeepsDetachedVolumes(t *testing.T) {
	ctx := context.Background()
	f := compute.NewFake()
	a := &compute.Agent{Host: "h1", Provider: f, Naming: naming, Log: quiet}
	st := state()
	st.Volumes = append(st.Volumes, desired.Volume{Name: "detached", Department: "lands", SizeGiB: 1})
	a.Pass(ctx, st)
	if !f.Kept["d1"] || !f.Kept["detached"] || len(f.Kept) != 2 {
		t.Fatalf("kept %v: want d1 (attached) and detached", f.Kept)
	}
	st.VMs = nil // every VM deleted: their volumes stay while the host's state lists them
	a.Pass(ctx, st)
	if !f.Kept["d1"] || !f.Kept["detached"] {
		t.Fatalf("kept %v after the VMs' delete: want d1 and detached", f.Kept)
	}
	st.Volumes = st.Volumes[:1] // Volume "detached" deleted
	a.Pass(ctx, st)
	if f.Kept["detached"] || !f.Kept["d1"] {
		t.Fatalf("kept %v after Volume detached was deleted: want d1 only", f.Kept)
	}
	// Plain Reconcile (no desired volumes) keeps the attached ones only.
	specs, _ := compute.FromDesired(state(), naming)
	if _, err := compute.Reconcile(ctx, f, specs, quiet); err != nil || !f.Kept["d1"] || len(f.Kept) != 1 {
		t.Fatalf("Reconcile kept %v (%v): want d1", f.Kept, err)
	}
}

// powerState and restartGeneration reach the provider's spec.
func TestFromDesiredLifecycle(t *testing.T) {
	st := state()
	st.VMs[0].PowerState, st.VMs[0].RestartGeneration = "stopped", 4
	specs, err := compute.FromDesired(st, naming)
	if err != nil {
		t.Fatal(err)
	}
	if b := specs[1]; b.Name != "b" || b.PowerState != compute.PowerStopped || b.RestartGeneration != 4 || b.WantsRunning() {
		t.Fatalf("spec of b: power %q generation %d: want stopped, 4", b.PowerState, b.RestartGeneration)
	}
	if a := specs[0]; !a.WantsRunning() || a.RestartGeneration != 0 {
		t.Fatalf("spec of a: power %q generation %d: want running, 0", a.PowerState, a.RestartGeneration)
	}
}

func TestAgentPassReports(t *testing.T) {
	f := compute.NewFake()
	var got compute.Report
	a := &compute.Agent{Host: "h1", Provider: f, Naming: naming, Log: quiet, Sink: func(_ context.Context, r compute.Report) { got = r }}
	r := a.Pass(context.Background(), state())
	if r.Error != "" || got.Revision != 7 || len(got.VMs) != 2 || len(got.Usage) != 2 || got.Usage[1].VolumeBytes != 3<<30 {
		t.Fatalf("report %+v", got)
	}
}

// onceSource hands out its state once, then answers "not modified" after a short poll.
type onceSource struct {
	st   *desired.State
	sent atomic.Bool
}

func (s *onceSource) Desired(ctx context.Context, _ string, _ int64, _ time.Duration) (*desired.State, error) {
	if !s.sent.Swap(true) {
		return s.st, nil
	}
	select {
	case <-ctx.Done():
	case <-time.After(20 * time.Millisecond):
	}
	return nil, nil
}

// A VM that goes away behind the agent's back (its qemu died) is made again by the resync pass
// that follows a poll with no change.
func TestAgentResyncsWithoutChanges(t *testing.T) {
	f := compute.NewFake()
	a := &compute.Agent{Host: "h1", Source: &onceSource{st: state()}, Provider: f, Naming: naming, Log: quiet}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	has := func(vm string) bool {
		l, _ := f.List(ctx)
		return slices.ContainsFunc(l, func(s compute.VMStatus) bool { return s.Name == vm })
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s within 5s", what)
			}
		}
	}
	waitUntil("both VMs made", func() bool { return has("a") && has("b") })
	if err := f.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	waitUntil("vm a made again by a resync pass", func() bool { return has("a") })
}

// TestFromDesiredIPv6: a NIC on a dual-stack segment gets its IPv6 address and gateway6, and
// only such a NIC changes the spec's fingerprint (an IPv4-only guest made before NICs had
// IPv6 is not replaced); rows: dual-stack /64, dual-stack /120, IPv4 only.
func TestFromDesiredIPv6(t *testing.T) {
	v4only, err := compute.FromDesired(state(), naming)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, prefix6, gateway6 string
	}{
		{"/64", "2001:db8:20::a/64", "2001:db8:20::1"},
		{"/120", "2001:db8:20::a/120", "2001:db8:20::1"},
		{"IPv4 only", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := state()
			ifc := &st.VMs[1].Interfaces[0] // VM a
			if c.prefix6 != "" {
				ifc.Prefix6, ifc.Gateway6 = netip.MustParsePrefix(c.prefix6), netip.MustParseAddr(c.gateway6)
			}
			specs, err := compute.FromDesired(st, naming)
			if err != nil {
				t.Fatal(err)
			}
			n := specs[0].NICs[0]
			if got := n.Addr6.String(); c.prefix6 != "" && (got != c.prefix6 || n.Gateway6.String() != c.gateway6) {
				t.Fatalf("nic addr6 %s gateway6 %s, want %s %s", n.Addr6, n.Gateway6, c.prefix6, c.gateway6)
			}
			if c.prefix6 == "" && (n.Addr6.IsValid() || n.Gateway6.IsValid()) {
				t.Fatalf("IPv4-only nic has addr6 %s gateway6 %s", n.Addr6, n.Gateway6)
			}
			same := specs[0].Fingerprint() == v4only[0].Fingerprint()
			if same != (c.prefix6 == "") {
				t.Fatalf("fingerprint same as IPv4-only: %v\n%s\n%s", same, specs[0].Fingerprint(), v4only[0].Fingerprint())
			}
			if c.prefix6 != "" && !strings.Contains(specs[0].Fingerprint(), c.prefix6) {
				t.Fatalf("fingerprint %q does not name the IPv6 address", specs[0].Fingerprint())
			}
		})
	}
}
