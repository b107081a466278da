package server

import (
	"testing"
	"time"
)

// govcloud patch: a negotiated hold time of 0 must not make every write time out at once.
func TestWriteDeadline(t *testing.T) {
	now := time.Unix(1000, 0)
	for _, tc := range []struct {
		name                   string
		negotiated, configured float64
		want                   time.Time
	}{
		{"negotiated 9 s", 9, 90, now.Add(9 * time.Second)},
		{"peer proposed 0: own configured hold time", 0, 90, now.Add(90 * time.Second)},
		{"both 0: no deadline", 0, 0, time.Time{}},
	} {
		if got := writeDeadline(now, tc.negotiated, tc.configured); !got.Equal(tc.want) {
			t.Errorf("%s: deadline %v, want %v", tc.name, got, tc.want)
		}
	}
}
