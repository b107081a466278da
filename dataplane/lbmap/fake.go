package lbmap

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/govcloud/govcloud/lb"
)

// Fake is an in-memory load balancer for unit tests of the code that drives a Dataplane
// (the agent): it keeps what it is told, validates the services like Set does, and can be
// made to fail. Nothing touches the kernel.
type Fake struct {
	mu sync.Mutex
	st FakeState
	// AttachErr, when set, is returned by every AttachUplink (the program stays where it was);
	// SetErr likewise by every Set (the services stay as they were). Set them before use.
	AttachErr, SetErr error
	// VLANNote is what UplinkVLAN reports while attached (lbmap.Dataplane: what it changed).
	VLANNote string
}

// FakeState is what a Fake has been told, as a copy.
type FakeState struct {
	// Uplink is the interface the program is attached to ("": none); Attaches counts the
	// attachments that changed it.
	Uplink        string
	Attaches      int
	Config        Config
	DecapAddrs    []netip.Addr
	TunnelSources []netip.Addr
	LocalVIPs     []LocalVIP
	VLANDomains   map[uint16]uint32
	Services      []lb.Service
	// Sets counts Set calls that were accepted.
	Sets int
	// Expires counts ExpireFlows calls.
	Expires          int
	Unpinned, Closed bool
}

// ErrFakeClosed is returned by a Fake's setters after Close.
var ErrFakeClosed = errors.New("load balancer: closed")

// State returns a copy of what the fake holds.
func (f *Fake) State() FakeState {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.st
	s.DecapAddrs = slices.Clone(s.DecapAddrs)
	s.TunnelSources = slices.Clone(s.TunnelSources)
	s.LocalVIPs = slices.Clone(s.LocalVIPs)
	s.VLANDomains = maps.Clone(s.VLANDomains)
	s.Services = slices.Clone(s.Services)
	return s
}

// UplinkVLAN reports VLANNote while attached, "" otherwise.
func (f *Fake) UplinkVLAN() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.st.Uplink == "" {
		return ""
	}
	return f.VLANNote
}

// ExpireFlows counts the call; a fake holds no flows.
func (f *Fake) ExpireFlows(time.Duration) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.Expires++
	return 0, nil
}

// Restored reports false: a fake starts empty.
func (f *Fake) Restored() bool { return false }

// AttachUplink records the interface (AttachErr fails it).
func (f *Fake) AttachUplink(ifname string) error {
	return f.do(func() error {
		if f.AttachErr != nil {
			return fmt.Errorf("attaching xdp to %s: %w", ifname, f.AttachErr)
		}
		if f.st.Uplink != ifname {
			f.st.Uplink = ifname
			f.st.Attaches++
		}
		return nil
	})
}

// DetachUplink forgets the interface.
func (f *Fake) DetachUplink() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.Uplink = ""
	return nil
}

// SetConfig records c.
func (f *Fake) SetConfig(c Config) error {
	return f.do(func() error { f.st.Config = c; return nil })
}

// SetDecapAddrs records addrs.
func (f *Fake) SetDecapAddrs(addrs []netip.Addr) error {
	return f.do(func() error { f.st.DecapAddrs = slices.Clone(addrs); return nil })
}

// SetTunnelSources records srcs after the same address checks as Dataplane.SetTunnelSources.
func (f *Fake) SetTunnelSources(srcs []netip.Addr) error {
	for _, a := range srcs {
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.Is4In6() || a.Zone() != "" {
			return fmt.Errorf("tunnel source %q: want a unicast IPv4 or IPv6 address without zone (IPv4 as IPv4, not mapped)", a)
		}
	}
	return f.do(func() error { f.st.TunnelSources = slices.Clone(srcs); return nil })
}

// SetLocalVIPs records vips.
func (f *Fake) SetLocalVIPs(vips []LocalVIP) error {
	return f.do(func() error { f.st.LocalVIPs = slices.Clone(vips); return nil })
}

// SetVLANDomains records m.
func (f *Fake) SetVLANDomains(m map[uint16]uint32) error {
	return f.do(func() error { f.st.VLANDomains = maps.Clone(m); return nil })
}

// Set records services after validating each (SetErr fails it).
func (f *Fake) Set(services []lb.Service) error {
	for _, s := range services {
		if err := s.Validate(); err != nil {
			return err
		}
	}
	return f.do(func() error {
		if f.SetErr != nil {
			return f.SetErr
		}
		f.st.Services = slices.Clone(services)
		f.st.Sets++
		return nil
	})
}

// Unpin records that the pins were removed.
func (f *Fake) Unpin() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.Unpinned = true
	return nil
}

// Close marks the fake closed; the program stays attached, as a pinned link does.
func (f *Fake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.Closed = true
	return nil
}

func (f *Fake) do(fn func() error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.st.Closed {
		return ErrFakeClosed
	}
	return fn()
}
