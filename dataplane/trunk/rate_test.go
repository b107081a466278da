package trunk_test

import (
	"testing"

	"github.com/govcloud/govcloud/dataplane/trunk"
	tt "github.com/govcloud/govcloud/dataplane/trunk/trunktest"
)

// rateStep is one action on the rate limiter: set a rate, re-point the guest port, or send
// n frames of size bytes one way and expect pass of them through.
type rateStep struct {
	setRate  *trunk.Rate // SetRate(dept, *setRate)
	setGuest uint32      // SetGuest(lo, setGuest): the port now belongs to this department
	unguest  bool        // DeleteGuest(lo)
	arp      bool        // send ARP instead of UDP
	rx       bool        // guest_rx, else guest_tx
	n, size  int
	pass     int
}

// slow is a limit at which a test's run time refills well under one byte per step: 100 B/s.
func slow(burst uint64) *trunk.Rate { return &trunk.Rate{BitsPerSecond: 800, BurstBytes: burst} }

// TestRateLimit runs the guest port programs through prog.Run: under, at and over the bucket,
// a frame bigger than the bucket, unlimited departments, directions and departments
// independent, and limit changes that keep the bucket's tokens.
func TestRateLimit(t *testing.T) {
	tr := load(t)
	const lo = 1 // the guest port: prog.Run needs an existing interface
	tests := []struct {
		name  string
		dept  uint32
		steps []rateStep
		drops uint64 // rate_limit drops of dept, segment 20, at the end
	}{
		{name: "under the bucket", dept: 10, steps: []rateStep{{setRate: slow(1000)}, {n: 9, size: 100, pass: 9}}},
		{name: "exactly the bucket", dept: 11, steps: []rateStep{{setRate: slow(1000)}, {n: 10, size: 100, pass: 10}}},
		{name: "one frame over the bucket", dept: 12, steps: []rateStep{{setRate: slow(1000)}, {n: 11, size: 100, pass: 10}}, drops: 1},
		{name: "well over the bucket", dept: 13, steps: []rateStep{{setRate: slow(1000)}, {n: 30, size: 100, pass: 10}}, drops: 20},
		{name: "frame bigger than the bucket", dept: 14, steps: []rateStep{{setRate: slow(1000)}, {n: 1, size: 1001, pass: 0}, {n: 1, size: 1000, pass: 1}}, drops: 1},
		{name: "mixed sizes fill the bucket exactly", dept: 15, steps: []rateStep{{setRate: slow(1000)}, {n: 1, size: 600, pass: 1}, {n: 1, size: 500, pass: 0}, {n: 1, size: 400, pass: 1}, {n: 1, size: 60, pass: 0}}, drops: 2},
		{name: "quota unset is unlimited", dept: 16, steps: []rateStep{{n: 50, size: 1000, pass: 50}}},
		{name: "quota 0 is unlimited", dept: 17, steps: []rateStep{{setRate: &trunk.Rate{}}, {n: 50, size: 1000, pass: 50}}},
		{name: "quota removed after draining: unlimited again", dept: 18, steps: []rateStep{{setRate: slow(1000)}, {n: 11, size: 100, pass: 10}, {setRate: &trunk.Rate{}}, {n: 20, size: 100, pass: 20}}, drops: 1},
		{name: "port not policed passes", dept: 19, steps: []rateStep{{setRate: slow(1000)}, {n: 10, size: 100, pass: 10}, {unguest: true}, {n: 5, size: 100, pass: 5}}},
		{name: "ARP passes an empty bucket uncharged", dept: 20, steps: []rateStep{{setRate: slow(1000)}, {n: 10, size: 100, pass: 10}, {arp: true, n: 3, pass: 3}, {n: 1, size: 100, pass: 0}}, drops: 1},
		{name: "rx and tx have separate buckets", dept: 21, steps: []rateStep{{setRate: slow(1000)}, {n: 11, size: 100, pass: 10}, {rx: true, n: 11, size: 100, pass: 10}}, drops: 2},
		{name: "two departments are independent", dept: 22, steps: []rateStep{{setRate: slow(1000)}, {n: 11, size: 100, pass: 10},
			{setGuest: 23}, {n: 10, size: 100, pass: 10}, // department 23 has no limit
			{setGuest: 22}, {n: 1, size: 100, pass: 0}}, drops: 2},
		{name: "lower quota: the bucket is clipped to the new depth", dept: 24, steps: []rateStep{{setRate: slow(1000)}, {n: 5, size: 100, pass: 5},
			{setRate: slow(300)}, {n: 3, size: 100, pass: 3}, {n: 1, size: 100, pass: 0}}, drops: 1},
		{name: "changed quota keeps an empty bucket empty (not reset)", dept: 25, steps: []rateStep{{setRate: slow(1000)}, {n: 10, size: 100, pass: 10},
			{setRate: slow(2000)}, {n: 1, size: 100, pass: 0}}, drops: 1},
		{name: "raised quota refills at the new rate", dept: 26, steps: []rateStep{{setRate: slow(1000)}, {n: 11, size: 100, pass: 10},
			{setRate: &trunk.Rate{BitsPerSecond: 80e9, BurstBytes: 1000}}, {n: 1, size: 100, pass: 1}}, drops: 1},
	}
	udp := func(size int) []byte {
		return tt.Pad(tt.UDPFrame(guestB, guestA, ipA, ipB, 4000, 5000, nil), size)
	}
	arp := tt.ARP(tt.ARPRequest, guestA, ipA, nil, ipB)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tr.SetGuest(lo, trunk.GuestPort{Department: tc.dept, Segment: 20}); err != nil {
				t.Fatal(err)
			}
			for i, s := range tc.steps {
				var err error
				switch {
				case s.setRate != nil:
					err = tr.SetRate(tc.dept, *s.setRate)
				case s.setGuest != 0:
					err = tr.SetGuest(lo, trunk.GuestPort{Department: s.setGuest, Segment: 20})
				case s.unguest:
					err = tr.DeleteGuest(lo)
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				prog := tr.GuestTX()
				if s.rx {
					prog = tr.GuestRX()
				}
				passed := 0
				for range s.n {
					in := arp
					if !s.arp {
						in = udp(s.size)
					}
					switch ret, _ := run(t, prog, lo, in); ret {
					case actNext:
						passed++
					case actShot:
					default:
						t.Fatalf("step %d: verdict %#x", i, ret)
					}
				}
				if passed != s.pass {
					t.Errorf("step %d: %d of %d frames passed, want %d", i, passed, s.n, s.pass)
				}
			}
			d, err := tr.Drops()
			if err != nil {
				t.Fatal(err)
			}
			if got := d[trunk.DropKey{Department: tc.dept, Segment: 20, Reason: trunk.DropRateLimit}].Packets; got != tc.drops {
				t.Errorf("rate_limit drops of department %d = %d, want %d", tc.dept, got, tc.drops)
			}
		})
	}
}

// TestRateEncoding checks the limits the agent can write and the ones it refuses.
func TestRateEncoding(t *testing.T) {
	tr := load(t)
	tests := []struct {
		name    string
		rate    trunk.Rate
		want    trunk.Rate // read back
		wantErr bool
	}{
		{name: "100 Mbit/s, default burst (300 ms)", rate: trunk.MbpsRate(100), want: trunk.Rate{BitsPerSecond: 100e6, BurstBytes: 3_750_000}},
		{name: "1 Mbit/s: burst at least MinBurst", rate: trunk.MbpsRate(1), want: trunk.Rate{BitsPerSecond: 1e6, BurstBytes: trunk.MinBurst}},
		{name: "400 Gbit/s: burst at most MaxBurst", rate: trunk.MbpsRate(400_000), want: trunk.Rate{BitsPerSecond: 400e9, BurstBytes: trunk.MaxBurst}},
		{name: "zero burst takes the default", rate: trunk.Rate{BitsPerSecond: 200e6}, want: trunk.Rate{BitsPerSecond: 200e6, BurstBytes: 7_500_000}},
		{name: "under one byte per second", rate: trunk.Rate{BitsPerSecond: 7}, wantErr: true},
		{name: "burst beyond MaxBurst", rate: trunk.Rate{BitsPerSecond: 8e9, BurstBytes: trunk.MaxBurst + 1}, wantErr: true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dept := uint32(100 + i)
			err := tr.SetRate(dept, tc.rate)
			if (err != nil) != tc.wantErr {
				t.Fatalf("SetRate(%+v) error = %v, want error %v", tc.rate, err, tc.wantErr)
			}
			got, rerr := tr.Rates()
			if rerr != nil {
				t.Fatal(rerr)
			}
			if tc.wantErr {
				if _, ok := got[dept]; ok {
					t.Fatalf("refused rate was written: %+v", got[dept])
				}
				return
			}
			if got[dept] != tc.want {
				t.Fatalf("read back %+v, want %+v", got[dept], tc.want)
			}
		})
	}
	if trunk.MbpsRate(0) != (trunk.Rate{}) || trunk.MbpsRate(-5) != (trunk.Rate{}) {
		t.Fatal("a quota of 0 or less must be unlimited")
	}
}
