package bgp

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// The case and its neighbours, on a simulated clock: count the UPDATEs a peer would
// get (an announcement or a withdrawal of the flapping VIP).
func TestHysteresisBoundsUpdates(t *testing.T) {
	vip := Advertisement{Prefix: netip.MustParsePrefix("198.18.100.1/32")}
	other := Advertisement{Prefix: netip.MustParsePrefix("198.18.100.2/32")}
	for _, tc := range []struct {
		name       string
		hd         HoldDown
		flaps      int
		down, up   time.Duration // one flap: down for, then up for
		wantUpdate int           // UPDATEs for vip, flapping and until it is announced for good
		wantMax    time.Duration // longest the last announcement may lag the last recovery
	}{
		{"20 flaps in 10 s, defaults", HoldDown{}, 20, 250 * time.Millisecond, 250 * time.Millisecond, 2, DefaultHoldDownInitial},
		{"20 flaps in 10 s, hysteresis off", HoldDown{Off: true}, 20, 250 * time.Millisecond, 250 * time.Millisecond, 40, 0},
		{"100 flaps of 10 ms", HoldDown{}, 100, 10 * time.Millisecond, 10 * time.Millisecond, 2, DefaultHoldDownInitial},
		{"one failure and recovery", HoldDown{}, 1, time.Second, 0, 2, DefaultHoldDownInitial},
		// Up 3 s each time (longer than the first delays): delays 2, 4 s, then held.
		{"slow flaps: up 3 s, down 100 ms, 6 times", HoldDown{}, 6, 100 * time.Millisecond, 3 * time.Second, 4, 8 * time.Second},
		{"slow flaps, max 3 s", HoldDown{Initial: time.Second, Max: 3 * time.Second}, 6, 100 * time.Millisecond, 3500 * time.Millisecond, 12, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hy Hysteresis
			now := time.Unix(1_000_000, 0)
			updates := 0
			announced := true
			var wake, lastAnnounce time.Time
			step := func(wanted bool) {
				ads := []Advertisement{other}
				if wanted {
					ads = append(ads, vip)
				}
				var got []Advertisement
				got, wake = hy.Filter(now, tc.hd, ads)
				has := false
				for _, a := range got {
					has = has || a.Prefix == vip.Prefix
				}
				if len(got) == 0 || got[0].Prefix != other.Prefix {
					t.Fatalf("the stable route was held back: %v", got)
				}
				if has != announced {
					updates++
					announced = has
					lastAnnounce = now
				}
			}
			step(true)
			// Advance the clock by d, running Filter at every wake-up on the way.
			advance := func(d time.Duration, wanted bool) {
				end := now.Add(d)
				for !wake.IsZero() && wake.Before(end) {
					now = wake
					step(wanted)
				}
				now = end
			}
			var lastUp time.Time
			for i := 0; i < tc.flaps; i++ {
				step(false)
				advance(tc.down, false)
				step(true)
				lastUp = now
				advance(tc.up, true)
			}
			advance(2*time.Hour, true)
			step(true)
			if !announced {
				t.Fatal("VIP never announced again")
			}
			if updates != tc.wantUpdate {
				t.Errorf("%d UPDATEs, want %d", updates, tc.wantUpdate)
			}
			if lag := lastAnnounce.Sub(lastUp); lag > tc.wantMax {
				t.Errorf("announced %s after the last recovery, want at most %s", lag, tc.wantMax)
			}
		})
	}
}

// The delay after the last recovery: Initial, doubled per withdrawal sent, at most Max,
// and forgotten after 2*Max without a withdrawal.
func TestHysteresisDelays(t *testing.T) {
	vip := Advertisement{Prefix: netip.MustParsePrefix("2001:db8:100::1/128")}
	hd := HoldDown{Initial: time.Second, Max: 4 * time.Second}
	var hy Hysteresis
	now := time.Unix(0, 0)
	release := func() time.Duration { // withdraw, want again, return the delay until announced
		t.Helper()
		hy.Filter(now, hd, nil)
		got, wake := hy.Filter(now, hd, []Advertisement{vip})
		if len(got) != 0 {
			return 0
		}
		d := wake.Sub(now)
		if got, _ := hy.Filter(wake.Add(-time.Millisecond), hd, []Advertisement{vip}); len(got) != 0 {
			t.Fatalf("announced before its wake-up")
		}
		if got, _ := hy.Filter(wake, hd, []Advertisement{vip}); len(got) != 1 {
			t.Fatalf("not announced at its wake-up")
		}
		now = wake
		return d
	}
	hy.Filter(now, hd, []Advertisement{vip})
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		if d := release(); d != want {
			t.Errorf("withdrawal %d: held %s, want %s", i+1, d, want)
		}
	}
	now = now.Add(9 * time.Second) // more than 2*Max since the last withdrawal
	if d := release(); d != time.Second {
		t.Errorf("after 2*Max without a withdrawal: held %s, want %s (the count starts over)", d, time.Second)
	}
}

func TestHoldDownValidate(t *testing.T) {
	for _, tc := range []struct {
		hd   HoldDown
		want string
	}{
		{HoldDown{}, ""},
		{HoldDown{Initial: 500 * time.Millisecond, Max: 10 * time.Second}, ""},
		{HoldDown{Initial: 10 * time.Millisecond}, "initial delay 10ms"},
		{HoldDown{Max: 2 * time.Hour}, "maximum delay 2h0m0s"},
		{HoldDown{Initial: 2 * time.Minute}, "initial delay 2m0s is above the maximum 1m0s"},
	} {
		err := tc.hd.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: error %v, want %q", tc.hd, err, tc.want)
		}
	}
}
