package metering

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// TrafficSamples turns trunk counters into ledger samples: bytes into and out of each
// department segment (item: the segment).
func TrafficSamples(tr []Traffic) []Sample {
	sum := map[[3]string]uint64{}
	for _, t := range tr {
		res := ResNetRxBytes
		if t.Direction == "tx" {
			res = ResNetTxBytes
		}
		if t.Department == "" {
			continue
		}
		sum[[3]string{t.Department, res, t.Segment}] += t.Bytes
	}
	out := make([]Sample, 0, len(sum))
	for k, v := range sum {
		out = append(out, Sample{Department: k[0], Resource: k[1], Item: k[2], Total: v})
	}
	return out
}

// VIPSamples turns the load balancer's per-VIP counters into ledger samples: the bytes to
// each public VIP of a known service (item: the service). Internal VIPs are left out: their
// frames come from the department's own segments and are counted where they crossed the
// trunk (network_tx_bytes), so counting them here would count them twice.
func VIPSamples(sc []ServiceCounter) []Sample {
	out := make([]Sample, 0, len(sc))
	for _, c := range sc {
		if c.Department == "" || !c.Public {
			continue
		}
		out = append(out, Sample{Department: c.Department, Resource: ResNetVIPInBytes, Item: c.Service, Total: c.Bytes})
	}
	return out
}

// Reporter sends a host's absolute totals to the ledger every Interval. It keeps no counts of
// its own: every report carries what the pinned counters say, so a failed or lost report is
// covered by the next one, and a restarted reporter just goes on.
type Reporter struct {
	Host     string                                         // the reporting host (its token's or certificate's host)
	Source   string                                         // SourceNetwork (default), SourceLB or SourceCompute
	Epoch    func() string                                  // the counters' life; changes when they restart from zero
	Samples  func() ([]Sample, error)                       // the absolute totals now
	Send     func(context.Context, Report) (Outcome, error) // e.g. (*Client).Report
	Interval time.Duration
	Log      *slog.Logger
	Now      func() time.Time

	mu   sync.Mutex
	last uint64
}

// Once reads the totals and sends one report.
func (r *Reporter) Once(ctx context.Context) (Outcome, error) {
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	samples, err := r.Samples()
	if err != nil {
		return Outcome{}, err
	}
	t := now()
	r.mu.Lock()
	seq := uint64(t.UnixNano())
	if seq <= r.last {
		seq = r.last + 1
	}
	source := r.Source
	if source == "" {
		source = SourceNetwork
	}
	rep := Report{Host: r.Host, Source: source, Epoch: r.Epoch(), Seq: seq, PrevSeq: r.last, Time: t, Samples: samples}
	r.last = seq
	r.mu.Unlock()
	return r.Send(ctx, rep)
}

// Run reports until ctx ends.
func (r *Reporter) Run(ctx context.Context) {
	log := r.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	iv := r.Interval
	if iv == 0 {
		iv = time.Minute
	}
	tk := time.NewTicker(iv)
	defer tk.Stop()
	for {
		if _, err := r.Once(ctx); err != nil && ctx.Err() == nil {
			log.Warn("usage report failed; the next one carries the totals", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}
