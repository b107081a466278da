package hostnet

import "sync"

// Fake records what it is asked to Set, for unit tests of callers. It validates like Host and
// returns Err (when set) from Set.
type Fake struct {
	mu     sync.Mutex
	Sets   []HostNetwork
	Err    error
	Closed bool
}

var _ Network = (*Fake)(nil)

// Set records desired (after validation).
func (f *Fake) Set(desired HostNetwork) error {
	if err := desired.Validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	f.Sets = append(f.Sets, desired)
	return nil
}

// SetErr sets what Set returns from now on (nil: success), safely while Set is in use.
func (f *Fake) SetErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Err = err
}

// Current returns the last desired state Set accepted.
func (f *Fake) Current() (HostNetwork, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.Sets) == 0 {
		return HostNetwork{}, false
	}
	return f.Sets[len(f.Sets)-1], true
}

// Close marks the fake closed.
func (f *Fake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Closed = true
	return nil
}

// SetCount is how many Sets were accepted, safely while Set is in use.
func (f *Fake) SetCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.Sets)
}
