// Package bgp is the agent's view of its BGP speaker: the desired session configuration and
// the routes (service VIPs) to advertise, a small Speaker interface that takes the whole
// desired state at once (declarative, idempotent Set), per-peer status, and a fake for unit
// tests. The implementation on GoBGP lives in the gobgp subpackage, the only place that
// imports GoBGP.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Speaker advertises routes to BGP peers.
type Speaker interface {
	// Set makes the speaker's sessions and advertised routes equal to cfg and adverts.
	// Calling it again with the same arguments changes nothing; a change that does not
	// touch a session's own settings never resets that session. The zero Config with no
	// advertisements means "no BGP": the speaker stops and its sessions close.
	Set(cfg Config, adverts []Advertisement) error
	// Status reports every configured peer, sorted by address.
	Status() []PeerStatus
	// Close stops the speaker. graceful=true is a planned restart: sessions are closed
	// without a NOTIFICATION so peers with graceful restart keep the routes as stale until
	// the next speaker re-advertises them and sends End-of-RIB.
	Close(ctx context.Context, graceful bool) error
}

// DefaultPort is the BGP port.
const DefaultPort = 179

// Config is the speaker's desired session configuration.
type Config struct {
	RouterID netip.Addr `json:"routerID"`
	ASN      uint32     `json:"asn"`
	// ListenPort is the TCP port to accept sessions on: 0 means 179, -1 means do not listen
	// (only connect out).
	ListenPort int    `json:"listenPort,omitempty"`
	Peers      []Peer `json:"peers"`
	// HoldDown is the hysteresis on re-announcing withdrawn routes (flapping VIPs).
	HoldDown HoldDown `json:"holdDown,omitzero"`
}

// Peer is one BGP neighbour.
type Peer struct {
	Address netip.Addr `json:"address"`
	ASN     uint32     `json:"asn"`
	// Port is the peer's TCP port (0: 179).
	Port int `json:"port,omitempty"`
	// Password is the TCP-MD5 key, already read from its file or variable by the caller.
	// It never appears in String, %v, JSON or logs.
	Password Secret `json:"password,omitempty"`
	// HoldTime and Keepalive are the session timers (0: 90 s and a third of the hold time).
	HoldTime  time.Duration `json:"holdTime,omitempty"`
	Keepalive time.Duration `json:"keepalive,omitempty"`
	// Multihop is the eBGP multihop TTL (0: directly connected).
	Multihop uint8 `json:"multihop,omitempty"`
	// IPv4 and IPv6 select the address families (MP-BGP). Both false: the family of Address.
	IPv4 bool `json:"ipv4,omitempty"`
	IPv6 bool `json:"ipv6,omitempty"`
	// GracefulRestart enables RFC 4724 with RestartTime (0: 120 s).
	GracefulRestart bool          `json:"gracefulRestart,omitempty"`
	RestartTime     time.Duration `json:"restartTime,omitempty"`
	// BFD runs single-hop BFD (RFC 5880, RFC 5881) with the peer (nil: none). When a BFD
	// session that was up goes down, the BGP session is reset at once, without waiting for
	// the hold timer.
	BFD *BFD `json:"bfd,omitempty"`
}

// BFD is a peer's BFD timers; zero fields take the defaults (300 ms, 300 ms, 3), so the
// peer detects a dead host in MinTx x Multiplier (RFC 5880 §6.8.4).
type BFD struct {
	// MinTx is the desired minimum transmit interval, MinRx the required minimum receive
	// interval: 0 or 10 ms to 1 min.
	MinTx time.Duration `json:"minTx,omitempty"`
	MinRx time.Duration `json:"minRx,omitempty"`
	// Multiplier is the detect multiplier (0: 3).
	Multiplier uint8 `json:"multiplier,omitempty"`
}

// Validate checks the timers, naming the peer.
func (b BFD) Validate(peer netip.Addr) error {
	for _, v := range []struct {
		name string
		d    time.Duration
	}{{"minTx", b.MinTx}, {"minRx", b.MinRx}} {
		if v.d != 0 && (v.d < 10*time.Millisecond || v.d > time.Minute) {
			return fmt.Errorf("peer %s: BFD %s %s: must be 0 (default 300ms) or from 10ms to 1m", peer, v.name, v.d)
		}
	}
	return nil
}

// Families returns the address families the session carries.
func (p Peer) Families() (v4, v6 bool) {
	if !p.IPv4 && !p.IPv6 {
		return p.Address.Is4(), p.Address.Is6()
	}
	return p.IPv4, p.IPv6
}

// String describes the peer without its password.
func (p Peer) String() string {
	s := fmt.Sprintf("%s AS%d", p.Address, p.ASN)
	if p.Password != "" {
		s += " md5"
	}
	return s
}

// Secret is a value that must never be printed, logged or serialized.
type Secret string

const redacted = "<redacted>"

// Reveal returns the secret itself, for the one place that hands it to the kernel.
func (s Secret) Reveal() string { return string(s) }

// String hides the value (fmt %s, %v).
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString hides the value (fmt %#v).
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// LogValue hides the value from slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON hides the value from encoding/json (status and API output).
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(s.String())), nil }

// MarshalText hides the value from text encoders (YAML and friends).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Community is a standard (RFC 1997) community ASN:value.
type Community struct {
	ASN   uint16 `json:"asn"`
	Value uint16 `json:"value"`
}

func (c Community) String() string { return fmt.Sprintf("%d:%d", c.ASN, c.Value) }

// Uint32 is the community's wire value.
func (c Community) Uint32() uint32 { return uint32(c.ASN)<<16 | uint32(c.Value) }

// LargeCommunity is an RFC 8092 community global:local1:local2.
type LargeCommunity struct {
	Global uint32 `json:"global"`
	Local1 uint32 `json:"local1"`
	Local2 uint32 `json:"local2"`
}

func (c LargeCommunity) String() string { return fmt.Sprintf("%d:%d:%d", c.Global, c.Local1, c.Local2) }

// DepartmentFunction is the large community's first local part that marks a department tag.
const DepartmentFunction = 1

// Reserved ASNs (RFC 7607: 0; RFC 6793: AS_TRANS 23456; RFC 7300: 65535 and 4294967295).
const (
	ASTrans      = 23456
	ASLast16     = 65535
	ASLast32     = 4294967295
	maxStdASNTag = 65534
)

// DepartmentCommunities returns the tags that identify a department's routes to the fabric:
// the large community localASN:1:deptID (RFC 8092, room for 4-byte ASNs and IDs), always, and
// the standard community fabricASN:deptID (RFC 1997) only when it means what it says: the
// fabric ASN and the ID fit 16 bits, and the fabric ASN is a real one, so neither 0, nor
// AS_TRANS 23456 (RFC 6793: a stand-in for every 4-byte ASN), nor 65535 (RFC 1997 reserves
// 65535:x for well-known communities such as 65535:666 BLACKHOLE and 65535:65281 NO_EXPORT).
// Every other case gets no standard community rather than a truncated or reserved one.
func DepartmentCommunities(fabricASN, localASN, deptID uint32) ([]Community, LargeCommunity) {
	lc := LargeCommunity{Global: localASN, Local1: DepartmentFunction, Local2: deptID}
	if !StandardCommunityASN(fabricASN) || deptID > 0xffff {
		return nil, lc
	}
	return []Community{{ASN: uint16(fabricASN), Value: uint16(deptID)}}, lc
}

// StandardCommunityASN reports whether asn may be the high half of an RFC 1997 community
// ASN:value: 1 to 65534 except AS_TRANS (23456).
func StandardCommunityASN(asn uint32) bool {
	return asn != 0 && asn <= maxStdASNTag && asn != ASTrans
}

// ValidASN says why asn cannot be a BGP speaker's ASN (nil when it can): 0 (RFC 7607),
// AS_TRANS 23456 (RFC 6793) and 4294967295 (RFC 7300) are reserved. 65535 is reserved too
// (RFC 7300) but seen in labs; it is accepted and gets no standard community.
func ValidASN(asn uint32) error {
	switch asn {
	case 0:
		return errors.New("must not be 0 (RFC 7607)")
	case ASTrans:
		return errors.New("23456 is AS_TRANS, the 2-byte stand-in for 4-byte ASNs (RFC 6793), never a speaker's own ASN")
	case ASLast32:
		return errors.New("4294967295 is reserved (RFC 7300)")
	}
	return nil
}

// Advertisement is one route the speaker announces to every peer of its family.
type Advertisement struct {
	// Prefix is a host route: /32 or /128. Its next hop is, per session, the speaker's own
	// address on that session (next-hop-self): each peer, on its own subnet, gets an address
	// it can reach, so a host dual-homed to two ToRs on separate /31s is installed by both.
	Prefix           netip.Prefix     `json:"prefix"`
	Communities      []Community      `json:"communities,omitempty"`
	LargeCommunities []LargeCommunity `json:"largeCommunities,omitempty"`
	LocalPref        *uint32          `json:"localPref,omitempty"`
	MED              *uint32          `json:"med,omitempty"`
}

// PeerStatus is what the speaker knows about one peer.
type PeerStatus struct {
	Address     netip.Addr `json:"address"`
	ASN         uint32     `json:"asn"`
	State       string     `json:"state"` // idle, connect, active, opensent, openconfirm, established
	Established bool       `json:"established"`
	// Reason says why the session is not established (empty when it is).
	Reason string `json:"reason,omitempty"`
	// Received counts prefixes the peer sent, Accepted those the import policy let in (0 by
	// default: the speaker accepts nothing), Advertised those sent to the peer.
	Received   int `json:"received"`
	Accepted   int `json:"accepted"`
	Advertised int `json:"advertised"`
	// EndOfRIBReceived: the peer sent End-of-RIB for every graceful-restart family.
	EndOfRIBReceived bool `json:"endOfRIBReceived"`
	// BFD is the peer's BFD session (nil when the peer has none).
	BFD *BFDStatus `json:"bfd,omitempty"`
}

// BFDStatus is one BFD session's state (RFC 5880 §6.8.1).
type BFDStatus struct {
	State       string `json:"state"`       // admindown, down, init, up
	RemoteState string `json:"remoteState"` // as the peer last said
	// Diag is why the session last went down ("" when it never did).
	Diag string `json:"diag,omitempty"`
	// TxInterval is the interval packets are sent at now, DetectTime how long without a
	// packet from the peer declares it down (0 until the peer was heard).
	TxInterval time.Duration `json:"txInterval"`
	DetectTime time.Duration `json:"detectTime"`
	// Ups and Downs count transitions to and from up since the session was configured.
	Ups   int `json:"ups"`
	Downs int `json:"downs"`
}

// IsZero reports whether cfg is the zero Config ("no BGP on this host").
func (cfg Config) IsZero() bool {
	return !cfg.RouterID.IsValid() && cfg.ASN == 0 && cfg.ListenPort == 0 && len(cfg.Peers) == 0
}

// Validate checks a desired state before any of it is applied.
func Validate(cfg Config, adverts []Advertisement) error {
	var errs []error
	if !cfg.RouterID.Is4() {
		errs = append(errs, fmt.Errorf("router ID %q: must be an IPv4 address", cfg.RouterID))
	}
	if err := ValidASN(cfg.ASN); err != nil {
		errs = append(errs, fmt.Errorf("local ASN %d: %w", cfg.ASN, err))
	}
	if cfg.ListenPort < -1 || cfg.ListenPort > 65535 {
		errs = append(errs, fmt.Errorf("listen port %d: must be -1, 0 or 1-65535", cfg.ListenPort))
	}
	if err := cfg.HoldDown.Validate(); err != nil {
		errs = append(errs, err)
	}
	seen := map[netip.Addr]bool{}
	for _, p := range cfg.Peers {
		switch {
		case !p.Address.IsValid() || p.Address.Zone() != "":
			errs = append(errs, fmt.Errorf("peer %q: address must be an IPv4 or IPv6 address without zone", p.Address))
		case seen[p.Address]:
			errs = append(errs, fmt.Errorf("peer %s: listed twice", p.Address))
		}
		seen[p.Address] = true
		if err := ValidASN(p.ASN); err != nil {
			errs = append(errs, fmt.Errorf("peer %s: ASN %d: %w", p.Address, p.ASN, err))
		}
		// The next hop of a route is the session's own address (next-hop-self), so a family
		// other than the session's would carry a next hop of the wrong family: IPv4 over an
		// IPv6 session needs RFC 8950 extended next hop, IPv6 over IPv4 an IPv4-mapped next
		// hop that routers treat as unreachable.
		if v4, v6 := p.Families(); p.Address.IsValid() && ((v4 && !p.Address.Is4()) || (v6 && !p.Address.Is6())) {
			errs = append(errs, fmt.Errorf("peer %s: family IPv4=%t IPv6=%t: a session carries only its own address family (next hop = the session's local address)", p.Address, v4, v6))
		}
		if p.Port < 0 || p.Port > 65535 {
			errs = append(errs, fmt.Errorf("peer %s: port %d out of range", p.Address, p.Port))
		}
		if p.HoldTime != 0 && (p.HoldTime < 3*time.Second || p.HoldTime%time.Second != 0) {
			errs = append(errs, fmt.Errorf("peer %s: hold time %s: must be 0 or whole seconds >= 3s", p.Address, p.HoldTime))
		}
		if p.Keepalive%time.Second != 0 || p.Keepalive < 0 || (p.Keepalive != 0 && p.HoldTime != 0 && p.Keepalive >= p.HoldTime) {
			errs = append(errs, fmt.Errorf("peer %s: keepalive %s: must be whole seconds below the hold time", p.Address, p.Keepalive))
		}
		if p.BFD != nil {
			if err := p.BFD.Validate(p.Address); err != nil {
				errs = append(errs, err)
			}
			if p.Multihop > 1 {
				errs = append(errs, fmt.Errorf("peer %s: BFD with multihop %d: the speaker's BFD is single hop only (RFC 5881)", p.Address, p.Multihop))
			}
		}
		if len(p.Password) > 80 {
			errs = append(errs, fmt.Errorf("peer %s: TCP-MD5 password longer than 80 bytes", p.Address))
		}
	}
	prefixes := map[netip.Prefix]bool{}
	for _, a := range adverts {
		p := a.Prefix
		if !p.IsValid() || !p.IsSingleIP() || p.Addr().Zone() != "" {
			errs = append(errs, fmt.Errorf("advertisement %q: must be a /32 or /128 host route", p))
			continue
		}
		if p.Addr().Is4In6() {
			errs = append(errs, fmt.Errorf("advertisement %s: IPv4-mapped IPv6 prefix; use the IPv4 form", p))
		}
		if prefixes[p] {
			errs = append(errs, fmt.Errorf("advertisement %s: listed twice", p))
		}
		prefixes[p] = true
	}
	return errors.Join(errs...)
}

// FormatStatus renders peer status as a short table for CLIs and logs.
func FormatStatus(st []PeerStatus) string {
	var b strings.Builder
	for _, p := range st {
		fmt.Fprintf(&b, "%-39s AS%-10d %-12s rcvd %d accepted %d advertised %d", p.Address, p.ASN, p.State, p.Received, p.Accepted, p.Advertised)
		if p.BFD != nil {
			fmt.Fprintf(&b, " bfd %s", p.BFD.State)
			if p.BFD.State == "up" {
				fmt.Fprintf(&b, " (detect %s)", p.BFD.DetectTime)
			} else if p.BFD.Diag != "" {
				fmt.Fprintf(&b, " (%s)", p.BFD.Diag)
			}
		}
		if p.Reason != "" {
			fmt.Fprintf(&b, " (%s)", p.Reason)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
