package hostsource

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/govcloud/govcloud/agent"
	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/dataplane/hostnet"
	"github.com/govcloud/govcloud/dataplane/lbmap"
	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/dataplane/trunk"
	tt "github.com/govcloud/govcloud/dataplane/trunk/trunktest"
	"github.com/govcloud/govcloud/dataplane/viproute"
	"github.com/govcloud/govcloud/metering"
)

// skbCtx is the settable prefix of struct __sk_buff up to ifindex.
type skbCtx struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto, Priority, IngressIfindex, Ifindex uint32
}

var (
	macA = tt.MAC("02:00:00:00:00:0a")
	macB = tt.MAC("02:00:00:00:00:0b")
	ipA  = netip.MustParseAddr("198.18.20.10")
	ipB  = netip.MustParseAddr("198.18.20.11")
)

// trunkFrames runs n segment->trunk frames of txSize bytes and n trunk->segment frames of
// rxSize bytes for VLAN vlan through the loaded programs. Loopback (ifindex 1) stands in for
// the segment port: BPF_PROG_TEST_RUN needs an existing interface and sends nothing.
func trunkFrames(tr *trunk.Trunk, vlan uint16, n, txSize, rxSize int) error {
	tx := tt.Pad(tt.UDPFrame(macB, macA, ipA, ipB, 1, 2, nil), txSize)
	rx := tt.Tag(tt.Pad(tt.UDPFrame(macA, macB, ipB, ipA, 2, 1, nil), rxSize), tt.Ether8021Q, vlan)
	for i := 0; i < n; i++ {
		for _, c := range []struct {
			p  *ebpf.Program
			in []byte
		}{{tr.FromSegment(), tx}, {tr.FromUplink(), rx}} {
			out := make([]byte, len(c.in)+64)
			ret, err := c.p.Run(&ebpf.RunOptions{Data: c.in, DataOut: out, Context: skbCtx{Ifindex: 1}})
			if err != nil {
				return err
			}
			if ret != 7 { // TC_ACT_REDIRECT: forwarded, and so counted
				return fmt.Errorf("verdict %#x, want redirect", ret)
			}
		}
	}
	return nil
}

var testDesired = &desired.State{
	Departments: []desired.Department{{Name: "lands", TableID: 3}, {Name: "health", TableID: 4}},
	Segments: []desired.Segment{{Name: "lands-web", Department: "lands", VLAN: 120}, {Name: "health-db", Department: "health", VLAN: 130},
		{Name: "health-idle", Department: "health", VLAN: 140}},
}

func scrapeTrunk(t *testing.T, tr *trunk.Trunk) map[string]float64 {
	t.Helper()
	return scrape(t, &Trunk{Trunk: tr, Desired: func() *desired.State { return testDesired }})
}

func scrape(t *testing.T, ts *Trunk) map[string]float64 {
	t.Helper()
	c := metering.NewCollector(metering.Sources{Host: "h1", Traffic: ts}, nil)
	srv := httptest.NewServer(metering.Handler(c))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "#") || l == "" {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		out[l[:i]] = v
	}
	return out
}

func series(name, dept, seg, dir string) string {
	return fmt.Sprintf(`%s{department=%q,direction=%q,host="h1",segment=%q}`, name, dept, dir, seg)
}

func checkTrunk(t *testing.T, got map[string]float64, want map[[3]string][2]float64) {
	t.Helper()
	for k, w := range want {
		if g := got[series(metering.MetricDeptPackets, k[0], k[1], k[2])]; g != w[0] {
			t.Errorf("packets %v = %v, want %v", k, g, w[0])
		}
		if g, ok := got[series(metering.MetricDeptBytes, k[0], k[1], k[2])]; !ok || g != w[1] {
			t.Errorf("bytes %v = %v (present %v), want %v", k, g, ok, w[1])
		}
	}
}

// TestFirewallDropsReachMetrics: the host firewall's drops (per department id and reason)
// are govcloud_department_drops_total by department name, segment "", department "" for
// unattributable ones.
func TestFirewallDropsReachMetrics(t *testing.T) {
	netnstest.RequirePrivileged(t)
	tr, err := trunk.Load(filepath.Join(tt.BPFFS(t), "trunk"))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	fw := []hostnet.Drop{{Department: 3, Reason: "to_management", Packets: 5, Bytes: 500}, {Department: 4, Reason: "from_fabric", Packets: 2},
		{Department: 0, Reason: "tunnel", Packets: 7}}
	got := scrape(t, &Trunk{Trunk: tr, Desired: func() *desired.State { return testDesired }, FirewallDrops: func() ([]hostnet.Drop, error) { return fw, nil }})
	for k, want := range map[[2]string]float64{{"lands", "to_management"}: 5, {"health", "from_fabric"}: 2, {"", "tunnel"}: 7} {
		name := fmt.Sprintf(`%s{department=%q,host="h1",reason=%q,segment=""}`, metering.MetricDeptDrops, k[0], k[1])
		if g, ok := got[name]; !ok || g != want {
			t.Errorf("%s = %v (present %v), want %v", name, g, ok, want)
		}
	}
}

// TestTrunkMeteringExact sends known frames through the real trunk programs, from this
// process and from a child "agent" killed with SIGKILL mid-way, and checks that /metrics
// reports exactly the packets and bytes sent, by department name, across the kill and a
// reload of the pinned maps.
func TestTrunkMeteringExact(t *testing.T) {
	netnstest.RequirePrivileged(t)
	dir := filepath.Join(tt.BPFFS(t), "trunk")
	tr, err := trunk.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []trunk.Segment{{VLAN: 120, Ifindex: 1, Department: 3, ID: 120}, {VLAN: 130, Ifindex: 99, Department: 4, ID: 130}} {
		if err := tr.SetSegment(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.SetUplink(1); err != nil {
		t.Fatal(err)
	}
	// Before any traffic: every configured segment is there at 0, the idle one included.
	checkTrunk(t, scrapeTrunk(t, tr), map[[3]string][2]float64{
		{"lands", "lands-web", "tx"}: {0, 0}, {"health", "health-idle", "rx"}: {0, 0}})

	// Frames from this process (VLAN 120 only: a segment port carries one VLAN at a time).
	if err := trunkFrames(tr, 120, 1000, 100, 300); err != nil {
		t.Fatal(err)
	}
	checkTrunk(t, scrapeTrunk(t, tr), map[[3]string][2]float64{
		{"lands", "lands-web", "tx"}: {1000, 100_000}, {"lands", "lands-web", "rx"}: {1000, 300_000},
		{"health", "health-db", "tx"}: {0, 0}})
	epoch := CounterEpoch(filepath.Join(dir, "trunk_stats"))
	tr.Close()

	// A child agent loads the pinned maps, counts 777 more frames, says so and is killed -9.
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), meteringChildEnv+"="+dir)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	sent := false
	deadline := time.AfterFunc(30*time.Second, func() { _ = cmd.Process.Kill() })
	for sc.Scan() {
		if strings.Contains(sc.Text(), "CHILD-SENT") {
			sent = true
			break
		}
	}
	deadline.Stop()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if !sent {
		t.Fatal("child agent did not send its frames")
	}

	// The restarted agent: reload the pinned maps and read everything, then count more.
	tr2, err := trunk.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer tr2.Close()
	if err := trunkFrames(tr2, 120, 23, 100, 300); err != nil {
		t.Fatal(err)
	}
	if err := tr2.SetSegment(trunk.Segment{VLAN: 120, Ifindex: 2, Department: 3, ID: 120}); err != nil {
		t.Fatal(err)
	}
	if err := tr2.SetSegment(trunk.Segment{VLAN: 130, Ifindex: 1, Department: 4, ID: 130}); err != nil {
		t.Fatal(err)
	}
	if err := trunkFrames(tr2, 130, 5, 64, 1500); err != nil {
		t.Fatal(err)
	}
	if e := CounterEpoch(filepath.Join(dir, "trunk_stats")); e != epoch {
		t.Errorf("counter epoch changed across a kill -9 and reload: %s -> %s", epoch, e)
	}
	n := 1000.0 + 777 + 23
	checkTrunk(t, scrapeTrunk(t, tr2), map[[3]string][2]float64{
		{"lands", "lands-web", "tx"}: {n, n * 100}, {"lands", "lands-web", "rx"}: {n, n * 300},
		{"health", "health-db", "tx"}: {5, 5 * 64}, {"health", "health-db", "rx"}: {5, 5 * 1500},
		{"health", "health-idle", "tx"}: {0, 0}})
}

// meteringChildEnv makes the test binary the child agent of TestTrunkMeteringExact (see TestMain).
const meteringChildEnv = "GOVCLOUD_METERING_CHILD"

// trunkChild loads the pinned trunk maps in dir, counts 777 frames, says so and waits to be
// killed -9.
func trunkChild(dir string) int {
	tr, err := trunk.Load(dir)
	if err == nil {
		err = trunkFrames(tr, 120, 777, 100, 300)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child agent:", err)
		return 1
	}
	fmt.Println("CHILD-SENT")
	time.Sleep(time.Minute) // killed -9 here
	return 0
}

// TestCounterEpochChangesWithTheMaps: recreated maps (counters from zero) are a new epoch.
func TestCounterEpochChangesWithTheMaps(t *testing.T) {
	netnstest.RequirePrivileged(t)
	dir := filepath.Join(tt.BPFFS(t), "trunk")
	tr, err := trunk.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	e1 := CounterEpoch(filepath.Join(dir, "trunk_stats"))
	if err := tr.Unpin(); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	tr2, err := trunk.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer tr2.Close()
	if e2 := CounterEpoch(filepath.Join(dir, "trunk_stats")); e2 == e1 || strings.HasSuffix(e2, "/0") {
		t.Fatalf("epoch %s after the maps were recreated, was %s", e2, e1)
	}
}

// TestAgentMetricsRealAgent opens a real agent (in its own namespace, on a private bpffs)
// and scrapes its /metrics: every source reads without error, and a segment programmed on
// the agent's trunk has its series at 0 before any traffic.
func TestAgentMetricsRealAgent(t *testing.T) {
	netnstest.RequirePrivileged(t)
	ns := netnstest.New(t, "gct-meter")
	pins := tt.BPFFS(t)
	var (
		a  *agent.Agent
		hn *hostnet.Host
		lb *lbmap.Dataplane
	)
	if err := ns.Do(func() error {
		var err error
		if hn, err = hostnet.New(hostnet.Config{PinPath: filepath.Join(pins, "trunk"), StateDir: t.TempDir()}); err != nil {
			return err
		}
		if lb, err = lbmap.Load(lbmap.Options{PinPath: filepath.Join(pins, "lb")}); err != nil {
			return errors.Join(err, hn.Close())
		}
		routes, err := viproute.Open(nil)
		if err != nil {
			return errors.Join(err, lb.Close(), hn.Close())
		}
		if a, err = agent.New(agent.Config{Host: "host1", HostNet: hn, LB: lb, Routes: routes}); err != nil {
			return errors.Join(err, routes.Close(), lb.Close(), hn.Close())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ns.Do(a.Close) })
	if err := hn.Trunk().SetSegment(trunk.Segment{VLAN: 120, Ifindex: 1, Department: 3, ID: 120}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Network(a, hn, lb, "host1"))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	out := string(b)
	// Without a desired state (the agent has not run) counters are labelled by their ids.
	dept, seg := "dept3", "vlan120"
	for _, want := range []string{
		`govcloud_metering_source_up{host="host1",source="traffic"} 1`,
		`govcloud_metering_source_up{host="host1",source="service"} 1`,
		`govcloud_metering_source_up{host="host1",source="bgp"} 1`,
		`govcloud_department_drops_total{department="",host="host1",reason="lb_no_backend",segment=""} 0`,
		// Tunnels the decapsulation checks refuse (bpf/lb/decap.h, issue 20).
		`govcloud_department_drops_total{department="",host="host1",reason="lb_decap_fragment",segment=""} 0`,
		`govcloud_department_drops_total{department="",host="host1",reason="lb_decap_source",segment=""} 0`,
		`govcloud_department_drops_total{department="",host="host1",reason="lb_decap_malformed",segment=""} 0`,
		`govcloud_department_drops_total{department="",host="host1",reason="lb_decap_not_local_vip",segment=""} 0`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %s in\n%s", want, out)
		}
	}
	for _, dir := range []string{"rx", "tx"} {
		if want := fmt.Sprintf(`govcloud_department_bytes_total{department=%q,direction=%q,host="host1",segment=%q} 0`, dept, dir, seg); !strings.Contains(out, want) {
			t.Errorf("missing %s in\n%s", want, out)
		}
	}
}

func TestMain(m *testing.M) {
	if dir := os.Getenv(meteringChildEnv); dir != "" {
		os.Exit(trunkChild(dir))
	}
	os.Exit(m.Run())
}

// TestKnownTraffic: the network reporter sends only the traffic of segments the desired state
// names (a deleted segment's counters, named by VLAN, made the controller refuse every
// report); rows: a named segment, a deleted segment (vlan121), a deleted department's segment,
// another department's name on a segment, and no desired state yet.
func TestKnownTraffic(t *testing.T) {
	st := &desired.State{Segments: []desired.Segment{{Name: "lands-web", Department: "lands", VLAN: 120}, {Name: "health-web", Department: "health", VLAN: 130}}}
	tr := []metering.Traffic{
		{Department: "lands", Segment: "lands-web", Direction: "rx", Bytes: 1},
		{Department: "lands", Segment: "vlan121", Direction: "rx", Bytes: 2},
		{Department: "dept1002", Segment: "vlan140", Direction: "tx", Bytes: 4},
		{Department: "health", Segment: "lands-web", Direction: "tx", Bytes: 8},
		{Department: "health", Segment: "health-web", Direction: "tx", Bytes: 16},
	}
	sum := func(tr []metering.Traffic) (n uint64) {
		for _, x := range tr {
			n += x.Bytes
		}
		return n
	}
	if got := sum(KnownTraffic(tr, st)); got != 1+16 {
		t.Errorf("known traffic: %d bytes (each row a power of two), want %d (lands-web and health-web only)", got, 1+16)
	}
	if got := sum(KnownTraffic(tr, nil)); got != 31 {
		t.Errorf("no desired state: %d bytes kept, want all 31", got)
	}
}
