package viproute

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
)

// Fake keeps VIP routes in memory for unit tests of callers (the agent). Set refuses the
// whole set, changing nothing, on what the kernel would refuse (an invalid VIP, a next hop of
// the other family or without device, next hops in different tables) and when Err is set; Routes returns what it holds.
type Fake struct {
	mu     sync.Mutex
	routes map[netip.Addr][]NextHop
	// Sets counts accepted Set calls.
	Sets int
	// Err, when set, is returned by every Set (which then changes nothing). Set it before use.
	Err    error
	Closed bool
}

// Set makes the held routes exactly want; VIPs without next hops get no route.
func (f *Fake) Set(want map[netip.Addr][]NextHop) error {
	var errs []error
	next := map[netip.Addr][]NextHop{}
	for vip, nhs := range want {
		if !vip.IsValid() {
			errs = append(errs, fmt.Errorf("route to VIP %s: invalid address", vip))
			continue
		}
		for _, nh := range nhs {
			if nh.Addr.Is4() != vip.Is4() || nh.Dev == "" {
				errs = append(errs, fmt.Errorf("route to VIP %s: next hop %s on %q: other family or no device", vip, nh.Addr, nh.Dev))
			}
		}
		if len(nhs) > 0 {
			if _, err := table(vip, nhs); err != nil {
				errs = append(errs, err)
			}
			s := slices.Clone(nhs)
			slices.SortFunc(s, func(a, b NextHop) int { return a.Addr.Compare(b.Addr) })
			next[vip] = s
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	f.routes = next
	f.Sets++
	return nil
}

// Routes returns a copy of the held routes, next hops sorted by address.
func (f *Fake) Routes() map[netip.Addr][]NextHop {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := maps.Clone(f.routes)
	if out == nil {
		out = map[netip.Addr][]NextHop{}
	}
	return out
}

// Close marks the fake closed; the routes stay, as the kernel's do.
func (f *Fake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Closed = true
	return nil
}
