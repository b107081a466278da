package metering

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Resources a ledger counts, in base units.
const (
	ResNetRxBytes       = "network_rx_bytes"   // bytes into a department's segments
	ResNetTxBytes       = "network_tx_bytes"   // bytes out of a department's segments
	ResVCPUSeconds      = "vcpu_seconds"       // vCPU time
	ResMemoryMiBSeconds = "memory_mib_seconds" // memory allocated x time
	ResVolumeGiBSeconds = "volume_gib_seconds" // storage allocated x time
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
// Seq orders a reporter's reports and must grow across restarts of the reporter (agents use
// the wall clock in nanoseconds, kept strictly increasing); PrevSeq is the Seq of the report
// sent before this one (0 after a restart), so the ledger sees gaps. Epoch names the life of
// the counters: it changes only when they restart from zero (maps recreated, host rebooted).
type Report struct {
	Reporter string    `json:"reporter"`
	Epoch    string    `json:"epoch"`
	Seq      uint64    `json:"seq"`
	PrevSeq  uint64    `json:"prevSeq"`
	Time     time.Time `json:"time"`
	Samples  []Sample  `json:"samples"`
}

// Outcome says what the ledger did with a report.
type Outcome struct {
	Applied bool `json:"applied"` // false: a duplicate or a report older than one already counted
	Gap     bool `json:"gap"`     // reports were missed; the totals covered them
	Reset   bool `json:"reset"`   // the counters restarted (new epoch or a total went down)
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
}

// monthSpan is the part of an interval in one month.
type monthSpan struct {
	month string
	ms    uint64
}

// splitMonths cuts [from, to) at month starts (UTC).
func splitMonths(from, to time.Time) []monthSpan {
	var out []monthSpan
	from, to = from.UTC(), to.UTC()
	for from.Before(to) {
		next := time.Date(from.Year(), from.Month()+1, 1, 0, 0, 0, 0, time.UTC)
		end := to
		if next.Before(to) {
			end = next
		}
		out = append(out, monthSpan{Month(from), uint64(end.Sub(from).Milliseconds())})
		from = end
	}
	return out
}

// Usage is one month's quantities: department -> resource -> amount in base units.
type Usage map[string]map[string]uint64

// Ledger counts each reported delta exactly once: it keeps the last absolute total of every
// (reporter, department, resource) and adds only what a newer report says beyond it, so
// retried, duplicated and reordered reports never count twice and a lost report is covered by
// the next one's totals. Reporter state and the month's usage change in one atomic update.
type Ledger struct {
	store  KV
	prefix string
}

// DefaultPrefix is where a ledger keeps its keys unless NewLedgerAt says otherwise.
const DefaultPrefix = "/govcloud/metering/"

// NewLedger returns a ledger over a store, keys under DefaultPrefix.
func NewLedger(kv KV) *Ledger { return NewLedgerAt(kv, DefaultPrefix) }

// NewLedgerAt returns a ledger keeping its keys under prefix (e.g. the controller store's
// prefix + "metering/").
func NewLedgerAt(kv KV, prefix string) *Ledger { return &Ledger{store: kv, prefix: prefix} }

func (l *Ledger) reporterKey(r string) string        { return l.prefix + "reporters/" + r }
func (l *Ledger) usagePrefix(month string) string    { return l.prefix + "usage/" + month + "/" }
func (l *Ledger) usageKey(month, dept string) string { return l.usagePrefix(month) + dept }

// ErrConflict is returned by KV.Commit when a compared key changed.
var ErrConflict = errors.New("metering store: concurrent update")

func (r Report) validate() error {
	if r.Reporter == "" || strings.ContainsAny(r.Reporter, "/") {
		return fmt.Errorf("report: reporter %q: empty or contains '/'", r.Reporter)
	}
	if r.Seq == 0 {
		return fmt.Errorf("report from %q: seq 0", r.Reporter)
	}
	if r.Time.IsZero() {
		return fmt.Errorf("report %d from %q: no time", r.Seq, r.Reporter)
	}
	for _, s := range r.Samples {
		if s.Department == "" || strings.Contains(s.Department, "/") {
			return fmt.Errorf("report %d from %q: department %q", r.Seq, r.Reporter, s.Department)
		}
		if s.Resource == "" || strings.Contains(s.Resource, "/") {
			return fmt.Errorf("report %d from %q: resource %q", r.Seq, r.Reporter, s.Resource)
		}
	}
	return nil
}

// Month is the usage period a time falls in (UTC), e.g. "2026-11".
func Month(t time.Time) string { return t.UTC().Format("2006-01") }

// Record counts a report. It is idempotent: the same report again changes nothing.
func (l *Ledger) Record(ctx context.Context, r Report) (Outcome, error) {
	if err := r.validate(); err != nil {
		return Outcome{}, err
	}
	for attempt := 0; attempt < 100; attempt++ {
		out, err := l.try(ctx, r)
		if errors.Is(err, ErrConflict) {
			continue
		}
		return out, err
	}
	return Outcome{}, fmt.Errorf("report %d from %q: gave up after 100 conflicting updates", r.Seq, r.Reporter)
}

func (l *Ledger) try(ctx context.Context, r Report) (Outcome, error) {
	month := Month(r.Time)
	rk := l.reporterKey(r.Reporter)
	cur, err := l.store.Get(ctx, rk)
	if err != nil {
		return Outcome{}, err
	}
	var st reporterState
	if cur.Rev != 0 {
		if err := json.Unmarshal(cur.Value, &st); err != nil {
			return Outcome{}, fmt.Errorf("reporter %q state: %w", r.Reporter, err)
		}
	}
	if cur.Rev != 0 && r.Seq <= st.Seq {
		return Outcome{}, nil // duplicate, retry or overtaken by a newer report
	}
	out := Outcome{Applied: true, Added: map[string]map[string]uint64{}}
	if cur.Rev != 0 && r.PrevSeq != st.Seq {
		out.Gap = true
		st.Gaps++
	}
	newEpoch := cur.Rev != 0 && r.Epoch != st.Epoch
	out.Reset = newEpoch
	adds := map[string]map[string]map[string]uint64{} // month -> department -> resource -> amount
	add := func(month, k string, d uint64) {
		if d == 0 {
			return
		}
		parts := strings.SplitN(k, "/", 3)
		dept, res := parts[0], parts[1]
		if adds[month] == nil {
			adds[month] = map[string]map[string]uint64{}
		}
		if adds[month][dept] == nil {
			adds[month][dept] = map[string]uint64{}
		}
		adds[month][dept][res] += d
		if out.Added[dept] == nil {
			out.Added[dept] = map[string]uint64{}
		}
		out.Added[dept][res] += d
	}
	totals := make(map[string]uint64, len(r.Samples))
	levels := map[string]uint64{}
	for _, s := range r.Samples {
		if s.Gauge {
			levels[s.key()] += s.Level
		} else {
			totals[s.key()] += s.Total
		}
	}
	// Gauges: the previous levels held from the previous report until this one (split at
	// month starts); a series missing now ended here.
	if cur.Rev != 0 && r.Time.After(st.Time) {
		if st.RemMs == nil {
			st.RemMs = map[string]uint64{}
		}
		for k, lv := range st.Levels {
			for _, sp := range splitMonths(st.Time, r.Time) {
				x := lv*sp.ms + st.RemMs[k]
				add(sp.month, k, x/1000)
				st.RemMs[k] = x % 1000
			}
		}
	}
	if cur.Rev == 0 || r.Time.After(st.Time) {
		st.Levels, st.Time = levels, r.Time
		for k := range st.RemMs {
			if _, ok := levels[k]; !ok {
				delete(st.RemMs, k)
			}
		}
	}
	for k, t := range totals {
		var d uint64
		old, seen := st.Totals[k]
		switch {
		case newEpoch || !seen:
			// A first report, a series new to this reporter, or counters that restarted from
			// zero: everything in the total is new.
			d = t
		case t >= old:
			d = t - old
		default:
			// The total went down in the same epoch: the counter restarted without the
			// reporter noticing; what it holds now is new.
			out.Reset = true
			d = t
		}
		add(month, k, d)
	}
	// Series missing from this report keep their last total (a report may carry a subset).
	if st.Totals == nil || newEpoch {
		st.Totals = map[string]uint64{}
	}
	for k, t := range totals {
		st.Totals[k] = t
	}
	st.Epoch, st.Seq = r.Epoch, r.Seq
	puts := map[string][]byte{}
	conds := map[string]int64{rk: cur.Rev}
	b, _ := json.Marshal(st)
	puts[rk] = b
	for month, byDept := range adds {
		for dept, add := range byDept {
			uk := l.usageKey(month, dept)
			u, err := l.store.Get(ctx, uk)
			if err != nil {
				return Outcome{}, err
			}
			m := map[string]uint64{}
			if u.Rev != 0 {
				if err := json.Unmarshal(u.Value, &m); err != nil {
					return Outcome{}, fmt.Errorf("usage %s of %q: %w", month, dept, err)
				}
			}
			for res, v := range add {
				m[res] += v
			}
			b, _ := json.Marshal(m)
			puts[uk] = b
			conds[uk] = u.Rev
		}
	}
	if err := l.store.Commit(ctx, conds, puts); err != nil {
		return Outcome{}, err
	}
	return out, nil
}

// Usage returns a month's usage ("YYYY-MM"), all departments.
func (l *Ledger) Usage(ctx context.Context, month string) (Usage, error) {
	if _, err := time.Parse("2006-01", month); err != nil {
		return nil, fmt.Errorf("month %q: want YYYY-MM", month)
	}
	kvs, err := l.store.List(ctx, l.usagePrefix(month))
	if err != nil {
		return nil, err
	}
	u := Usage{}
	for k, v := range kvs {
		dept := strings.TrimPrefix(k, l.usagePrefix(month))
		m := map[string]uint64{}
		if err := json.Unmarshal(v, &m); err != nil {
			return nil, fmt.Errorf("usage %s of %q: %w", month, dept, err)
		}
		u[dept] = m
	}
	return u, nil
}
