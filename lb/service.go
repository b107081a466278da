package lb

import (
	"fmt"
	"net/netip"
	"strconv"
)

// Mode is how packets reach a backend.
type Mode uint8

const (
	// DSR encapsulates to the backend's host (IPIP/IP6IP6); replies go straight to the client.
	DSR Mode = iota
	// NAT rewrites destination and source at the LB host; for backends that run no agent.
	NAT
)

func (m Mode) String() string {
	switch m {
	case DSR:
		return "dsr"
	case NAT:
		return "nat"
	}
	return "mode(" + strconv.Itoa(int(m)) + ")"
}

// ParseMode parses "dsr" or "nat" ("" means dsr).
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "dsr":
		return DSR, nil
	case "nat":
		return NAT, nil
	}
	return 0, fmt.Errorf("forwarding mode %q: want dsr or nat", s)
}

// Protocol is an IP protocol number the LB balances.
type Protocol uint8

const (
	TCP Protocol = 6
	UDP Protocol = 17
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return "proto(" + strconv.Itoa(int(p)) + ")"
}

// ParseProtocol parses "tcp" or "udp".
func ParseProtocol(s string) (Protocol, error) {
	switch s {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	}
	return 0, fmt.Errorf("protocol %q: want tcp or udp", s)
}

// VIP identifies one balanced endpoint. Domain is the department's routing domain (0 is the
// public fabric): the same address and port in two domains are two VIPs.
type VIP struct {
	Domain uint32
	Addr   netip.Addr
	Port   uint16
	Proto  Protocol
}

func (v VIP) String() string {
	return fmt.Sprintf("%s/%s@%d", netip.AddrPortFrom(v.Addr, v.Port), v.Proto, v.Domain)
}

// Backend is one real server of a service. For DSR, Addr is the tunnel endpoint (the host
// that runs the backend); for NAT it is the backend itself and Port its port (0: the VIP's).
type Backend struct {
	Addr   netip.Addr
	Port   uint16
	Weight uint32 // 0 drains: established flows stay, new flows go elsewhere
}

// Key is the backend's stable identity, hashed for its Maglev permutation.
func (b Backend) Key() string { return netip.AddrPortFrom(b.Addr, b.Port).String() }

// Service is one VIP with its backends.
type Service struct {
	Name     string
	VIP      VIP
	Mode     Mode
	Backends []Backend
	// Shared, when set, is the service's table as every host holds it (issue 19): Plan writes
	// Shared.Effective(Backends) translated to this host's backend IDs instead of building the
	// next table from this host's own history. Every backend must be in it.
	Shared *SharedTable
}

// Validate checks a service on its own; errors name the service and the bad value.
func (s Service) Validate() error {
	if !s.VIP.Addr.IsValid() {
		return fmt.Errorf("service %q: no VIP address", s.Name)
	}
	if s.VIP.Addr.Zone() != "" || s.VIP.Addr.Is4In6() {
		return fmt.Errorf("service %q: VIP %s: want a plain IPv4 or IPv6 address", s.Name, s.VIP.Addr)
	}
	if s.VIP.Port == 0 {
		return fmt.Errorf("service %q: VIP port 0", s.Name)
	}
	if s.VIP.Proto != TCP && s.VIP.Proto != UDP {
		return fmt.Errorf("service %q: protocol %s: want tcp or udp", s.Name, s.VIP.Proto)
	}
	if s.Mode != DSR && s.Mode != NAT {
		return fmt.Errorf("service %q: %s", s.Name, s.Mode)
	}
	seen := make(map[string]bool, len(s.Backends))
	for _, b := range s.Backends {
		if !b.Addr.IsValid() || b.Addr.Is4In6() {
			return fmt.Errorf("service %q: backend address %v invalid", s.Name, b.Addr)
		}
		if s.Mode == NAT && b.Addr.Is4() != s.VIP.Addr.Is4() {
			return fmt.Errorf("service %q: nat backend %s: address family differs from VIP %s", s.Name, b.Key(), s.VIP.Addr)
		}
		if seen[b.Key()] {
			return fmt.Errorf("service %q: backend %s listed twice", s.Name, b.Key())
		}
		seen[b.Key()] = true
	}
	return nil
}
