// Package bfd is a small single-hop BFD (RFC 5880, RFC 5881) speaker for the BGP speaker's
// peers: asynchronous mode, no echo, no demand mode, no authentication (packets with the A
// bit are discarded, as RFC 5880 §6.8.6 requires of a session without authentication).
// Control packets go to UDP 3784 with TTL/hop limit 255 from a per-session source port in
// 49152-65535, and only packets that arrive with TTL 255 are accepted (RFC 5881 §4, §5).
// The C bit is 0: the BFD state shares fate with the control plane, so a peer configured for
// it (FRR: `neighbor X bfd check-control-plane-failure`) keeps graceful-restart routes when
// the whole process restarts.
package bfd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// State is a session state (RFC 5880 §4.1 "Sta").
type State uint8

// Session states.
const (
	AdminDown State = 0
	Down      State = 1
	Init      State = 2
	Up        State = 3
)

func (s State) String() string {
	switch s {
	case AdminDown:
		return "admindown"
	case Down:
		return "down"
	case Init:
		return "init"
	case Up:
		return "up"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Diag is a diagnostic code (RFC 5880 §4.1).
type Diag uint8

// Diagnostics used here.
const (
	DiagNone         Diag = 0
	DiagTimeExpired  Diag = 1 // Control Detection Time Expired
	DiagNeighborDown Diag = 3 // Neighbor Signaled Session Down
	DiagAdminDown    Diag = 7 // Administratively Down
)

func (d Diag) String() string {
	switch d {
	case DiagNone:
		return ""
	case DiagTimeExpired:
		return "control detection time expired"
	case 2:
		return "echo function failed"
	case DiagNeighborDown:
		return "neighbor signaled session down"
	case 4:
		return "forwarding plane reset"
	case 5:
		return "path down"
	case 6:
		return "concatenated path down"
	case DiagAdminDown:
		return "administratively down"
	case 8:
		return "reverse concatenated path down"
	}
	return fmt.Sprintf("diag %d", uint8(d))
}

// packet is a BFD Control packet without authentication (RFC 5880 §4.1).
type packet struct {
	Diag                              Diag
	State                             State
	Poll, Final, CPI, Auth, Demand, M bool
	DetectMult                        uint8
	MyDiscr, YourDiscr                uint32
	DesiredMinTx, RequiredMinRx       time.Duration // microsecond resolution on the wire
	RequiredMinEchoRx                 time.Duration
}

const (
	version    = 1
	packetSize = 24
)

func (p packet) marshal() []byte {
	b := make([]byte, packetSize)
	b[0] = version<<5 | byte(p.Diag)&0x1f
	b[1] = byte(p.State) << 6
	for i, f := range []bool{p.Poll, p.Final, p.CPI, p.Auth, p.Demand, p.M} {
		if f {
			b[1] |= 1 << (5 - i)
		}
	}
	b[2] = p.DetectMult
	b[3] = packetSize
	binary.BigEndian.PutUint32(b[4:], p.MyDiscr)
	binary.BigEndian.PutUint32(b[8:], p.YourDiscr)
	binary.BigEndian.PutUint32(b[12:], usec(p.DesiredMinTx))
	binary.BigEndian.PutUint32(b[16:], usec(p.RequiredMinRx))
	binary.BigEndian.PutUint32(b[20:], usec(p.RequiredMinEchoRx))
	return b
}

func usec(d time.Duration) uint32 { return uint32(min(d/time.Microsecond, 1<<32-1)) }

// Reasons a received packet is discarded (RFC 5880 §6.8.6, RFC 5881 §5).
var (
	errShort      = errors.New("shorter than 24 bytes or than its length field")
	errVersion    = errors.New("version is not 1")
	errMult       = errors.New("detect multiplier 0")
	errMultipoint = errors.New("multipoint bit set")
	errMyDiscr    = errors.New("my discriminator 0")
	errAuth       = errors.New("authentication present, none configured")
	errYourZero   = errors.New("your discriminator 0 in state up or init")
	errTTL        = errors.New("TTL/hop limit is not 255 (not single hop)")
)

// parse checks the fields RFC 5880 §6.8.6 checks before any session is looked up.
func parse(b []byte) (packet, error) {
	var p packet
	if len(b) < packetSize || int(b[3]) < packetSize || int(b[3]) > len(b) {
		return p, errShort
	}
	if b[0]>>5 != version {
		return p, errVersion
	}
	p.Diag = Diag(b[0] & 0x1f)
	p.State = State(b[1] >> 6)
	p.Poll, p.Final, p.CPI = b[1]&0x20 != 0, b[1]&0x10 != 0, b[1]&0x08 != 0
	p.Auth, p.Demand, p.M = b[1]&0x04 != 0, b[1]&0x02 != 0, b[1]&0x01 != 0
	p.DetectMult = b[2]
	p.MyDiscr = binary.BigEndian.Uint32(b[4:])
	p.YourDiscr = binary.BigEndian.Uint32(b[8:])
	p.DesiredMinTx = time.Duration(binary.BigEndian.Uint32(b[12:])) * time.Microsecond
	p.RequiredMinRx = time.Duration(binary.BigEndian.Uint32(b[16:])) * time.Microsecond
	p.RequiredMinEchoRx = time.Duration(binary.BigEndian.Uint32(b[20:])) * time.Microsecond
	switch {
	case p.DetectMult == 0:
		return p, errMult
	case p.M:
		return p, errMultipoint
	case p.MyDiscr == 0:
		return p, errMyDiscr
	case p.Auth:
		return p, errAuth
	case p.YourDiscr == 0 && (p.State == Up || p.State == Init):
		return p, errYourZero
	}
	return p, nil
}
