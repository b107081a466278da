package lab

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// Issue 22: 'lab up' printed the faults of waits that then succeeded (multi-line, unindented).
// A wait that succeeds prints only its progress; a wait that times out returns the reason,
// indented.
func TestWaitPrintsOnlyProgressAndRealErrors(t *testing.T) {
	defer func(p, r time.Duration) { waitProgress, waitReason = p, r }(waitProgress, waitReason)
	waitProgress, waitReason = 300*time.Millisecond, time.Second
	fault := errors.New("gc-host1 not ready: host network: guest port gv1 missing\nsecond line of the fault")
	var out bytes.Buffer
	l := &Lab{out: &out}
	n := 0
	err := l.waitFor(context.Background(), "hosts report ready", 10*time.Second, func() error {
		if n++; n < 4 { // about 0.6 s of a transient fault
			return fault
		}
		return nil
	})
	if err != nil || strings.Contains(out.String(), "guest port") || !strings.Contains(out.String(), "   hosts report ready: ok (") {
		t.Fatalf("a wait that succeeds printed %q (err %v)", out.String(), err)
	}
	if got := strings.Count(out.String(), "\n"); got > 3 {
		t.Errorf("%d lines for a 0.6 s wait:\n%s", got, out.String())
	}

	out.Reset()
	err = l.waitFor(context.Background(), "hosts report ready", 1500*time.Millisecond, func() error { return fault })
	if err == nil || !strings.Contains(err.Error(), "guest port gv1 missing\n    second line of the fault") {
		t.Fatalf("timeout error %q: want the reason with its second line indented", err)
	}
	for _, l := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
		if !strings.HasPrefix(l, "   hosts report ready: waiting (") || strings.Contains(l, "second line") {
			t.Errorf("progress line %q", l)
		}
	}
}
