package bfd

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestPacketRoundTrip(t *testing.T) {
	p := packet{Diag: DiagTimeExpired, State: Up, Poll: true, DetectMult: 3, MyDiscr: 7, YourDiscr: 9,
		DesiredMinTx: 100 * time.Millisecond, RequiredMinRx: 50 * time.Millisecond}
	b := p.marshal()
	if len(b) != 24 || b[0] != 0x21 || b[1] != 0xe0 || b[3] != 24 {
		t.Fatalf("wire % x", b)
	}
	got, err := parse(b)
	if err != nil || got != p {
		t.Fatalf("parse: %+v %v, want %+v", got, err, p)
	}
}

// Every discard rule of RFC 5880 §6.8.6 before the session lookup, and RFC 5881 §5's TTL.
func TestDiscards(t *testing.T) {
	good := packet{State: Down, DetectMult: 3, MyDiscr: 1, DesiredMinTx: time.Second, RequiredMinRx: time.Second}
	for _, tc := range []struct {
		name   string
		mutate func([]byte) []byte
		ttl    int
		want   error
	}{
		{"valid", func(b []byte) []byte { return b }, 255, nil},
		{"TTL 254: not single hop", func(b []byte) []byte { return b }, 254, errTTL},
		{"short", func(b []byte) []byte { return b[:23] }, 255, errShort},
		{"length field beyond the datagram", func(b []byte) []byte { b[3] = 26; return b }, 255, errShort},
		{"version 0", func(b []byte) []byte { b[0] &^= 0xe0; return b }, 255, errVersion},
		{"detect multiplier 0", func(b []byte) []byte { b[2] = 0; return b }, 255, errMult},
		{"multipoint", func(b []byte) []byte { b[1] |= 0x01; return b }, 255, errMultipoint},
		{"my discriminator 0", func(b []byte) []byte { copy(b[4:8], []byte{0, 0, 0, 0}); return b }, 255, errMyDiscr},
		{"authentication bit", func(b []byte) []byte { b[1] |= 0x04; return append(b, 1, 2) }, 255, errAuth},
		{"your discriminator 0 while up", func(b []byte) []byte { b[1] = byte(Up) << 6; return b }, 255, errYourZero},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Options{})
			peer := netip.MustParseAddr("192.0.2.1")
			s.sessions[peer] = testSession(s, peer)
			err := s.handle(peer, tc.mutate(good.marshal()), tc.ttl, time.Now())
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

func testSession(s *Server, peer netip.Addr) *session {
	ss := &session{srv: s, peer: peer, cfg: Config{}.withDefaults(), state: Down, localDiscr: 42,
		remoteMinRx: time.Microsecond, remoteMult: 1, poke: make(chan struct{}, 1), quit: make(chan struct{})}
	s.byDiscr[42] = ss
	return ss
}

// The three-way handshake and the ways down (RFC 5880 §6.8.6), one row per transition.
func TestStateMachine(t *testing.T) {
	for _, tc := range []struct {
		name        string
		local       State
		remote      State
		yourDiscr   uint32
		want        State
		wantDiag    Diag
		wantPoll    bool
		wantChanges int // OnChange calls
	}{
		{"down + peer down -> init", Down, Down, 0, Init, DiagNone, false, 0},
		{"down + peer init -> up", Down, Init, 42, Up, DiagNone, true, 1},
		{"init + peer init -> up", Init, Init, 42, Up, DiagNone, true, 1},
		{"init + peer up -> up", Init, Up, 42, Up, DiagNone, true, 1},
		{"up + peer up stays up", Up, Up, 42, Up, DiagNone, false, 0},
		{"up + peer down -> down (neighbor down)", Up, Down, 42, Down, DiagNeighborDown, false, 1},
		{"up + peer admin down -> down", Up, AdminDown, 42, Down, DiagNeighborDown, false, 1},
		{"init + peer admin down -> down, no callback (never up)", Init, AdminDown, 42, Down, DiagNeighborDown, false, 0},
		{"down + peer up stays down", Down, Up, 42, Down, DiagNone, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			changes := make(chan bool, 4)
			s := New(Options{OnChange: func(_ netip.Addr, up bool, _ Diag) { changes <- up }})
			peer := netip.MustParseAddr("2001:db8::1")
			ss := testSession(s, peer)
			s.sessions[peer] = ss
			ss.state = tc.local
			p := packet{State: tc.remote, DetectMult: 3, MyDiscr: 77, YourDiscr: tc.yourDiscr,
				DesiredMinTx: 100 * time.Millisecond, RequiredMinRx: 100 * time.Millisecond}
			if err := s.handle(peer, p.marshal(), 255, time.Now()); err != nil {
				t.Fatal(err)
			}
			if ss.state != tc.want || ss.diag != tc.wantDiag || ss.poll != tc.wantPoll {
				t.Errorf("state %s diag %q poll %v; want %s %q %v", ss.state, ss.diag, ss.poll, tc.want, tc.wantDiag, tc.wantPoll)
			}
			if ss.remoteDiscr != 77 || ss.detectTime() != 3*300*time.Millisecond {
				t.Errorf("remote discriminator %d, detection time %s; want 77 and 900ms (3 x max(300ms rx, 100ms peer tx))", ss.remoteDiscr, ss.detectTime())
			}
			time.Sleep(10 * time.Millisecond)
			if len(changes) != tc.wantChanges {
				t.Errorf("%d OnChange calls, want %d", len(changes), tc.wantChanges)
			}
		})
	}
}

// A Poll from the peer is answered by a Final; a Final ends our Poll Sequence.
func TestPollFinal(t *testing.T) {
	s := New(Options{})
	peer := netip.MustParseAddr("192.0.2.1")
	ss := testSession(s, peer)
	s.sessions[peer] = ss
	ss.state, ss.poll = Up, true
	p := packet{State: Up, Poll: true, Final: true, DetectMult: 3, MyDiscr: 5, YourDiscr: 42, DesiredMinTx: 50 * time.Millisecond, RequiredMinRx: 50 * time.Millisecond}
	if err := s.handle(peer, p.marshal(), 255, time.Now()); err != nil {
		t.Fatal(err)
	}
	if ss.poll || !ss.sendFinal {
		t.Fatalf("poll %v sendFinal %v; want the sequence ended and a Final due", ss.poll, ss.sendFinal)
	}
	if f := ss.packetLocked(true); !f.Final || f.Poll {
		t.Fatalf("final packet %+v", f)
	}
	if iv := ss.txInterval(); iv != 300*time.Millisecond {
		t.Fatalf("tx interval %s, want 300ms (max of our 300ms and the peer's 50ms)", iv)
	}
	ss.state = Down
	if iv := ss.txInterval(); iv != time.Second {
		t.Fatalf("tx interval while down %s, want the 1s floor", iv)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{MinTx: 5 * time.Millisecond}).Validate(); err == nil {
		t.Fatal("5ms accepted")
	}
	if err := (Config{MinTx: 50 * time.Millisecond, MinRx: 50 * time.Millisecond, Multiplier: 3}).Validate(); err != nil {
		t.Fatal(err)
	}
}
