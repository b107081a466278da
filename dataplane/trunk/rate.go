package trunk

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/govcloud/govcloud/dataplane/bpfobj"
)

// Rate is a department's bandwidth limit on one host, enforced separately on what its guests
// send (TX) and what they receive (RX) by a token bucket each.
type Rate struct {
	BitsPerSecond uint64 // 0: unlimited
	BurstBytes    uint64 // bucket depth; DefaultBurst(BitsPerSecond) when 0
}

// MinBurst is the smallest bucket: one maximal GSO frame (64 KiB, what a guest's TCP hands
// a veth or tap in one skb) twice over. A bucket smaller than one frame would drop every
// frame of that size for ever.
const MinBurst = 128 << 10

// MaxBurst bounds the bucket: tokens are kept in nano-bytes in a u64 (burst * 1e9 < 2^64).
const MaxBurst = 1 << 33

// burstTime is how much traffic at the limit the bucket holds. A policer drops where a
// shaper would queue, and between guests on one host or two the RTT is tens of microseconds:
// TCP's smallest window is then far above any limit, so the bucket always runs dry and the
// flow loses a run of segments, retransmissions included, and waits out a retransmission
// timeout (Linux's minimum is 200 ms) before it sends again. Measured with iperf3 between
// guests (dataplane/hostnet TestBandwidthLimit): TCP gets about min(limit, burst / 200 ms),
// so 5 and 10 Mbit/s at a limit of 100 with buckets of 128 kB and 250 kB, 40 with 1 MB; with
// 200, 300 and 500 ms of traffic it got 94, 98 and 98 Mbit/s at 100 and 194, 203 and 203 at
// 200. 300 ms leaves a margin over the 200 ms timeout; the price is that a flow may run
// ahead of the limit by 300 ms worth of traffic (3.75 MB at 100 Mbit/s) after an idle spell,
// so one-second samples swing about 15% around the limit while longer averages hold it.
const burstTime = 300e-3

// DefaultBurst is the bucket depth for a limit of bps bits per second: 300 ms of traffic at
// the limit, at least MinBurst, at most MaxBurst.
func DefaultBurst(bps uint64) uint64 {
	b := uint64(float64(bps) / 8 * burstTime)
	return min(max(b, MinBurst), MaxBurst)
}

// MbpsRate is the Rate for a quota in megabits per second (1 Mbit = 10^6 bits), the unit of
// spec.quotas.bandwidthMbps; 0 or less is unlimited (the zero Rate).
func MbpsRate(mbps int) Rate {
	if mbps <= 0 {
		return Rate{}
	}
	bps := uint64(mbps) * 1_000_000
	return Rate{BitsPerSecond: bps, BurstBytes: DefaultBurst(bps)}
}

func encodeRate(dept uint32, r Rate) (bpfobj.TrunkTrunkRate, error) {
	burst := r.BurstBytes
	if burst == 0 {
		burst = DefaultBurst(r.BitsPerSecond)
	}
	bytesPerSec := r.BitsPerSecond / 8
	if bytesPerSec == 0 {
		return bpfobj.TrunkTrunkRate{}, fmt.Errorf("department %d: rate %d bit/s is below 8 bit/s", dept, r.BitsPerSecond)
	}
	if burst > MaxBurst {
		return bpfobj.TrunkTrunkRate{}, fmt.Errorf("department %d: burst %d bytes exceeds %d", dept, burst, uint64(MaxBurst))
	}
	const nsec = 1_000_000_000
	fill := (burst*nsec + bytesPerSec - 1) / bytesPerSec
	return bpfobj.TrunkTrunkRate{Rate: bytesPerSec, Burst: burst, FillNs: fill}, nil
}

// SetRate sets (or, with a zero BitsPerSecond, removes) department dept's limit. The buckets
// keep their tokens: a change applies from the next frame, established flows carry on.
func (t *Trunk) SetRate(dept uint32, r Rate) error {
	if r.BitsPerSecond == 0 {
		if err := t.objs.TrunkRates.Delete(dept); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("department %d: removing rate: %w", dept, err)
		}
		return nil
	}
	v, err := encodeRate(dept, r)
	if err != nil {
		return err
	}
	// A hash map update replaces the value whole: the program never sees half a change.
	if err := t.objs.TrunkRates.Put(dept, &v); err != nil {
		return fmt.Errorf("department %d: writing rate %d bit/s: %w", dept, r.BitsPerSecond, err)
	}
	return nil
}

// Rates reads every department's limit from the kernel (bits per second rounded down to
// whole bytes per second).
func (t *Trunk) Rates() (map[uint32]Rate, error) {
	out := map[uint32]Rate{}
	var (
		k uint32
		v bpfobj.TrunkTrunkRate
	)
	it := t.objs.TrunkRates.Iterate()
	for it.Next(&k, &v) {
		out[k] = Rate{BitsPerSecond: v.Rate * 8, BurstBytes: v.Burst}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading trunk rates: %w", err)
	}
	return out, nil
}

// GuestPort is a policed guest port: the department and segment its traffic is charged to.
type GuestPort struct {
	Department uint32
	Segment    uint32
}

// SetGuest makes the guest port ifindex charge its traffic to g.Department (drops counted
// under g.Segment). The port also needs its RoleGuestTX and RoleGuestRX attachments.
func (t *Trunk) SetGuest(ifindex int, g GuestPort) error {
	if ifindex <= 0 {
		return fmt.Errorf("guest port: bad ifindex %d", ifindex)
	}
	v := bpfobj.TrunkTrunkGuest{DeptId: g.Department, SegId: g.Segment}
	if err := t.objs.TrunkGuests.Put(uint32(ifindex), &v); err != nil {
		return fmt.Errorf("guest port ifindex %d: writing: %w", ifindex, err)
	}
	return nil
}

// DeleteGuest stops policing port ifindex. A missing entry is fine.
func (t *Trunk) DeleteGuest(ifindex int) error {
	if err := t.objs.TrunkGuests.Delete(uint32(ifindex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("guest port ifindex %d: deleting: %w", ifindex, err)
	}
	return nil
}

// Guests reads the policed guest ports from the kernel, by ifindex.
func (t *Trunk) Guests() (map[int]GuestPort, error) {
	out := map[int]GuestPort{}
	var (
		k uint32
		v bpfobj.TrunkTrunkGuest
	)
	it := t.objs.TrunkGuests.Iterate()
	for it.Next(&k, &v) {
		out[int(k)] = GuestPort{Department: v.DeptId, Segment: v.SegId}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading trunk guest ports: %w", err)
	}
	return out, nil
}

// BucketTokens returns the bytes left in department dept's bucket for direction d (false when
// no frame has been charged to it yet). It is a snapshot: the bucket refills with time.
func (t *Trunk) BucketTokens(dept uint32, d Direction) (uint64, bool, error) {
	var v bpfobj.TrunkTrunkBucket
	err := t.objs.TrunkBuckets.Lookup(bpfobj.TrunkTrunkBucketKey{DeptId: dept, Dir: uint32(d)}, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("department %d %s bucket: %w", dept, d, err)
	}
	return v.Tokens / 1_000_000_000, true, nil
}

// GuestTX and GuestRX are the guest port programs (for tests and benchmarks).
func (t *Trunk) GuestTX() *ebpf.Program { return t.objs.GuestTx }
func (t *Trunk) GuestRX() *ebpf.Program { return t.objs.GuestRx }
