package metering

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/bits"
	"slices"
	"strings"
	"time"
)

// Resources a ledger counts, in base units.
// README "What a department's network usage is" defines the network ones.
const (
	// ResNetTxBytes: east-west, bytes of frames a department's segment sent to another host
	// over the trunk, counted once at the sending host (item: the segment).
	ResNetTxBytes = "network_tx_bytes"
	// ResNetRxBytes: the same frames counted at the receiving host; counted, never billed
	// (billing it too would bill a frame that crosses two hosts twice).
	ResNetRxBytes = "network_rx_bytes"
	// ResNetVIPInBytes: north-south, bytes from the fabric to a department's public VIPs,
	// counted once by the load balancer of the host that balanced them (item: the service).
	ResNetVIPInBytes    = "network_vip_in_bytes"
	ResVCPUSeconds      = "vcpu_seconds"       // vCPU time (item: the VM)
	ResMemoryMiBSeconds = "memory_mib_seconds" // memory allocated x time (item: the VM)
	ResVolumeGiBSeconds = "volume_gib_seconds" // storage allocated x time (item: the VM)
)

// Sample is one absolute, monotonic total of a reporter (what a pinned counter says now), or
// with Gauge a level that the ledger integrates over time: Resource "memory_mib_seconds" with
// Level 2048 means 2048 MiB allocated now, and the ledger adds level x seconds between reports.
// Item (e.g. a VM's name) keeps series apart within a department and resource, so one VM's
// counter restarting does not look like the department's total going down.
type Sample struct {
	Department string `json:"department"`
	Resource   string `json:"resource"`
	Item       string `json:"item,omitempty"`
	Total      uint64 `json:"total,omitempty"`
	Gauge      bool   `json:"gauge,omitempty"`
	Level      uint64 `json:"level,omitempty"`
}

func (s Sample) key() string { return s.Department + "/" + s.Resource + "/" + s.Item }

// Report is what an agent sends: every total it meters, read at Time.
//
// Host is the reporting host and Source what reports there ("network": the network agent's
// trunk bytes; "compute": the compute agent's vCPU time, memory and volumes); the ledger keeps
// one reporter state per (host, source). Seq orders a reporter's reports and must grow across
// restarts of the reporter (agents use the wall clock in nanoseconds, kept strictly
// increasing); PrevSeq is the Seq of the report sent before this one (0 after a restart), so
// the ledger sees gaps. Epoch names the life of the counters: it changes only when they
// restart from zero (maps recreated, host rebooted). Reporter is the field of agents before
// Host and Source: the host, source network.
type Report struct {
	Host     string    `json:"host,omitempty"`
	Source   string    `json:"source,omitempty"`
	Reporter string    `json:"reporter,omitempty"`
	Epoch    string    `json:"epoch"`
	Seq      uint64    `json:"seq"`
	PrevSeq  uint64    `json:"prevSeq"`
	Time     time.Time `json:"time"`
	Samples  []Sample  `json:"samples"`
}

// Outcome says what the ledger did with a report.
type Outcome struct {
	Applied bool `json:"applied"` // false: a duplicate or a report older than one already counted
	// Stale: not applied because a newer report of its epoch, or a newer epoch, was counted
	// first (a late arrival; or someone reporting as the host with a made-up epoch).
	Stale bool `json:"stale,omitempty"`
	// Resumed: the report's epoch had been replaced by a newer one that stopped reporting
	// while this one went on; its counters resumed where they stood.
	Resumed bool `json:"resumed,omitempty"`
	Gap     bool `json:"gap"`   // reports were missed; the totals covered them
	Reset   bool `json:"reset"` // the counters restarted (a new epoch, or a VM's own vCPU counter)
	// Baseline: the reporter's first report; it sets the totals later reports count from and
	// adds nothing (what its counters held before cannot be bounded by any elapsed time).
	Baseline bool `json:"baseline,omitempty"`
	// Added is what the report added, by department and resource.
	Added map[string]map[string]uint64 `json:"added,omitempty"`
}

// reporterState is the last counted report of one reporter.
type reporterState struct {
	Epoch  string            `json:"epoch"`
	Seq    uint64            `json:"seq"`
	Time   time.Time         `json:"time"`
	Totals map[string]uint64 `json:"totals"`           // department/resource/item -> total
	Levels map[string]uint64 `json:"levels,omitempty"` // gauges: department/resource/item -> level
	RemMs  map[string]uint64 `json:"remMs,omitempty"`  // gauges: level x milliseconds not yet a whole unit
	Gaps   int               `json:"gaps"`
	// Retired are the last epochs this reporter left (newest last, at most maxRetired), each
	// with where its counters stood: their late reports are not counted again, and an epoch
	// that turns out to be still running (the one that replaced it was made up) resumes there.
	Retired []retiredEpoch `json:"retired,omitempty"`
}

// retiredEpoch is an epoch a reporter left and its last counted report.
type retiredEpoch struct {
	Epoch  string            `json:"epoch"`
	Seq    uint64            `json:"seq"`
	Time   time.Time         `json:"time"`
	Totals map[string]uint64 `json:"totals"`
}

const maxRetired = 16

// retire adds e to the retired epochs, keeping the newest maxRetired.
func retire(rs []retiredEpoch, e retiredEpoch) []retiredEpoch {
	rs = append(rs, e)
	if len(rs) > maxRetired {
		rs = rs[len(rs)-maxRetired:]
	}
	return rs
}

// Ledger counts each reported delta exactly once: it keeps the last absolute total of every
// (reporter, department, resource) and adds only what a newer report says beyond it, so
// retried, duplicated and reordered reports never count twice and a lost report is covered by
// the next one's totals. Reporter state and the month's usage change in one atomic update.
//
// It accepts only what a reporter can know (a refusal is a *RefusedError naming the field and
// value, and nothing of the report counts): resources of the report's source; with a
// Placement, departments and VMs the desired state puts on the reporting host; a time within
// Limits.ClockSkew of Now and not in a closed month; totals that go down only with a new epoch
// (or, for a VM's vCPU counter, a restart of that VM); growth the host can physically make
// since the reporter's last report (link rate per direction, vCPUs x elapsed; a reporter's
// first report is a baseline and adds nothing); levels up to what the VM was given; a bounded
// number of samples, departments and kept series; no sum that wraps 64 bits.
type Ledger struct {
	store  KV
	prefix string

	Now       func() time.Time // the controller's clock; nil: time.Now
	Placement Placement        // nil: no placement checks (unit tests; the controller sets it)
	Limits    Limits
}

// DefaultPrefix is where a ledger keeps its keys unless NewLedgerAt says otherwise.
const DefaultPrefix = "/govcloud/metering/"

// NewLedger returns a ledger over a store, keys under DefaultPrefix.
func NewLedger(kv KV) *Ledger { return NewLedgerAt(kv, DefaultPrefix) }

// NewLedgerAt returns a ledger keeping its keys under prefix (e.g. the controller store's
// prefix + "metering/").
func NewLedgerAt(kv KV, prefix string) *Ledger { return &Ledger{store: kv, prefix: prefix} }

// reporterKey is a reporter's state: reporters/HOST for the network source (the key of
// reports before sources existed, so their state carries on), reporters/HOST/SOURCE otherwise.
func (l *Ledger) reporterKey(host, source string) string {
	if source == SourceNetwork {
		return l.prefix + "reporters/" + host
	}
	return l.prefix + "reporters/" + host + "/" + source
}

// usagePrefix holds months' usage written before usage was dated by day (one key per
// department: resource -> amount); it is read, never written.
func (l *Ledger) usagePrefix(month string) string { return l.prefix + "usage/" + month + "/" }

// dailyPrefix holds a month's usage by day: daily/YYYY-MM/DEPARTMENT/DD -> resource -> item
// -> amount. Each report writes only the days it adds to.
func (l *Ledger) dailyPrefix(month string) string { return l.prefix + "daily/" + month + "/" }
func (l *Ledger) dailyKey(day, dept string) string {
	return l.dailyPrefix(day[:7]) + dept + "/" + day[8:]
}

// ErrConflict is returned by KV.Commit when a compared key changed.
var ErrConflict = errors.New("metering store: concurrent update")

// Month is the usage period a time falls in (UTC), e.g. "2026-11".
func Month(t time.Time) string { return t.UTC().Format("2006-01") }

func (l *Ledger) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// Check refuses what the ledger would refuse of r without reading reporter state: fields,
// resources, sizes, clock, closed month and placement. r is normalised (Reporter -> Host).
func (l *Ledger) Check(ctx context.Context, r *Report) error {
	_, err := l.check(ctx, r)
	return err
}

func (l *Ledger) check(ctx context.Context, r *Report) (*HostPlacement, error) {
	lim := l.Limits.withDefaults()
	if e := r.check(lim); e != nil {
		return nil, e
	}
	if e := checkClock(r, l.now(), lim); e != nil {
		return nil, e
	}
	if l.Placement == nil {
		vm := unplacedVM(lim)
		for i, s := range r.Samples {
			if e := checkLevel(fmt.Sprintf("samples[%d]", i), s, vm, lim); e != nil {
				return nil, e
			}
		}
		return nil, nil
	}
	hp, err := l.Placement.OnHost(ctx, r.Host)
	if err != nil {
		return nil, fmt.Errorf("usage report of host %q: placement: %w", r.Host, err)
	}
	if e := checkPlacement(r, hp, lim); e != nil {
		return nil, e
	}
	return hp, nil
}

// Record counts a report. It is idempotent: the same report again changes nothing. A refused
// report is a *RefusedError.
func (l *Ledger) Record(ctx context.Context, r Report) (Outcome, error) {
	hp, err := l.check(ctx, &r)
	if err != nil {
		return Outcome{}, err
	}
	for attempt := 0; attempt < 100; attempt++ {
		out, err := l.try(ctx, r, hp)
		if errors.Is(err, ErrConflict) {
			continue
		}
		return out, err
	}
	return Outcome{}, fmt.Errorf("report %d of host %q (%s): gave up after 100 conflicting updates", r.Seq, r.Host, r.Source)
}

// vmBound is what bounds a compute sample's VM.
func vmBound(hp *HostPlacement, lim Limits, vm string) PlacedVM {
	if hp == nil {
		return unplacedVM(lim)
	}
	return hp.VMs[vm]
}

func (l *Ledger) try(ctx context.Context, r Report, hp *HostPlacement) (Outcome, error) {
	lim := l.Limits.withDefaults()
	rk := l.reporterKey(r.Host, r.Source)
	cur, err := l.store.Get(ctx, rk)
	if err != nil {
		return Outcome{}, err
	}
	var st reporterState
	if cur.Rev != 0 {
		if err := json.Unmarshal(cur.Value, &st); err != nil {
			return Outcome{}, fmt.Errorf("reporter state of host %q (%s): %w", r.Host, r.Source, err)
		}
	}
	// Sequence numbers order reports within one epoch (one run of the reporter's counters): a
	// report of that epoch at or below the last one counted is a retry or arrived late. A
	// report of an epoch the reporter left is late too, unless it is newer than everything
	// counted since: then that epoch is still running (the one that replaced it was made up,
	// by anyone holding the host's credential) and its counters resume where they stood, so
	// one report can neither freeze the ledger nor make it count a reporter's totals twice.
	// A new epoch is judged by its time and totals, never by another epoch's seq.
	resumed := false
	growthFrom := st.Time // what the counters' growth is bounded from
	if cur.Rev != 0 {
		i := slices.IndexFunc(st.Retired, func(e retiredEpoch) bool { return e.Epoch == r.Epoch })
		switch {
		case r.Epoch == st.Epoch && r.Seq <= st.Seq:
			return Outcome{Stale: r.Seq < st.Seq}, nil
		case i >= 0 && (!r.Time.After(st.Time) || r.Seq <= st.Retired[i].Seq):
			return Outcome{Stale: true}, nil
		case i >= 0:
			old := st.Retired[i]
			st.Retired = retire(slices.Delete(st.Retired, i, i+1), retiredEpoch{Epoch: st.Epoch, Seq: st.Seq, Time: st.Time, Totals: st.Totals})
			st.Epoch, st.Seq, st.Totals = old.Epoch, old.Seq, old.Totals
			growthFrom, resumed = old.Time, true
		}
	}
	left := retiredEpoch{Epoch: st.Epoch, Seq: st.Seq, Time: st.Time, Totals: maps.Clone(st.Totals)}
	if cur.Rev != 0 && r.Time.Before(st.Time) {
		return Outcome{}, refuse(ReasonInvalid, "time", r.Time.UTC().Format(time.RFC3339Nano), "before %s, the time of report %d already counted (seq %d is newer)", st.Time.UTC().Format(time.RFC3339Nano), st.Seq, r.Seq)
	}
	baseline := cur.Rev == 0
	out := Outcome{Applied: true, Baseline: baseline, Added: map[string]map[string]uint64{}}
	if !baseline && r.PrevSeq != st.Seq {
		out.Gap = true
		st.Gaps++
	}
	newEpoch := !baseline && r.Epoch != st.Epoch
	out.Reset = newEpoch
	elapsedMs := uint64(0)
	if !baseline {
		elapsedMs = uint64(r.Time.Sub(growthFrom).Milliseconds())
	}
	adds := dayAdds{} // day -> department -> resource -> item -> amount
	var overflow *RefusedError
	add := func(day, k string, d uint64) {
		if d == 0 {
			return
		}
		parts := strings.SplitN(k, "/", 3)
		dept, res, item := parts[0], parts[1], parts[2]
		if !adds.add(day, dept, res, item, d) && overflow == nil {
			overflow = refuse(ReasonOverflow, "samples", k, "adding %d would wrap the day's sum", d)
		}
		if out.Added[dept] == nil {
			out.Added[dept] = map[string]uint64{}
		}
		out.Added[dept][res] += d
	}
	totals := make(map[string]uint64, len(r.Samples))
	levels := map[string]uint64{}
	index := make(map[string]int, len(r.Samples))
	for i, s := range r.Samples {
		index[s.key()] = i
		if s.Gauge {
			levels[s.key()] = s.Level
		} else {
			totals[s.key()] = s.Total
		}
	}
	if !baseline && !newEpoch {
		migrateItemless(st.Totals, totals)
	}
	// Counters: what each total adds, refused when it went down without a new epoch or grew
	// more than the host could have made since the last report.
	byRes := map[string]uint64{}   // network: growth per direction, summed over departments
	biggest := map[string]string{} // network: the series that grew most per direction
	deltas := make(map[string]uint64, len(totals))
	for k, t := range totals {
		i := index[k]
		s := r.Samples[i]
		f := fmt.Sprintf("samples[%d].total", i)
		var d uint64
		old, seen := st.Totals[k]
		switch {
		case baseline:
			d = 0
		case newEpoch || !seen:
			// Counters that restarted from zero, or a series new to this reporter: all of
			// the total is new, and was made since the last report.
			d = t
		case t >= old:
			d = t - old
		case s.Resource == ResVCPUSeconds:
			// A VM's own vCPU counter restarts with the VM: what it holds now is new.
			out.Reset = true
			d = t
		default:
			return Outcome{}, refuse(ReasonNotMonotonic, f, fmt.Sprint(t), "below %d, the last total of this series in epoch %q (counters restarting from zero come with a new epoch)", old, st.Epoch)
		}
		switch s.Resource {
		case ResVCPUSeconds:
			vm := vmBound(hp, lim, s.Item)
			// vCPUs x elapsed, with 5% and 2 s per vCPU for rounding and read-out jitter.
			if max := mulSat(vm.VCPUs, elapsedMs/1000+elapsedMs/20000+2); d > max {
				return Outcome{}, refuse(ReasonImpossible, f, fmt.Sprint(t), "VM %s grew by %d vCPU-seconds in %s, more than its %d vCPUs can (%d)", s.Item, d, time.Duration(elapsedMs)*time.Millisecond, vm.VCPUs, max)
			}
		case ResNetRxBytes, ResNetTxBytes, ResNetVIPInBytes:
			byRes[s.Resource] += d
			if byRes[s.Resource] < d {
				byRes[s.Resource] = ^uint64(0)
			}
			if biggest[s.Resource] == "" || d > deltas[biggest[s.Resource]] {
				biggest[s.Resource] = k
			}
		}
		deltas[k] = d
	}
	for res, sum := range byRes {
		// The link rate x elapsed, with 10% and 1 MiB for read-out jitter.
		bps := lim.MaxBitRate / 8
		max := satAdd(mulSat(bps, elapsedMs/1000), bps/1000*(elapsedMs%1000))
		max = satAdd(max, max/10+1<<20)
		if sum > max {
			k := biggest[res]
			i := index[k]
			return Outcome{}, refuse(ReasonImpossible, fmt.Sprintf("samples[%d].total", i), fmt.Sprint(r.Samples[i].Total), "%s of host %s grew by %d bytes in %s, more than %d Gbit/s can carry (%d)", res, r.Host, sum, time.Duration(elapsedMs)*time.Millisecond, lim.MaxBitRate/1e9, max)
		}
	}
	day := Day(r.Time)
	for k, d := range deltas {
		add(day, k, d)
	}
	// Gauges: the previous levels held from the previous report until this one (split at
	// day starts, so each day is rated with its own prices; nothing into a closed month); a
	// series missing now ended here.
	now := l.now()
	if !baseline && r.Time.After(st.Time) {
		if st.RemMs == nil {
			st.RemMs = map[string]uint64{}
		}
		for k, lv := range st.Levels {
			for _, sp := range splitDays(st.Time, r.Time) {
				if monthClosed(sp.day[:7], now, lim.Grace) {
					continue
				}
				hi, lo := bits.Mul64(lv, sp.ms)
				x := lo + st.RemMs[k]
				if hi != 0 || x < lo {
					return Outcome{}, refuse(ReasonOverflow, "samples", k, "level %d x %d ms wraps 64 bits", lv, sp.ms)
				}
				add(sp.day, k, x/1000)
				st.RemMs[k] = x % 1000
			}
		}
	}
	if overflow != nil {
		return Outcome{}, overflow
	}
	if baseline || r.Time.After(st.Time) {
		st.Levels, st.Time = levels, r.Time
		for k := range st.RemMs {
			if _, ok := levels[k]; !ok {
				delete(st.RemMs, k)
			}
		}
	}
	// Series missing from this report keep their last total (a report may carry a subset),
	// unless what they count is no longer on the host, or the state would outgrow its bound.
	if st.Totals == nil || newEpoch {
		st.Totals = map[string]uint64{}
	}
	for k, t := range totals {
		st.Totals[k] = t
	}
	for k := range st.Totals {
		if _, now := totals[k]; now {
			continue
		}
		if len(st.Totals) > lim.MaxSeries || (hp != nil && !placed(hp, r.Source, k)) {
			delete(st.Totals, k)
		}
	}
	if newEpoch {
		st.Retired = retire(st.Retired, left)
	}
	out.Resumed = resumed
	st.Epoch, st.Seq = r.Epoch, r.Seq
	puts := map[string][]byte{}
	conds := map[string]int64{rk: cur.Rev}
	b, _ := json.Marshal(st)
	puts[rk] = b
	for day, byDept := range adds {
		for dept, add := range byDept {
			dk := l.dailyKey(day, dept)
			u, err := l.store.Get(ctx, dk)
			if err != nil {
				return Outcome{}, err
			}
			m := dayUsage{}
			if u.Rev != 0 {
				if err := json.Unmarshal(u.Value, &m); err != nil {
					return Outcome{}, fmt.Errorf("usage %s of %q: %w", day, dept, err)
				}
			}
			for res, items := range add {
				for item, v := range items {
					if m[res] == nil {
						m[res] = map[string]uint64{}
					}
					if m[res][item]+v < v {
						return Outcome{}, refuse(ReasonOverflow, "samples", dept+"/"+res+"/"+item, "adding %d to %d on %s would wrap 64 bits", v, m[res][item], day)
					}
					m[res][item] += v
				}
			}
			b, _ := json.Marshal(m)
			puts[dk] = b
			conds[dk] = u.Rev
		}
	}
	if err := l.store.Commit(ctx, conds, puts); err != nil {
		return Outcome{}, err
	}
	return out, nil
}

// placed says whether series k ("department/resource/item") is still on the host.
func placed(hp *HostPlacement, source, k string) bool {
	parts := strings.SplitN(k, "/", 3)
	if len(parts) != 3 {
		return false
	}
	if source != SourceCompute {
		return hp.Segments[parts[0]]
	}
	vm, ok := hp.VMs[parts[2]]
	return ok && vm.Department == parts[0]
}

// mulSat is a*b, or the largest uint64 when that wraps.
func mulSat(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	if hi != 0 {
		return ^uint64(0)
	}
	return lo
}

// satAdd is a+b, or the largest uint64 when that wraps.
func satAdd(a, b uint64) uint64 {
	if a+b < a {
		return ^uint64(0)
	}
	return a + b
}
