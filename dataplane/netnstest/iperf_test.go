package netnstest

import (
	"math"
	"strings"
	"testing"
)

func TestIperfIntervals(t *testing.T) {
	got, err := IperfIntervals([]byte(`{"intervals": [{"sum": {"bits_per_second": 1e8}}, {"sum": {"bits_per_second": 2e8}}, {"sum": {"bits_per_second": 3e8}}]}`))
	if err != nil || len(got) != 3 || got[1] != 2e8 {
		t.Fatalf("intervals %v, %v", got, err)
	}
	if m := MeanMbps(got, 1, 3); m != 250 {
		t.Fatalf("mean of the last two %v Mbit/s, want 250", m)
	}
	if m := MeanMbps(got, 2, 9); m != 300 {
		t.Fatalf("mean past the end %v, want 300 (clipped)", m)
	}
	if !math.IsNaN(MeanMbps(got, 3, 3)) {
		t.Fatal("mean of nothing is not NaN")
	}
	for _, c := range []struct {
		name   string
		mbps   []float64
		quota  float64
		ok     bool
		median float64
	}{
		{"at the quota", []float64{100, 95, 105, 98, 102}, 100, true, 100},
		{"one stalled second", []float64{205, 160, 221, 186, 159, 205, 213, 191, 51, 190}, 200, true, 190.5},
		{"over the quota", []float64{130, 125, 120, 118}, 100, false, 122.5},
		{"under the quota", []float64{70, 75, 80, 82, 84}, 100, false, 80},
		{"a burst above, mean held", []float64{150, 95, 95, 95, 95, 95}, 100, true, 95},
	} {
		xs := make([]float64, len(c.mbps))
		for i, m := range c.mbps {
			xs[i] = m * 1e6
		}
		_, med, err := HeldAt(xs, 0, len(xs), c.quota)
		if (err == nil) != c.ok || med != c.median {
			t.Errorf("%s: median %v, %v; want median %v, ok %v", c.name, med, err, c.median, c.ok)
		}
	}
	if _, _, err := HeldAt(nil, 0, 5, 100); err == nil {
		t.Error("no intervals judged held")
	}
	for _, bad := range []string{`{"error": "unable to connect to server"}`, `not json`} {
		if _, err := IperfIntervals([]byte(bad)); err == nil || (strings.HasPrefix(bad, "{") && !strings.Contains(err.Error(), "unable to connect")) {
			t.Errorf("%s: error %v", bad, err)
		}
	}
}
