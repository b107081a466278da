package metering

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestLedgerClosedMonths: a month closes an hour after the next began; nothing is ever added to
// a closed month, neither by a report dated in it nor by levels held across it, and a host
// silent for months writes at most the open months' keys.
func TestLedgerClosedMonths(t *testing.T) {
	ctx := context.Background()
	kv := NewMemKV()
	l := NewLedger(kv)
	now := time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC)
	l.Now = func() time.Time { return now }
	l.Limits.ClockSkew = 1000 * 24 * time.Hour // only the closed-month rule decides here
	vm := PlacedVM{Department: "lands", VCPUs: 2, MemoryMiB: 1024}
	l.Placement = StaticPlacement{"h1": {Departments: map[string]bool{"lands": true}, Segments: map[string]bool{"lands": true}, VMs: map[string]PlacedVM{"vm1": vm}}}
	rep := func(seq uint64, at time.Time, level uint64) Report {
		return Report{Host: "h1", Source: SourceCompute, Epoch: "e", Seq: seq, PrevSeq: seq - 1, Time: at,
			Samples: []Sample{{Department: "lands", Resource: ResMemoryMiBSeconds, Item: "vm1", Gauge: true, Level: level}}}
	}
	if _, err := l.Record(ctx, rep(1, time.Date(2026, 8, 31, 23, 0, 0, 0, time.UTC), 1024)); err == nil || !strings.Contains(err.Error(), "month 2026-08 is closed") {
		t.Fatalf("report into august: %v", err)
	}
	mustRecord(t, l, rep(1, time.Date(2026, 11, 30, 22, 0, 0, 0, time.UTC), 1024))
	// December 1st 00:30: november is still open (grace), then closes at 01:00.
	now = time.Date(2026, 12, 1, 0, 30, 0, 0, time.UTC)
	mustRecord(t, l, rep(2, now, 1024))
	now = time.Date(2026, 12, 1, 1, 0, 0, 0, time.UTC)
	if _, err := l.Record(ctx, rep(3, time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC), 1024)); err == nil {
		t.Fatal("report dated in november accepted after it closed")
	} else if re := (*RefusedError)(nil); !errors.As(err, &re) || re.Reason != ReasonClosedMonth || re.Field != "time" {
		t.Fatalf("closed month refusal: %v", err)
	}
	// Silent until late february: the level held through december, january and february, but
	// only february (open) is billed; december and january closed meanwhile.
	now = time.Date(2027, 2, 10, 0, 0, 0, 0, time.UTC)
	before := len(kv.data)
	mustRecord(t, l, rep(3, now, 1024))
	if n := len(kv.data) - before; n != 9 { // february 1st to 9th, a key a day; the reporter key existed
		t.Errorf("%d new keys, want 9", n)
	}
	u11, _ := l.Usage(ctx, "2026-11")
	u12, _ := l.Usage(ctx, "2026-12")
	u01, _ := l.Usage(ctx, "2027-01")
	u02, _ := l.Usage(ctx, "2027-02")
	if got, want := u11["lands"][ResMemoryMiBSeconds], uint64(1024*7200); got != want {
		t.Errorf("november %d, want %d", got, want)
	}
	if got, want := u12["lands"][ResMemoryMiBSeconds], uint64(1024*1800); got != want { // only up to the report at 00:30
		t.Errorf("december %d, want %d (what was reported while it was open)", got, want)
	}
	if len(u01) != 0 {
		t.Errorf("january, closed before anything was reported: %v", u01)
	}
	if got, want := u02["lands"][ResMemoryMiBSeconds], uint64(1024*9*86400); got != want {
		t.Errorf("february %d, want %d", got, want)
	}
}

// TestLedgerBounds: sums never wrap, kept series are bounded and follow placement, and the
// refusals of the unit level name field and value.
func TestLedgerBounds(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	hp := &HostPlacement{Departments: map[string]bool{"lands": true, "health": true}, Segments: map[string]bool{"lands": true, "health": true}, VMs: map[string]PlacedVM{}}
	kv := NewMemKV()
	l := NewLedger(kv)
	l.Now = func() time.Time { return at }
	l.Placement = StaticPlacement{"h1": hp}
	l.Limits.MaxBitRate = 1 << 62 // let growth through, to reach the 64-bit sum
	seq := uint64(0)
	rep := func(samples ...Sample) Report {
		seq++
		return Report{Host: "h1", Source: SourceNetwork, Epoch: "e", Seq: seq, PrevSeq: seq - 1, Time: at, Samples: samples}
	}
	mustRecord(t, l, rep(Sample{Department: "lands", Resource: ResNetTxBytes, Total: 0}))
	at = at.Add(time.Hour)
	mustRecord(t, l, rep(Sample{Department: "lands", Resource: ResNetTxBytes, Total: 1<<64 - 10}))
	at = at.Add(2 * time.Hour)
	// A new series whose delta would wrap the month's sum of network_tx_bytes? Different
	// department: its own sum. The same department through a new epoch:
	r := rep(Sample{Department: "lands", Resource: ResNetTxBytes, Total: 100})
	r.Epoch = "e2"
	_, err := l.Record(ctx, r)
	var re *RefusedError
	if !errors.As(err, &re) || re.Reason != ReasonOverflow {
		t.Fatalf("wrapping sum: %v", err)
	}
	if u, _ := l.Usage(ctx, "2026-11"); u["lands"][ResNetTxBytes] != 1<<64-10 {
		t.Fatalf("usage after a refused wrap: %v", u)
	}

	// Series of a department no longer on the host are dropped from the reporter's state.
	hp.Segments["health"] = true
	mustRecord(t, l, rep(Sample{Department: "health", Resource: ResNetRxBytes, Total: 5}))
	delete(hp.Segments, "health")
	at = at.Add(time.Minute)
	mustRecord(t, l, rep())
	st := string(kv.data[l.reporterKey("h1", SourceNetwork)].Value)
	if strings.Contains(st, "health") || !strings.Contains(st, "lands/network_tx_bytes/") {
		t.Errorf("reporter state %s, want lands only", st)
	}

	// Unit-level refusals name field and value.
	l.Limits.MaxSamples = 3
	for _, tc := range []struct {
		r    Report
		want string
	}{
		{rep(Sample{Department: "lands", Resource: ResNetTxBytes}, Sample{Department: "lands", Resource: ResNetRxBytes}, Sample{Department: "health", Resource: ResNetRxBytes}, Sample{Department: "health", Resource: ResNetTxBytes}), `samples "4": at most 3 samples per report`},
		{rep(Sample{Department: "", Resource: ResNetTxBytes}), `samples[0].department "": required`},
		{rep(Sample{Department: "lands web", Resource: ResNetTxBytes}), `samples[0].department "lands web"`},
		{rep(Sample{Department: "lands", Resource: ResNetTxBytes, Item: "bad name"}), `samples[0].item "bad name"`},
		{Report{Host: "h1/x", Source: SourceNetwork, Seq: 1, Time: at}, `host "h1/x"`},
		{Report{Host: "h9", Source: SourceNetwork, Seq: 1, Time: at}, `host "h9": no such host`},
		{Report{Host: "h1", Source: SourceCompute, Seq: 1, Time: at, Samples: []Sample{{Department: "lands", Resource: ResVCPUSeconds}}}, `samples[0].item "": required (the VM the sample is of)`},
	} {
		_, err := l.Record(ctx, tc.r)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %s", tc.r, err, tc.want)
		}
	}
	l.Limits.MaxSamples = 0

	// The series a reporter keeps are bounded even when every one stays placed.
	l2 := NewLedger(NewMemKV())
	l2.Now = func() time.Time { return at }
	l2.Limits.MaxSeries = 8
	seq2 := uint64(0)
	for i := 0; i < 5; i++ {
		seq2++
		var ss []Sample
		for j := 0; j < 4; j++ {
			ss = append(ss, Sample{Department: fmt.Sprintf("d%d", i*4+j), Resource: ResNetTxBytes})
		}
		mustRecord(t, l2, Report{Host: "h1", Source: SourceNetwork, Epoch: "e", Seq: seq2, PrevSeq: seq2 - 1, Time: at, Samples: ss})
	}
	if n := strings.Count(string(l2.store.(*MemKV).data[l2.reporterKey("h1", SourceNetwork)].Value), "network_tx_bytes"); n > 8 {
		t.Errorf("reporter keeps %d series, want at most 8", n)
	}
}
