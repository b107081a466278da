package hostsource

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/dataplane/trunk"
	tt "github.com/govcloud/govcloud/dataplane/trunk/trunktest"
	"github.com/govcloud/govcloud/metering"
)

// TestRateLimitDropsReachMetrics: frames the guest port limiter drops are
// govcloud_department_drops_total{reason="rate_limit"} of the department and segment, in
// each direction, and nothing is charged to another department.
func TestRateLimitDropsReachMetrics(t *testing.T) {
	netnstest.RequirePrivileged(t)
	tr, err := trunk.Load(filepath.Join(tt.BPFFS(t), "trunk"))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	// lands (id 3) on lands-web (120): a bucket of 1000 bytes refilled at 100 B/s.
	if err := tr.SetRate(3, trunk.Rate{BitsPerSecond: 800, BurstBytes: 1000}); err != nil {
		t.Fatal(err)
	}
	if err := tr.SetGuest(1, trunk.GuestPort{Department: 3, Segment: 120}); err != nil {
		t.Fatal(err)
	}
	frame := tt.Pad(tt.UDPFrame(macB, macA, ipA, ipB, 1, 2, nil), 100)
	for _, c := range []struct {
		p    *ebpf.Program
		n    int
		pass int
	}{{tr.GuestTX(), 14, 10}, {tr.GuestRX(), 17, 10}} {
		passed := 0
		for range c.n {
			ret, err := c.p.Run(&ebpf.RunOptions{Data: frame, DataOut: make([]byte, 200), Context: skbCtx{Ifindex: 1}})
			if err != nil {
				t.Fatal(err)
			}
			if ret == 0xffffffff {
				passed++
			}
		}
		if passed != c.pass {
			t.Fatalf("%d of %d frames passed, want %d", passed, c.n, c.pass)
		}
	}
	got := scrapeTrunk(t, tr)
	name := func(dept, seg string) string {
		return fmt.Sprintf(`%s{department=%q,host="h1",reason="rate_limit",segment=%q}`, metering.MetricDeptDrops, dept, seg)
	}
	if g, ok := got[name("lands", "lands-web")]; !ok || g != 4+7 {
		t.Errorf("%s = %v (present %v), want 11", name("lands", "lands-web"), g, ok)
	}
	// health has no drops (its zero series come with the agent's ZeroDropReasons).
	if g := got[name("health", "health-db")]; g != 0 {
		t.Errorf("%s = %v, want 0", name("health", "health-db"), g)
	}
}
