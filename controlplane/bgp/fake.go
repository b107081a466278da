package bgp

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"sync"
)

// Fake is an in-memory Speaker for unit tests of the code that drives a speaker. It validates
// like the real one, records the last desired state, counts the calls that changed something,
// and reports every peer as established (BFD up where configured) with the advertisements of
// its family. It applies no flap hysteresis: every Set is advertised at once.
type Fake struct {
	mu      sync.Mutex
	cfg     Config
	adverts []Advertisement
	closed  bool
	// Changes counts Set calls that changed the desired state; Sets counts all Set calls.
	Changes, Sets int
	// Err, when set, is returned by the next Set (which then changes nothing).
	Err error
	// Down lists peers to report as not established, with the reason to give.
	Down map[string]string
}

var _ Speaker = (*Fake)(nil)

// ErrClosed is returned by Set after Close.
var ErrClosed = errors.New("bgp speaker: closed")

// Set records the desired state.
func (f *Fake) Set(cfg Config, adverts []Advertisement) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Sets++
	if f.closed {
		return ErrClosed
	}
	if err := f.Err; err != nil {
		f.Err = nil
		return err
	}
	if !(cfg.IsZero() && len(adverts) == 0) {
		if err := Validate(cfg, adverts); err != nil {
			return err
		}
	}
	if !reflect.DeepEqual(cfg, f.cfg) || !sameAdverts(adverts, f.adverts) {
		f.Changes++
	}
	f.cfg = cfg
	f.adverts = slices.Clone(adverts)
	return nil
}

// State returns the last desired state Set accepted.
func (f *Fake) State() (Config, []Advertisement) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cfg, slices.Clone(f.adverts)
}

// Advertised returns the prefixes currently advertised, sorted.
func (f *Fake) Advertised() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, a := range f.adverts {
		out = append(out, a.Prefix.String())
	}
	slices.Sort(out)
	return out
}

// Status reports each configured peer.
func (f *Fake) Status() []PeerStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []PeerStatus
	for _, p := range f.cfg.Peers {
		st := PeerStatus{Address: p.Address, ASN: p.ASN, State: "established", Established: true}
		if p.BFD != nil {
			st.BFD = &BFDStatus{State: "up", RemoteState: "up"}
		}
		if r, down := f.Down[p.Address.String()]; down || f.closed {
			st = PeerStatus{Address: p.Address, ASN: p.ASN, State: "idle", Reason: r}
			if p.BFD != nil {
				st.BFD = &BFDStatus{State: "down", RemoteState: "down"}
			}
		} else {
			v4, v6 := p.Families()
			for _, a := range f.adverts {
				if (a.Prefix.Addr().Is4() && v4) || (a.Prefix.Addr().Is6() && v6) {
					st.Advertised++
				}
			}
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return a.Address.Compare(b.Address) })
	return out
}

// Close marks the fake closed.
func (f *Fake) Close(context.Context, bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func sameAdverts(a, b []Advertisement) bool {
	if len(a) != len(b) {
		return false
	}
	m := make(map[string]Advertisement, len(a))
	for _, x := range a {
		m[x.Prefix.String()] = x
	}
	for _, y := range b {
		x, ok := m[y.Prefix.String()]
		if !ok || !reflect.DeepEqual(x, y) {
			return false
		}
	}
	return true
}
