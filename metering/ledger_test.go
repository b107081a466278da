package metering

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"net"
	"net/url"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

var t0 = time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)

// sim is a reporter with true counters: it generates reports of absolute totals.
type sim struct {
	name    string
	epoch   string
	seq     uint64
	prev    uint64
	totals  map[[2]string]uint64
	truth   map[[2]string]uint64 // everything ever counted (across resets)
	rng     *rand.Rand
	depts   []string
	resList []string
}

func newSim(name string, seed int64) *sim {
	return &sim{name: name, epoch: "e1", totals: map[[2]string]uint64{}, truth: map[[2]string]uint64{}, rng: rand.New(rand.NewSource(seed)),
		depts: []string{"lands", "health", "treasury"}, resList: []string{ResNetRxBytes, ResNetTxBytes}}
}

func (s *sim) traffic() {
	for _, d := range s.depts {
		for _, r := range s.resList {
			if s.rng.Intn(3) == 0 {
				continue
			}
			n := uint64(s.rng.Intn(1_000_000))
			s.totals[[2]string{d, r}] += n
			s.truth[[2]string{d, r}] += n
		}
	}
}

func (s *sim) report(at time.Time) Report {
	s.seq += uint64(1 + s.rng.Intn(5))
	r := Report{Host: s.name, Source: SourceNetwork, Epoch: s.epoch, Seq: s.seq, PrevSeq: s.prev, Time: at}
	s.prev = s.seq
	for k, v := range s.totals {
		r.Samples = append(r.Samples, Sample{Department: k[0], Resource: k[1], Total: v})
	}
	return r
}

func (s *sim) reset(epoch string) {
	s.epoch = epoch
	s.totals = map[[2]string]uint64{}
}

func wantUsage(truths ...map[[2]string]uint64) Usage {
	u := Usage{}
	for _, tr := range truths {
		for k, v := range tr {
			if v == 0 {
				continue
			}
			if u[k[0]] == nil {
				u[k[0]] = map[string]uint64{}
			}
			u[k[0]][k[1]] += v
		}
	}
	return u
}

func sameUsage(t *testing.T, got, want Usage) {
	t.Helper()
	for d, m := range want {
		for r, v := range m {
			if got[d][r] != v {
				t.Errorf("usage[%s][%s] = %d, want %d", d, r, got[d][r], v)
			}
		}
	}
	for d, m := range got {
		for r, v := range m {
			if want[d][r] != v {
				t.Errorf("extra usage[%s][%s] = %d, want %d", d, r, v, want[d][r])
			}
		}
	}
}

func mustRecord(t *testing.T, l *Ledger, r Report) Outcome {
	t.Helper()
	o, err := l.Record(context.Background(), r)
	if err != nil {
		t.Fatalf("record %d from %s: %v", r.Seq, r.Host, err)
	}
	return o
}

// ledgerChaos delivers two reporters' reports retried, duplicated, reordered and partly lost,
// with a counter reset in the middle, and checks the month equals the true deltas exactly.
func ledgerChaos(t *testing.T, kv func() KV, restart func()) {
	at := t0
	newLedger := func() *Ledger {
		l := NewLedger(kv())
		l.Now = func() time.Time { return at }
		l.Limits.ClockSkew = 24 * time.Hour // late deliveries are the point here
		return l
	}
	l := newLedger()
	a, b := newSim("host1", 1), newSim("host2", 2)
	rng := rand.New(rand.NewSource(3))
	// Each reporter's first report is its baseline (counters at zero here).
	mustRecord(t, l, a.report(at))
	mustRecord(t, l, b.report(at))
	var pending []Report
	for round := 0; round < 60; round++ {
		for _, s := range []*sim{a, b} {
			s.traffic()
			at = at.Add(time.Minute)
			pending = append(pending, s.report(at))
		}
		if round == 30 {
			// host1's maps are recreated: counters restart from zero. What the old counters
			// held after their last delivered report is gone with them, so the reporter's
			// last reading of epoch e1 is delivered first (as a clean shutdown does).
			at = at.Add(time.Minute)
			mustRecord(t, l, a.report(at))
			a.reset("e2")
		}
		if round == 40 && restart != nil {
			restart() // controller restart: a new ledger over the same store
			l = newLedger()
		}
		// Deliver a random subset in random order, some twice; keep some for later (late
		// arrivals), lose a few (gaps). The newest of each reporter is always delivered last
		// at the end, so the final totals reach the ledger.
		rng.Shuffle(len(pending), func(i, j int) { pending[i], pending[j] = pending[j], pending[i] })
		var keep []Report
		for _, r := range pending {
			switch x := rng.Intn(10); {
			case x < 5:
				mustRecord(t, l, r)
				if x == 0 {
					if o := mustRecord(t, l, r); o.Applied {
						t.Fatalf("duplicate of report %d from %s was applied again", r.Seq, r.Reporter)
					}
				}
			case x < 8:
				keep = append(keep, r)
			case x == 8:
				// lost
			default:
				mustRecord(t, l, r)
				keep = append(keep, r) // retried later (the reply was lost)
			}
		}
		pending = keep
	}
	// Final reports carry the final totals.
	for _, r := range pending {
		mustRecord(t, l, r)
	}
	mustRecord(t, l, a.report(at.Add(time.Minute)))
	mustRecord(t, l, b.report(at.Add(time.Minute)))
	got, err := l.Usage(context.Background(), "2026-11")
	if err != nil {
		t.Fatal(err)
	}
	sameUsage(t, got, wantUsage(a.truth, b.truth))
}

func TestLedgerExactlyOnceMem(t *testing.T) {
	m := NewMemKV()
	ledgerChaos(t, func() KV { return m }, func() {})
}

func TestLedgerCases(t *testing.T) {
	l := NewLedger(NewMemKV())
	l.Now = func() time.Time { return t0.Add(3 * time.Minute) }
	ctx := context.Background()
	rep := func(seq, prev uint64, epoch string, total uint64, after time.Duration) Report {
		return Report{Host: "h1", Source: SourceNetwork, Epoch: epoch, Seq: seq, PrevSeq: prev, Time: t0.Add(after),
			Samples: []Sample{{Department: "lands", Resource: ResNetTxBytes, Total: total}}}
	}
	steps := []struct {
		name     string
		r        Report
		applied  bool
		gap      bool
		reset    bool
		baseline bool
		usage    uint64
		refused  string // the refusal's reason; "" when accepted or dropped quietly
	}{
		{"first report is the baseline: adds nothing", rep(10, 0, "e1", 100, 0), true, false, false, true, 0, ""},
		{"duplicate", rep(10, 0, "e1", 100, 0), false, false, false, false, 0, ""},
		{"next adds the delta", rep(20, 10, "e1", 150, time.Minute), true, false, false, false, 50, ""},
		{"older report arriving late is ignored", rep(15, 10, "e1", 120, 30*time.Second), false, false, false, false, 50, ""},
		{"gap: totals cover the lost report", rep(40, 30, "e1", 400, 2*time.Minute), true, true, false, false, 300, ""},
		{"new epoch: counters restarted, all of it is new", rep(50, 40, "e2", 30, 3*time.Minute), true, false, true, false, 330, ""},
		{"late report of the epoch that ended is ignored", rep(45, 40, "e1", 500, 3*time.Minute), false, false, false, false, 330, ""},
		{"agent restart: prevSeq 0 is a gap, the delta still exact", rep(60, 0, "e2", 35, 4*time.Minute), true, true, false, false, 335, ""},
		{"unchanged total", rep(80, 60, "e2", 35, 5*time.Minute), true, false, false, false, 335, ""},
		// One report must not freeze the ledger: a seq beyond its report's time is refused, and
		// a made-up epoch does not stop the reporter's next epoch from counting.
		{"a seq far ahead of the report's time", rep(1<<63, 80, "e2", 36, 5*time.Minute+time.Second), false, false, false, false, 335, ReasonInvalid},
		{"a made-up epoch (anyone holding the host's credential)", rep(90, 80, "frz", 35, 5*time.Minute+time.Second), true, false, true, false, 370, ""},
		{"the real reporter goes on in its epoch: it resumes where it stood", rep(100, 80, "e2", 45, 6*time.Minute), true, false, false, false, 380, ""},
		{"the made-up epoch again, older than that: not counted", rep(95, 90, "frz", 99, 5*time.Minute+30*time.Second), false, false, false, false, 380, ""},
	}
	for _, s := range steps {
		o, err := l.Record(ctx, s.r)
		if s.refused != "" {
			var re *RefusedError
			if !errors.As(err, &re) || re.Reason != s.refused {
				t.Errorf("%s: error %v, want a refusal %q", s.name, err, s.refused)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if o.Applied != s.applied || o.Gap != s.gap || o.Reset != s.reset || o.Baseline != s.baseline {
			t.Errorf("%s: outcome %+v, want applied=%v gap=%v reset=%v baseline=%v", s.name, o, s.applied, s.gap, s.reset, s.baseline)
		}
		u, _ := l.Usage(ctx, "2026-11")
		if got := u["lands"][ResNetTxBytes]; got != s.usage {
			t.Errorf("%s: usage %d, want %d", s.name, got, s.usage)
		}
	}
	for _, bad := range []Report{{Host: "", Source: SourceNetwork, Seq: 1, Time: t0}, {Host: "h1", Source: SourceNetwork, Seq: 0, Time: t0},
		{Host: "h1", Source: SourceNetwork, Seq: 1}, {Host: "h1", Source: SourceNetwork, Seq: 1, Time: t0, Samples: []Sample{{Department: "a/b", Resource: ResNetTxBytes}}},
		rep(110, 100, "e2", 5, 7*time.Minute)} { // the total went down without a new epoch
		if _, err := l.Record(ctx, bad); err == nil {
			t.Errorf("report %+v accepted", bad)
		}
	}
	if _, err := l.Usage(ctx, "2026-13"); err == nil {
		t.Error("month 2026-13 accepted")
	}
}

// TestLedgerMonthBoundary: a delta belongs to the month of the reading that carries it.
func TestLedgerMonthBoundary(t *testing.T) {
	l := NewLedger(NewMemKV())
	l.Now = func() time.Time { return time.Date(2026, 11, 1, 0, 2, 0, 0, time.UTC) } // october is open until 01:00
	r := Report{Host: "h1", Source: SourceNetwork, Epoch: "e", Seq: 1, Time: time.Date(2026, 10, 31, 23, 58, 0, 0, time.UTC), Samples: []Sample{{Department: "lands", Resource: ResNetRxBytes, Total: 0}}}
	mustRecord(t, l, r)
	r.Seq, r.PrevSeq, r.Time, r.Samples[0].Total = 2, 1, time.Date(2026, 10, 31, 23, 59, 0, 0, time.UTC), 10
	mustRecord(t, l, r)
	r.Seq, r.PrevSeq, r.Time, r.Samples[0].Total = 3, 2, time.Date(2026, 11, 1, 0, 1, 0, 0, time.UTC), 25
	mustRecord(t, l, r)
	oct, _ := l.Usage(context.Background(), "2026-10")
	nov, _ := l.Usage(context.Background(), "2026-11")
	if oct["lands"][ResNetRxBytes] != 10 || nov["lands"][ResNetRxBytes] != 15 {
		t.Fatalf("october %v november %v, want 10 and 15", oct, nov)
	}
}

// TestLedgerConcurrent: reporters racing on one store never lose or double an update.
func TestLedgerConcurrent(t *testing.T) {
	l := NewLedger(NewMemKV())
	l.Now = func() time.Time { return t0 }
	done := make(chan error)
	for h := 0; h < 8; h++ {
		go func(h int) {
			var err error
			for i := 1; i <= 50 && err == nil; i++ {
				_, err = l.Record(context.Background(), Report{Host: fmt.Sprintf("h%d", h), Source: SourceNetwork, Epoch: "e", Seq: uint64(i), PrevSeq: uint64(i - 1), Time: t0,
					Samples: []Sample{{Department: "lands", Resource: ResNetTxBytes, Total: uint64(i * 10)}}})
			}
			done <- err
		}(h)
	}
	for h := 0; h < 8; h++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	u, _ := l.Usage(context.Background(), "2026-11")
	if got := u["lands"][ResNetTxBytes]; got != 8*490 { // each reporter's first report (10) is its baseline
		t.Fatalf("usage %d, want %d", got, 8*490)
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startEtcd starts a single-node embedded etcd in dir on fixed loopback ports (reused across
// restarts of the same dir) and returns a client and a stop function.
func startEtcd(t testing.TB, dir string, cport, pport int) (*clientv3.Client, func()) {
	t.Helper()
	cu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", cport))
	pu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", pport))
	cfg := embed.NewConfig()
	cfg.Name = "metering-test"
	cfg.Dir = filepath.Join(dir, "etcd")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	cfg.UnsafeNoFsync = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		t.Fatal("embedded etcd not ready after 30s")
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{cu.String()}, DialTimeout: 5 * time.Second})
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	return c, func() { c.Close(); e.Close() }
}

// TestLedgerExactlyOnceEtcd runs the chaos against etcd, restarting etcd (the controller's
// store) in the middle: the ledger's state lives only in the store.
func TestLedgerExactlyOnceEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped by -short (make test-unit): starts an embedded etcd")
	}
	dir := t.TempDir()
	cport, pport := freePort(t), freePort(t)
	c, stop := startEtcd(t, dir, cport, pport)
	defer func() { stop() }()
	ledgerChaos(t, func() KV { return EtcdKV{C: c} }, func() {
		stop()
		c, stop = startEtcd(t, dir, cport, pport)
	})
}

// TestLedgerGauges: allocations are integrated between reports, split at month starts,
// exactly (remainders carried), never twice; per-VM counters restart on their own.
func TestLedgerGauges(t *testing.T) {
	oct := time.Date(2026, 10, 31, 23, 0, 0, 0, time.UTC)
	l := NewLedger(NewMemKV())
	l.Now = func() time.Time { return oct.Add(100 * time.Minute) } // october still open (until 01:00)
	l.Limits.ClockSkew = 3 * time.Hour
	ctx := context.Background()
	seq := uint64(0)
	rep := func(at time.Time, samples ...Sample) Report {
		seq++
		return Report{Host: "h1", Source: SourceCompute, Epoch: "e", Seq: seq, PrevSeq: seq - 1, Time: at, Samples: samples}
	}
	mem := func(vm string, mib uint64) Sample {
		return Sample{Department: "lands", Resource: ResMemoryMiBSeconds, Item: vm, Gauge: true, Level: mib}
	}
	cpu := func(vm string, s uint64) Sample {
		return Sample{Department: "lands", Resource: ResVCPUSeconds, Item: vm, Total: s}
	}
	mustRecord(t, l, rep(oct, mem("vm1", 2048), cpu("vm1", 100), cpu("vm2", 50)))
	mustRecord(t, l, rep(oct.Add(30*time.Minute), mem("vm1", 2048), cpu("vm1", 160), cpu("vm2", 50)))
	late := rep(oct.Add(45*time.Minute), mem("vm1", 4096))
	last := rep(oct.Add(90*time.Minute), mem("vm1", 2048), cpu("vm1", 10), cpu("vm2", 60)) // vm1 restarted
	mustRecord(t, l, last)
	if o := mustRecord(t, l, late); o.Applied { // overtaken: ignored
		t.Fatal("late report applied")
	}
	mustRecord(t, l, last)                          // duplicate
	mustRecord(t, l, rep(oct.Add(100*time.Minute))) // vm1 gone: its memory counted up to here
	mustRecord(t, l, rep(oct.Add(200*time.Minute))) // nothing allocated any more
	u10, _ := l.Usage(ctx, "2026-10")
	u11, _ := l.Usage(ctx, "2026-11")
	if got, want := u10["lands"][ResMemoryMiBSeconds], uint64(2048*3600); got != want {
		t.Errorf("october memory %d, want %d", got, want)
	}
	if got, want := u11["lands"][ResMemoryMiBSeconds], uint64(2048*30*60+2048*10*60); got != want {
		t.Errorf("november memory %d, want %d", got, want)
	}
	// vCPU: the first report is the baseline, 60 (october), then vm1's new 10 + vm2's 10 (november).
	if u10["lands"][ResVCPUSeconds] != 60 || u11["lands"][ResVCPUSeconds] != 20 {
		t.Errorf("vcpu october %d november %d, want 60 and 20", u10["lands"][ResVCPUSeconds], u11["lands"][ResVCPUSeconds])
	}

	// Fractions carry over: 3 MiB for 1.5 s, four times, is exactly 18 MiB-seconds.
	l2 := NewLedger(NewMemKV())
	seq = 0
	at := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	l2.Now = func() time.Time { return at }
	for i := 0; i < 5; i++ {
		mustRecord(t, l2, rep(at.Add(time.Duration(i)*1500*time.Millisecond), mem("vm", 3)))
	}
	if u, _ := l2.Usage(ctx, "2026-11"); u["lands"][ResMemoryMiBSeconds] != 18 {
		t.Errorf("3 MiB x 6 s = %d MiB-seconds, want 18", u["lands"][ResMemoryMiBSeconds])
	}
}

// TestLedgerRestoredFromBackup: the ledger's store is restored from a backup taken mid-month
// (reports accepted after it are lost with the old store); the reporters' next cumulative
// totals carry what happened since, so the restored month equals the true deltas exactly:
// nothing lost, nothing counted twice, no report refused. The late reports of the lost
// history, delivered again to the restored ledger (an agent's retry), are not counted twice.
func TestLedgerRestoredFromBackup(t *testing.T) {
	at := t0
	kv := NewMemKV()
	l := NewLedger(kv)
	l.Now = func() time.Time { return at }
	a, b := newSim("host1", 11), newSim("host2", 12)
	base := map[*sim]map[[2]string]uint64{}
	for _, s := range []*sim{a, b} {
		s.traffic()
		mustRecord(t, l, s.report(at))
		base[s] = maps.Clone(s.totals)
	}
	round := func(l *Ledger, keep *[]Report) {
		for _, s := range []*sim{a, b} {
			s.traffic()
			at = at.Add(30 * time.Second)
			r := s.report(at)
			if o := mustRecord(t, l, r); !o.Applied {
				t.Fatalf("report %d of %s not applied: %+v", r.Seq, r.Host, o)
			}
			if keep != nil {
				*keep = append(*keep, r)
			}
		}
	}
	for range 10 {
		round(l, nil)
	}
	// The backup: a copy of every key at this moment.
	backup := NewMemKV()
	for k, v := range kv.data {
		backup.data[k] = v
	}
	backup.rev = kv.rev
	var lostHistory []Report
	for range 10 {
		round(l, &lostHistory)
	}
	// The controller is lost; its store comes back from the backup.
	restored := NewLedger(backup)
	restored.Now = func() time.Time { return at }
	restored.Limits.ClockSkew = 24 * time.Hour // the retries of the lost history are late
	for range 5 {
		round(restored, nil)
	}
	for _, r := range lostHistory {
		if o := mustRecord(t, restored, r); o.Applied {
			t.Fatalf("a report of the lost history (seq %d of %s) was counted again: %+v", r.Seq, r.Host, o)
		}
	}
	got, err := restored.Usage(context.Background(), Month(at))
	if err != nil {
		t.Fatal(err)
	}
	want := Usage{}
	for _, s := range []*sim{a, b} {
		for k, v := range s.totals {
			if d := v - base[s][k]; d > 0 {
				if want[k[0]] == nil {
					want[k[0]] = map[string]uint64{}
				}
				want[k[0]][k[1]] += d
			}
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("restored month:\n got %v\nwant %v", got, want)
	}
}
