package metering

import (
	"context"
	"fmt"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"
)

// cpuTime is this process's user + system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLedgerIngest prices the controller's ledger at the scale of the issue: 30
// departments x 20 hosts, each host's network agent reporting every 10 s (a segment per
// department, rx and tx: 60 samples), through the HTTP API (JSON, access rules) into an
// embedded etcd in this process, as the controller runs it. Reports are sent as fast as they
// are taken, on simulated 10 s rounds; the CPU time they cost (the process's, etcd's included)
// per 10 s round is the share of one core the controller spends at that rate (goal < 10%).
func BenchmarkLedgerIngest(b *testing.B) {
	const depts, hosts, every, rounds = 30, 20, 10 * time.Second, 15
	kv, stop := startEtcd(b, b.TempDir(), freePort(b), freePort(b))
	defer stop()
	api := &API{Ledger: NewLedgerAt(EtcdKV{C: kv}, "/bench/metering/"), Prices: DefaultPrices()}
	clock := time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
	api.Ledger.Now = func() time.Time { return clock }
	srv := httptest.NewServer(serveAs(api, Caller{Name: "bench", Role: RoleAdmin}))
	defer srv.Close()
	c := &Client{Base: srv.URL}
	ctx := context.Background()
	totals := make([]uint64, hosts)
	seq := make([]uint64, hosts)
	round := func() {
		for h := 0; h < hosts; h++ {
			totals[h] += 1 << 20
			ss := make([]Sample, 0, 2*depts)
			for d := 0; d < depts; d++ {
				dept := fmt.Sprintf("dept%02d", d)
				ss = append(ss, Sample{Department: dept, Resource: ResNetTxBytes, Item: dept + "-web", Total: totals[h] + uint64(d)},
					Sample{Department: dept, Resource: ResNetRxBytes, Item: dept + "-web", Total: 2*totals[h] + uint64(d)})
			}
			seq[h]++
			rep := Report{Host: fmt.Sprintf("host%02d", h), Source: SourceNetwork, Epoch: "e", Seq: seq[h], PrevSeq: seq[h] - 1, Time: clock, Samples: ss}
			if _, err := c.Report(ctx, rep); err != nil {
				b.Fatal(err)
			}
		}
		clock = clock.Add(every)
	}
	round() // baselines
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cpu0, wall0 := cpuTime(), time.Now()
		for r := 0; r < rounds; r++ {
			round()
		}
		cpu, wall := cpuTime()-cpu0, time.Since(wall0)
		perRound := cpu / rounds
		b.ReportMetric(100*perRound.Seconds()/every.Seconds(), "%core")
		fmt.Printf("ledger ingest: %d departments x %d hosts, a report per host every %s (%d samples each): %s CPU per round (%s wall), %.2f%% of one core (goal < 10%%)\n",
			depts, hosts, every, 2*depts, perRound.Round(time.Millisecond), (wall / rounds).Round(time.Millisecond), 100*perRound.Seconds()/every.Seconds())
	}
	u, err := api.Ledger.Usage(ctx, "2026-11")
	if err != nil || u["dept00"][ResNetTxBytes] != uint64(hosts*b.N*rounds)<<20 {
		b.Fatalf("dept00 tx %d, want %d: %v", u["dept00"][ResNetTxBytes], uint64(hosts*b.N*rounds)<<20, err)
	}
}
