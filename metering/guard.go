package metering

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Sources a report may come from; each is one reporter state per host.
const (
	SourceNetwork = "network" // the network agent: trunk bytes per department segment
	SourceLB      = "lb"      // the network agent: its load balancer's bytes per public VIP
	SourceCompute = "compute" // the compute agent: vCPU time, memory and volumes per VM
)

// sourceResources are the resources each source meters: a host's network agent cannot know
// vCPU time, nor its compute agent trunk bytes.
var sourceResources = map[string]map[string]bool{
	SourceNetwork: {ResNetRxBytes: true, ResNetTxBytes: true},
	SourceLB:      {ResNetVIPInBytes: true},
	SourceCompute: {ResVCPUSeconds: true, ResMemoryMiBSeconds: true, ResVolumeGiBSeconds: true},
}

// gaugeResources are reported as levels (Sample.Gauge); the others as monotonic totals.
var gaugeResources = map[string]bool{ResMemoryMiBSeconds: true, ResVolumeGiBSeconds: true}

// Resources lists every resource a ledger counts.
func Resources() []string {
	return []string{ResNetRxBytes, ResNetTxBytes, ResNetVIPInBytes, ResVCPUSeconds, ResMemoryMiBSeconds, ResVolumeGiBSeconds}
}

// Placement is what the controller's desired state puts on a host, so the ledger accepts only
// samples the host's reporter can know. The controller implements it from its store (metering
// does not import the control plane).
type Placement interface {
	// OnHost returns what is on host, nil (and no error) when no such host exists, or an
	// error when the desired state cannot be read.
	OnHost(ctx context.Context, host string) (*HostPlacement, error)
}

// HostPlacement is one host's share of the desired state.
type HostPlacement struct {
	Departments map[string]bool     // every department that exists
	Segments    map[string]bool     // departments with a segment on the host (their bytes cross its trunk)
	SegmentOf   map[string]string   // segments on the host -> department (nil: items not checked)
	ServiceOf   map[string]string   // services the host balances -> department (nil: not checked)
	VMs         map[string]PlacedVM // VMs placed on the host, by name
}

// PlacedVM is one VM placed on a host: what bounds its vCPU time, memory and volumes.
type PlacedVM struct {
	Department string
	VCPUs      uint64
	MemoryMiB  uint64
	VolumeGiB  uint64 // its data volumes' sizes summed (the root disk is Limits.RootDiskGiB)
}

// StaticPlacement is a fixed Placement by host name (tests, tools).
type StaticPlacement map[string]*HostPlacement

// OnHost implements Placement.
func (p StaticPlacement) OnHost(_ context.Context, host string) (*HostPlacement, error) {
	return p[host], nil
}

// Limits bound what one report may claim. Zero fields take the defaults shown.
type Limits struct {
	ClockSkew      time.Duration // a report's time within this of the controller's clock: 5m
	Grace          time.Duration // a month closes this long after the next one began: 1h
	MaxBitRate     uint64        // a host's link rate, bits/s per direction: 100e9 (100 Gbit/s)
	MaxSamples     int           // samples per report: 4096
	MaxDepartments int           // distinct departments per report: 256
	MaxSeries      int           // series kept per reporter: 4 x MaxSamples
	RootDiskGiB    uint64        // a VM's root disk, beyond its volumes: 64
	// Without a Placement (unit tests only; the controller always has one): per-VM bounds.
	MaxVCPUs     uint64 // 1024
	MaxMemoryMiB uint64 // 1<<24 (16 TiB)
	MaxVolumeGiB uint64 // 1<<20 (1 PiB)
}

func (l Limits) withDefaults() Limits {
	def := func(v *uint64, d uint64) {
		if *v == 0 {
			*v = d
		}
	}
	if l.ClockSkew == 0 {
		l.ClockSkew = 5 * time.Minute
	}
	if l.Grace == 0 {
		l.Grace = time.Hour
	}
	def(&l.MaxBitRate, 100e9)
	if l.MaxSamples == 0 {
		l.MaxSamples = 4096
	}
	if l.MaxDepartments == 0 {
		l.MaxDepartments = 256
	}
	if l.MaxSeries == 0 {
		l.MaxSeries = 4 * l.MaxSamples
	}
	def(&l.RootDiskGiB, 64)
	def(&l.MaxVCPUs, 1024)
	def(&l.MaxMemoryMiB, 1<<24)
	def(&l.MaxVolumeGiB, 1<<20)
	return l
}

// Refusal reasons (the reason label of govcloud_usage_reports_refused_total).
const (
	ReasonInvalid      = "invalid"       // malformed field (names, seq, time, epoch, duplicates)
	ReasonIdentity     = "identity"      // the caller is not the reporting host
	ReasonResource     = "resource"      // unknown resource, or not the source's
	ReasonNotOnHost    = "not_on_host"   // department or VM not placed on the reporting host
	ReasonClock        = "clock"         // time outside the window around the controller's clock
	ReasonClosedMonth  = "closed_month"  // the report's month is closed
	ReasonNotMonotonic = "not_monotonic" // a total went down without a new epoch
	ReasonImpossible   = "impossible"    // growth or level beyond what the host can do
	ReasonTooLarge     = "too_large"     // more samples, departments or series than a report may carry
	ReasonOverflow     = "overflow"      // a sum would wrap 64 bits
	ReasonStale        = "stale"         // behind the last report counted, or of an epoch already ended
)

// RefusalReasons lists every reason, so each has a 0 series from the start.
func RefusalReasons() []string {
	return []string{ReasonInvalid, ReasonIdentity, ReasonResource, ReasonNotOnHost, ReasonClock, ReasonClosedMonth,
		ReasonNotMonotonic, ReasonImpossible, ReasonTooLarge, ReasonOverflow}
}

// RefusedError is a report the ledger will not count: Field names the offending field (e.g.
// "samples[3].department"), Value its value. Nothing of a refused report is counted.
type RefusedError struct {
	Reason string
	Field  string
	Value  string
	Msg    string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("usage report refused: %s %q: %s", e.Field, e.Value, e.Msg)
}

func refuse(reason, field, value, format string, args ...any) *RefusedError {
	return &RefusedError{Reason: reason, Field: field, Value: value, Msg: fmt.Sprintf(format, args...)}
}

// checkName refuses empty, long, '/'-holding, non-UTF-8 or control-character names (they end
// up in etcd keys, bills and audit entries).
func checkName(field, v string, max int) *RefusedError {
	switch {
	case v == "":
		return refuse(ReasonInvalid, field, v, "required")
	case len(v) > max:
		return refuse(ReasonInvalid, field, v[:max]+"...", "longer than %d bytes", max)
	case !utf8.ValidString(v):
		return refuse(ReasonInvalid, field, v, "not UTF-8")
	case strings.ContainsFunc(v, func(r rune) bool { return unicode.IsControl(r) || r == '/' || unicode.IsSpace(r) }):
		return refuse(ReasonInvalid, field, v, "contains '/', a space or a control character")
	}
	return nil
}

// check refuses what is wrong with a report on its own, before any state is read.
func (r *Report) check(lim Limits) *RefusedError {
	if r.Reporter != "" && r.Host == "" { // an agent of before (host, source): its network reporter
		r.Host, r.Source = r.Reporter, SourceNetwork
	}
	if r.Reporter != "" && r.Reporter != r.Host {
		return refuse(ReasonInvalid, "reporter", r.Reporter, "differs from host %q (leave reporter out)", r.Host)
	}
	r.Reporter = ""
	if e := checkName("host", r.Host, 253); e != nil {
		return e
	}
	if sourceResources[r.Source] == nil {
		return refuse(ReasonInvalid, "source", r.Source, "want %s, %s or %s", SourceNetwork, SourceLB, SourceCompute)
	}
	if len(r.Epoch) > 256 || !utf8.ValidString(r.Epoch) || strings.ContainsFunc(r.Epoch, func(c rune) bool {
		return unicode.IsControl(c) || unicode.In(c, unicode.Cf, unicode.Zl, unicode.Zp, unicode.Other_Default_Ignorable_Code_Point)
	}) {
		return refuse(ReasonInvalid, "epoch", r.Epoch, "longer than 256 bytes, not UTF-8, or holds control or invisible characters")
	}
	if r.Seq == 0 {
		return refuse(ReasonInvalid, "seq", "0", "must be above 0")
	}
	if r.Time.IsZero() {
		return refuse(ReasonInvalid, "time", "", "required")
	}
	// A reporter's seq is its report's time in nanoseconds (or one more than its last): a seq
	// beyond the report's time cannot be, and would make the reporter's later reports look old.
	if t := r.Time.UnixNano(); t > 0 && r.Seq > uint64(t)+uint64(time.Minute) {
		return refuse(ReasonInvalid, "seq", strconv.FormatUint(r.Seq, 10), "ahead of the report's time (%s): a seq is the report's time in nanoseconds", r.Time.UTC().Format(time.RFC3339Nano))
	}
	if len(r.Samples) > lim.MaxSamples {
		return refuse(ReasonTooLarge, "samples", fmt.Sprint(len(r.Samples)), "at most %d samples per report", lim.MaxSamples)
	}
	seen := make(map[string]int, len(r.Samples))
	depts := map[string]bool{}
	for i, s := range r.Samples {
		f := fmt.Sprintf("samples[%d]", i)
		if e := checkName(f+".department", s.Department, 63); e != nil {
			return e
		}
		if !sourceResources[SourceNetwork][s.Resource] && !sourceResources[SourceLB][s.Resource] && !sourceResources[SourceCompute][s.Resource] {
			return refuse(ReasonResource, f+".resource", s.Resource, "unknown resource (want one of %s)", strings.Join(Resources(), ", "))
		}
		if !sourceResources[r.Source][s.Resource] {
			return refuse(ReasonResource, f+".resource", s.Resource, "not metered by a %s reporter", r.Source)
		}
		if r.Source == SourceCompute {
			if e := checkName(f+".item", s.Item, 253); e != nil {
				e.Msg += " (the VM the sample is of)"
				return e
			}
		} else if s.Item != "" {
			// Agents before per-segment samples send none; theirs is the department's sum.
			if e := checkName(f+".item", s.Item, 253); e != nil {
				e.Msg += " (the segment or service the sample is of)"
				return e
			}
		}
		if s.Gauge != gaugeResources[s.Resource] {
			return refuse(ReasonInvalid, f+".gauge", fmt.Sprint(s.Gauge), "resource %s is reported as %s", s.Resource, map[bool]string{true: "a level", false: "a total"}[gaugeResources[s.Resource]])
		}
		if s.Gauge && s.Total != 0 {
			return refuse(ReasonInvalid, f+".total", fmt.Sprint(s.Total), "a level sample has no total")
		}
		if !s.Gauge && s.Level != 0 {
			return refuse(ReasonInvalid, f+".level", fmt.Sprint(s.Level), "a total sample has no level")
		}
		if j, dup := seen[s.key()]; dup {
			return refuse(ReasonInvalid, f, s.key(), "the same series as samples[%d]", j)
		}
		seen[s.key()] = i
		depts[s.Department] = true
		if len(depts) > lim.MaxDepartments {
			return refuse(ReasonTooLarge, f+".department", s.Department, "more than %d departments in one report", lim.MaxDepartments)
		}
	}
	return nil
}

// monthClosed says whether month m ("YYYY-MM") is closed at now: the next month began more
// than grace ago.
func monthClosed(m string, now time.Time, grace time.Duration) bool {
	t, err := time.Parse("2006-01", m)
	if err != nil {
		return true
	}
	return !now.Before(t.AddDate(0, 1, 0).Add(grace))
}

// checkClock refuses a report dated too far from the controller's clock or into a closed month.
func checkClock(r *Report, now time.Time, lim Limits) *RefusedError {
	if d := r.Time.Sub(now); d > lim.ClockSkew || d < -lim.ClockSkew {
		return refuse(ReasonClock, "time", r.Time.UTC().Format(time.RFC3339Nano), "more than %s from the controller's clock (%s)", lim.ClockSkew, now.UTC().Format(time.RFC3339))
	}
	if m := Month(r.Time); monthClosed(m, now, lim.Grace) {
		return refuse(ReasonClosedMonth, "time", r.Time.UTC().Format(time.RFC3339Nano), "month %s is closed (closed %s after the next month began)", m, lim.Grace)
	}
	return nil
}

// checkPlacement refuses samples of departments and VMs the desired state does not put on
// the reporting host, and levels beyond what the VM was given.
func checkPlacement(r *Report, hp *HostPlacement, lim Limits) *RefusedError {
	if hp == nil {
		return refuse(ReasonNotOnHost, "host", r.Host, "no such host")
	}
	for i, s := range r.Samples {
		f := fmt.Sprintf("samples[%d]", i)
		if !hp.Departments[s.Department] {
			return refuse(ReasonNotOnHost, f+".department", s.Department, "no such department")
		}
		if r.Source != SourceCompute {
			if !hp.Segments[s.Department] {
				return refuse(ReasonNotOnHost, f+".department", s.Department, "nothing of department %s is on host %s", s.Department, r.Host)
			}
			names, what := hp.SegmentOf, "segment"
			if s.Resource == ResNetVIPInBytes {
				names, what = hp.ServiceOf, "service"
			}
			if s.Item != "" && names != nil && names[s.Item] != s.Department {
				return refuse(ReasonNotOnHost, f+".item", s.Item, "no %s of that name of department %s is on host %s", what, s.Department, r.Host)
			}
			continue
		}
		vm, ok := hp.VMs[s.Item]
		if !ok {
			return refuse(ReasonNotOnHost, f+".item", s.Item, "no VM of that name is placed on host %s", r.Host)
		}
		if vm.Department != s.Department {
			return refuse(ReasonNotOnHost, f+".department", s.Department, "VM %s on host %s is of department %s", s.Item, r.Host, vm.Department)
		}
		if e := checkLevel(f, s, vm, lim); e != nil {
			return e
		}
	}
	return nil
}

// checkLevel bounds a gauge by what the VM was given.
func checkLevel(f string, s Sample, vm PlacedVM, lim Limits) *RefusedError {
	switch s.Resource {
	case ResMemoryMiBSeconds:
		if s.Level > vm.MemoryMiB {
			return refuse(ReasonImpossible, f+".level", fmt.Sprint(s.Level), "VM %s has %d MiB of memory", s.Item, vm.MemoryMiB)
		}
	case ResVolumeGiBSeconds:
		if max := vm.VolumeGiB + lim.RootDiskGiB; s.Level > max {
			return refuse(ReasonImpossible, f+".level", fmt.Sprint(s.Level), "VM %s has at most %d GiB of disks (volumes %d + root %d)", s.Item, max, vm.VolumeGiB, lim.RootDiskGiB)
		}
	}
	return nil
}

// unplacedVM bounds a VM's samples when the ledger has no Placement (unit tests).
func unplacedVM(lim Limits) PlacedVM {
	return PlacedVM{VCPUs: lim.MaxVCPUs, MemoryMiB: lim.MaxMemoryMiB, VolumeGiB: lim.MaxVolumeGiB}
}
