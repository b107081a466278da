package lab

import (
	"context"
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/dataplane/trunk"
)

// landsBandwidthYAML is lab.yaml's lands with another bandwidth quota.
const landsBandwidthYAML = `apiVersion: govcloud/v1
kind: Department
metadata: {name: lands}
spec:
  displayName: Department of Lands
  costCentre: CC-1001
  quotas: {vcpus: 8, memoryGiB: 8, storageGiB: 50, bandwidthMbps: %d}
  egress: public-vips
`

// bandwidthQuota (issue 17): lands at bandwidthMbps 100 gets 100 Mbit/s +-10% between its
// guests on the two hosts (across the trunk) while health's guests, on the same hosts at the
// same time, are not held to it; the quota raised to 200 speeds the same TCP connection up to
// 200 +-10%; the drops are govcloud_department_drops_total{reason="rate_limit"} of lands. The
// lab's quota (1000) is restored at the end.
func bandwidthQuota(t *testing.T, bin, dir string) {
	t.Helper()
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Fatal("bandwidth quota: needs iperf3 (installed by 'sudo make deps')")
	}
	ctx := context.Background()
	l, admin := openLab(t, bin, dir)
	c := l.client(admin)
	setQuota := func(mbps int) {
		t.Helper()
		if _, err := c.Apply(ctx, "lands-bandwidth.yaml", []byte(fmt.Sprintf(landsBandwidthYAML, mbps)), client.ApplyOptions{}); err != nil {
			t.Fatalf("apply lands bandwidthMbps %d: %v", mbps, err)
		}
		// Every host's kernel holds the new rate before traffic is measured against it.
		deadline := time.Now().Add(30 * time.Second)
		for _, h := range defaultHosts {
			for {
				r, err := l.landsRate(dir, h)
				if err == nil && r == uint64(mbps)*1e6 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("lands' rate on %s: %d bit/s (%v), want %d Mbit/s", h, r, err, mbps)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
	defer setQuota(1000)
	dropsBefore, err := l.scrapeByWhere("govcloud_department_drops_total", "department", `reason="rate_limit"`)
	if err != nil {
		t.Fatal(err)
	}

	setQuota(100)
	// Ten seconds each side of the change: one-second samples of a policed TCP flow swing about
	// 15% (README "Bandwidth quota"); netnstest.HeldAt judges the window.
	const secs, change = 20, 10
	// Data from web-1 (the iperf3 server) to web-2, across the trunk.
	landsAddr, _ := guestAddr(t, "gc-vm-lands-web-1")
	healthAddr, _ := guestAddr(t, "gc-vm-health-web-1")
	lands := netnstest.StartIperf(t, "gc-vm-lands-web-2", "gc-vm-lands-web-1", landsAddr, "5311", secs)
	health := netnstest.StartIperf(t, "gc-vm-health-web-2", "gc-vm-health-web-1", healthAddr, "5312", change-2)
	time.Sleep(change * time.Second)
	setQuota(200)
	hv, lv := health.Wait(t), lands.Wait(t)
	t.Logf("lands Mbit/s each second (quota 100, then 200 from second %d): %v", change, mbps(lv))
	t.Logf("health Mbit/s each second (quota 1000): %v", mbps(hv))
	if len(lv) < secs || len(hv) < change-2 {
		t.Fatalf("iperf3 reported %d and %d one-second intervals, want %d and %d", len(lv), len(hv), secs, change-2)
	}
	// Leave out the first second (slow start, full bucket) and the seconds around the change.
	before, beforeMed, errBefore := netnstest.HeldAt(lv, 1, change-1, 100)
	after, afterMed, errAfter := netnstest.HeldAt(lv, change+2, secs, 200)
	healthMbps := netnstest.MeanMbps(hv, 1, change-2)
	t.Logf("lands at 100: mean %.1f, median %.1f Mbit/s; at 200: mean %.1f, median %.1f Mbit/s (same connection); health meanwhile %.1f Mbit/s",
		before, beforeMed, after, afterMed, healthMbps)
	if errBefore != nil {
		t.Errorf("lands at bandwidthMbps 100: %v", errBefore)
	}
	if errAfter != nil {
		t.Errorf("lands' connection after bandwidthMbps went to 200: %v", errAfter)
	}
	if healthMbps < 200 {
		t.Errorf("health got %.1f Mbit/s beside lands, want >= 200 (not held to lands' 100)", healthMbps)
	}
	drops, err := l.scrapeByWhere("govcloud_department_drops_total", "department", `reason="rate_limit"`)
	if err != nil {
		t.Fatal(err)
	}
	if d := drops["lands"] - dropsBefore["lands"]; d <= 0 {
		t.Errorf("govcloud_department_drops_total{department=\"lands\",reason=\"rate_limit\"} moved by %v, want > 0 (%v)", d, drops)
	} else {
		t.Logf("rate_limit drops: lands %v, health %v", d, drops["health"]-dropsBefore["health"])
	}
}

// landsRate reads lands' limit in host h's kernel (0: none).
func (l *Lab) landsRate(dir, h string) (uint64, error) {
	tr, err := trunk.Load(filepath.Join(dir, "bpf", h, "trunk"))
	if err != nil {
		return 0, err
	}
	defer tr.Close()
	id, err := l.landsID(h)
	if err != nil {
		return 0, err
	}
	rates, err := tr.Rates()
	if err != nil {
		return 0, err
	}
	return rates[id].BitsPerSecond, nil
}

// landsID is lands' department id on host h (its routing table, as the agent uses it).
func (l *Lab) landsID(h string) (uint32, error) {
	admin, err := l.adminToken()
	if err != nil {
		return 0, err
	}
	st, err := l.client(admin).Desired(context.Background(), h, 0, time.Second)
	if err != nil || st == nil {
		return 0, fmt.Errorf("desired state of %s: %v", h, err)
	}
	for _, d := range st.Departments {
		if d.Name == "lands" {
			return uint32(d.TableID), nil
		}
	}
	return 0, fmt.Errorf("%s's desired state has no lands", h)
}

func mbps(xs []float64) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = int(math.Round(x / 1e6))
	}
	return out
}
