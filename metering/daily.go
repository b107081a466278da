package metering

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Day is the UTC day a time falls in, e.g. "2026-11-15": the ledger dates usage by day so a
// price list taking effect on a day rates that day on.
func Day(t time.Time) string { return t.UTC().Format("2006-01-02") }

// dayUsage is one department's usage on one day: resource -> item -> amount in base units.
type dayUsage map[string]map[string]uint64

// dayAdds is what one report adds: day -> department -> resource -> item -> amount.
type dayAdds map[string]map[string]dayUsage

// add adds d, false when the sum would wrap 64 bits (then nothing is added).
func (a dayAdds) add(day, dept, res, item string, d uint64) bool {
	if a[day] == nil {
		a[day] = map[string]dayUsage{}
	}
	if a[day][dept] == nil {
		a[day][dept] = dayUsage{}
	}
	if a[day][dept][res] == nil {
		a[day][dept][res] = map[string]uint64{}
	}
	if a[day][dept][res][item]+d < d {
		return false
	}
	a[day][dept][res][item] += d
	return true
}

// daySpan is the part of an interval in one UTC day.
type daySpan struct {
	day string
	ms  uint64
}

// splitDays cuts [from, to) at day starts (UTC).
func splitDays(from, to time.Time) []daySpan {
	var out []daySpan
	from, to = from.UTC(), to.UTC()
	for from.Before(to) {
		next := time.Date(from.Year(), from.Month(), from.Day()+1, 0, 0, 0, 0, time.UTC)
		end := to
		if next.Before(to) {
			end = next
		}
		out = append(out, daySpan{Day(from), uint64(end.Sub(from).Milliseconds())})
		from = end
	}
	return out
}

// migrateItemless carries a reporter's per-department network totals (kept before network
// samples were per segment, key "dept/res/") over to the per-segment series that replace
// them, so the first report with segments adds only what grew since: the old total is taken
// as the segments' starting point, shared out in segment order. Without it every byte
// counted before the upgrade would be counted again.
func migrateItemless(state, totals map[string]uint64) {
	for k, old := range state {
		if !strings.HasSuffix(k, "/") || strings.Count(k, "/") != 2 {
			continue
		}
		if _, still := totals[k]; still {
			continue
		}
		var items []string
		var sum uint64
		fresh := true
		for tk, t := range totals {
			if strings.HasPrefix(tk, k) && tk != k {
				if _, seen := state[tk]; seen {
					fresh = false
				}
				items = append(items, tk)
				sum += t
			}
		}
		if len(items) == 0 || !fresh {
			continue
		}
		sort.Strings(items)
		left := old
		if sum < old {
			left = sum // counters below the old total: nothing is new
		}
		for _, tk := range items {
			o := min(totals[tk], left)
			state[tk] = o
			left -= o
		}
		delete(state, k)
	}
}

// Usage is one month's quantities: department -> resource -> amount in base units.
type Usage map[string]map[string]uint64

// DatedAmount is one amount of a month's usage: a department's use of a resource by an item
// (segment, service or VM; "" when not broken down) on a day ("YYYY-MM-DD"; "" for usage
// recorded before the ledger dated usage, which counts from the month's first day).
type DatedAmount struct {
	Day        string `json:"day,omitempty"`
	Department string `json:"department"`
	Resource   string `json:"resource"`
	Item       string `json:"item,omitempty"`
	Amount     uint64 `json:"amount"`
}

// Dated returns a month's usage ("YYYY-MM") amount by amount, sorted by day, department,
// resource and item.
func (l *Ledger) Dated(ctx context.Context, month string) ([]DatedAmount, error) {
	if _, err := time.Parse("2006-01", month); err != nil {
		return nil, fmt.Errorf("month %q: want YYYY-MM", month)
	}
	var out []DatedAmount
	legacy, err := l.store.List(ctx, l.usagePrefix(month))
	if err != nil {
		return nil, err
	}
	for k, v := range legacy {
		dept := strings.TrimPrefix(k, l.usagePrefix(month))
		m := map[string]uint64{}
		if err := json.Unmarshal(v, &m); err != nil {
			return nil, fmt.Errorf("usage %s of %q: %w", month, dept, err)
		}
		for res, a := range m {
			if a != 0 {
				out = append(out, DatedAmount{Department: dept, Resource: res, Amount: a})
			}
		}
	}
	daily, err := l.store.List(ctx, l.dailyPrefix(month))
	if err != nil {
		return nil, err
	}
	for k, v := range daily {
		rest := strings.TrimPrefix(k, l.dailyPrefix(month))
		i := strings.LastIndexByte(rest, '/')
		if i < 0 {
			return nil, fmt.Errorf("usage key %q: want %sDEPARTMENT/DD", k, l.dailyPrefix(month))
		}
		dept, day := rest[:i], month+"-"+rest[i+1:]
		var m dayUsage
		if err := json.Unmarshal(v, &m); err != nil {
			return nil, fmt.Errorf("usage %s of %q: %w", day, dept, err)
		}
		for res, items := range m {
			for item, a := range items {
				if a != 0 {
					out = append(out, DatedAmount{Day: day, Department: dept, Resource: res, Item: item, Amount: a})
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Day != b.Day {
			return a.Day < b.Day
		}
		if a.Department != b.Department {
			return a.Department < b.Department
		}
		if a.Resource != b.Resource {
			return a.Resource < b.Resource
		}
		return a.Item < b.Item
	})
	return out, nil
}

// Usage returns a month's usage ("YYYY-MM"), all departments, summed over days and items.
func (l *Ledger) Usage(ctx context.Context, month string) (Usage, error) {
	d, err := l.Dated(ctx, month)
	if err != nil {
		return nil, err
	}
	u := Usage{}
	for _, a := range d {
		if u[a.Department] == nil {
			u[a.Department] = map[string]uint64{}
		}
		if u[a.Department][a.Resource]+a.Amount < a.Amount {
			return nil, fmt.Errorf("usage %s of %q: %s wraps 64 bits", month, a.Department, a.Resource)
		}
		u[a.Department][a.Resource] += a.Amount
	}
	return u, nil
}

// LastReport is when a reporter's last counted report was read: how fresh a bill is.
type LastReport struct {
	Host   string    `json:"host"`
	Source string    `json:"source"`
	Time   time.Time `json:"time"`
}

// LastReports lists every reporter's last counted report, by host and source.
func (l *Ledger) LastReports(ctx context.Context) ([]LastReport, error) {
	kvs, err := l.store.List(ctx, l.prefix+"reporters/")
	if err != nil {
		return nil, err
	}
	var out []LastReport
	for k, v := range kvs {
		host, source, ok := strings.Cut(strings.TrimPrefix(k, l.prefix+"reporters/"), "/")
		if !ok {
			source = SourceNetwork
		}
		var st struct {
			Time time.Time `json:"time"`
		}
		if err := json.Unmarshal(v, &st); err != nil {
			return nil, fmt.Errorf("reporter state of host %q (%s): %w", host, source, err)
		}
		out = append(out, LastReport{Host: host, Source: source, Time: st.Time.UTC()})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Host != out[j].Host {
			return out[i].Host < out[j].Host
		}
		return out[i].Source < out[j].Source
	})
	return out, nil
}
