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
	for _, bad := range []string{`{"error": "unable to connect to server"}`, `not json`} {
		if _, err := IperfIntervals([]byte(bad)); err == nil || (strings.HasPrefix(bad, "{") && !strings.Contains(err.Error(), "unable to connect")) {
			t.Errorf("%s: error %v", bad, err)
		}
	}
}
