package bgp

import (
	"fmt"
	"net/netip"
	"time"
)

// HoldDown is the speaker's hysteresis on re-announcing a route it withdrew (a VIP whose
// health flaps). Withdrawals are never delayed: a VIP without a healthy backend leaves the
// fabric at once. A route withdrawn before is announced again only after it has been wanted
// without a break for the hold-down delay: Initial after its first withdrawal, doubling with
// each further withdrawal, at most Max. A route not withdrawn for 2*Max starts over.
//
// The bound this gives: a VIP whose health flaps faster than Initial costs one withdrawal
// (at the first failure) and one announcement (Initial after the last recovery) per peer,
// however many flaps: 20 flaps in 10 s are 2 UPDATEs where they were 40, and a ToR's route
// flap damping sees one flap (FRR's defaults: penalty 1000 per flap, suppress at 2000), so
// the VIP stays usable. Slower flapping (up longer than the current delay each time) sends
// one withdrawal per up period, at most one per Initial, 2*Initial, 4*Initial, ... Max.
type HoldDown struct {
	// Off turns the hysteresis off: every change is announced at once.
	Off bool `json:"off,omitempty"`
	// Initial is the delay after a first withdrawal (0: DefaultHoldDownInitial).
	Initial time.Duration `json:"initial,omitempty"`
	// Max bounds the doubling delay (0: DefaultHoldDownMax).
	Max time.Duration `json:"max,omitempty"`
}

// Defaults of HoldDown.
const (
	DefaultHoldDownInitial = 2 * time.Second
	DefaultHoldDownMax     = 60 * time.Second
)

// Validate checks the delays: Initial and Max from 100 ms to 1 h, Initial <= Max.
func (h HoldDown) Validate() error {
	i, m := h.delays()
	switch {
	case h.Initial < 0 || (h.Initial != 0 && h.Initial < 100*time.Millisecond) || h.Initial > time.Hour:
		return fmt.Errorf("hold-down initial delay %s: must be 0 (default %s) or from 100ms to 1h", h.Initial, DefaultHoldDownInitial)
	case h.Max < 0 || (h.Max != 0 && h.Max < 100*time.Millisecond) || h.Max > time.Hour:
		return fmt.Errorf("hold-down maximum delay %s: must be 0 (default %s) or from 100ms to 1h", h.Max, DefaultHoldDownMax)
	case i > m:
		return fmt.Errorf("hold-down initial delay %s is above the maximum %s", i, m)
	}
	return nil
}

func (h HoldDown) delays() (initial, maxDelay time.Duration) {
	initial, maxDelay = h.Initial, h.Max
	if initial == 0 {
		initial = DefaultHoldDownInitial
	}
	if maxDelay == 0 {
		maxDelay = DefaultHoldDownMax
	}
	return initial, maxDelay
}

// Hysteresis applies a HoldDown to successive desired route sets. It is a pure state machine
// (the caller passes the time): not safe for concurrent use.
type Hysteresis struct {
	routes map[netip.Prefix]*flapState
	// announced is what the last Filter let through.
	announced map[netip.Prefix]bool
}

type flapState struct {
	withdrawals  int       // withdrawals sent since the count last started over
	lastWithdraw time.Time // when the last one was sent
	wantedSince  time.Time // start of the current unbroken wanted period (zero: not wanted)
}

// Filter returns which of the wanted routes to announce now, and when Filter should run again
// to release a held route (zero time: nothing held). A route in the last result but not in
// wanted counts as a withdrawal, sent now.
func (hy *Hysteresis) Filter(now time.Time, h HoldDown, wanted []Advertisement) (announce []Advertisement, wake time.Time) {
	if hy.routes == nil {
		hy.routes, hy.announced = map[netip.Prefix]*flapState{}, map[netip.Prefix]bool{}
	}
	initial, maxDelay := h.delays()
	want := make(map[netip.Prefix]bool, len(wanted))
	for _, a := range wanted {
		want[a.Prefix] = true
	}
	for p := range hy.announced {
		if !want[p] {
			st := hy.state(p)
			if now.Sub(st.lastWithdraw) > 2*maxDelay {
				st.withdrawals = 0
			}
			st.withdrawals++
			st.lastWithdraw = now
			delete(hy.announced, p)
		}
	}
	for p, st := range hy.routes {
		if !want[p] {
			st.wantedSince = time.Time{}
			if now.Sub(st.lastWithdraw) > 2*maxDelay {
				delete(hy.routes, p) // forgotten: its next announcement is immediate
			}
		}
	}
	next := map[netip.Prefix]bool{}
	for _, a := range wanted {
		p := a.Prefix
		st := hy.routes[p]
		if h.Off || hy.announced[p] || st == nil || st.withdrawals == 0 || now.Sub(st.lastWithdraw) > 2*maxDelay {
			announce = append(announce, a)
			next[p] = true
			continue
		}
		if st.wantedSince.IsZero() {
			st.wantedSince = now
		}
		delay := min(initial<<min(st.withdrawals-1, 30), maxDelay)
		if release := st.wantedSince.Add(delay); !now.Before(release) {
			announce = append(announce, a)
			next[p] = true
		} else if wake.IsZero() || release.Before(wake) {
			wake = release
		}
	}
	hy.announced = next
	return announce, wake
}

func (hy *Hysteresis) state(p netip.Prefix) *flapState {
	st := hy.routes[p]
	if st == nil {
		st = &flapState{}
		hy.routes[p] = st
	}
	return st
}
