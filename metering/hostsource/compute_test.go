package hostsource

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/metering"
)

// TestComputeMetering: the compute provider's usage reaches /metrics and, through the
// reporter, the ledger (memory and volume levels integrated over time).
func TestComputeMetering(t *testing.T) {
	ctx := context.Background()
	p := compute.NewFake()
	for _, s := range []compute.VMSpec{
		{Name: "lands-web-1", Department: "lands", VCPUs: 2, MemoryMiB: 2048, Volumes: []compute.VolumeSpec{{Name: "lands-data", SizeGiB: 8}, {Name: "lands-logs", SizeGiB: 2}}},
		{Name: "health-db-1", Department: "health", VCPUs: 1, MemoryMiB: 1024},
	} {
		if _, err := p.Ensure(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(Compute(ctx, p, "h1"))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`govcloud_vm_vcpu_seconds_total{department="lands",host="h1",vm="lands-web-1"} 0`,
		// One series per volume, named by the volume (not the VM).
		`govcloud_volume_allocated_bytes{department="lands",host="h1",volume="lands-data"} 8.589934592e+09`,
		`govcloud_volume_allocated_bytes{department="lands",host="h1",volume="lands-logs"} 2.147483648e+09`,
		`govcloud_metering_source_up{host="h1",source="compute"} 1`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("missing %s in\n%s", want, b)
		}
	}

	l := metering.NewLedger(metering.NewMemKV())
	r := ComputeReporter(ctx, p, "h1", nil)
	r.Send = l.Record
	at := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	l.Now = func() time.Time { return at }
	r.Now = func() time.Time { return at }
	for i := 0; i < 3; i++ { // three reports an hour apart: two hours allocated
		o, err := r.Once(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 && !o.Baseline {
			t.Errorf("first report %+v, want the baseline", o)
		}
		at = at.Add(time.Hour)
	}
	u, _ := l.Usage(ctx, "2026-11")
	if got, want := u["lands"][metering.ResMemoryMiBSeconds], uint64(2048*7200); got != want {
		t.Errorf("lands memory %d MiB-seconds, want %d", got, want)
	}
	if got, want := u["lands"][metering.ResVolumeGiBSeconds], uint64(10*7200); got != want {
		t.Errorf("lands volume %d GiB-seconds, want %d", got, want)
	}
	if got, want := u["health"][metering.ResMemoryMiBSeconds], uint64(1024*7200); got != want {
		t.Errorf("health memory %d MiB-seconds, want %d", got, want)
	}
}
