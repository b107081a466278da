package bfd

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Port is the single-hop BFD control port (RFC 5881 §4).
const Port = 3784

// Config is one session's timers (RFC 5880 §6.8.1 bfd.DesiredMinTxInterval,
// bfd.RequiredMinRxInterval, bfd.DetectMult). Zero fields take the defaults.
type Config struct {
	MinTx      time.Duration `json:"minTx,omitempty"`      // desired minimum transmit interval (default 300ms)
	MinRx      time.Duration `json:"minRx,omitempty"`      // required minimum receive interval (default 300ms)
	Multiplier uint8         `json:"multiplier,omitempty"` // detect multiplier (default 3)
}

// Defaults, as FRR's bfdd.
const (
	DefaultInterval   = 300 * time.Millisecond
	DefaultMultiplier = 3
	// slowTx is the least transmit interval while a session is not up (RFC 5880 §6.8.3).
	slowTx = time.Second
)

func (c Config) withDefaults() Config {
	if c.MinTx == 0 {
		c.MinTx = DefaultInterval
	}
	if c.MinRx == 0 {
		c.MinRx = DefaultInterval
	}
	if c.Multiplier == 0 {
		c.Multiplier = DefaultMultiplier
	}
	return c
}

// Validate checks the timers: intervals 0 (default) or from 10ms to 1m; any multiplier (0:
// default).
func (c Config) Validate() error {
	for _, v := range []struct {
		name string
		d    time.Duration
	}{{"minimum transmit interval", c.MinTx}, {"minimum receive interval", c.MinRx}} {
		if v.d != 0 && (v.d < 10*time.Millisecond || v.d > time.Minute) {
			return fmt.Errorf("BFD %s %s: must be 0 (default %s) or from 10ms to 1m", v.name, v.d, DefaultInterval)
		}
	}
	return nil
}

// Status is one session as seen now.
type Status struct {
	Peer        netip.Addr `json:"peer"`
	State       string     `json:"state"`       // admindown, down, init, up
	RemoteState string     `json:"remoteState"` // as the peer last said
	// Diag is why the session last went down ("" when it never did).
	Diag        string `json:"diag,omitempty"`
	LocalDiscr  uint32 `json:"localDiscr"`
	RemoteDiscr uint32 `json:"remoteDiscr"`
	// TxInterval is the interval packets are sent at now; DetectTime how long without a
	// packet declares the session down (0 until the peer was heard).
	TxInterval time.Duration `json:"txInterval"`
	DetectTime time.Duration `json:"detectTime"`
	// Ups and Downs count transitions to and from Up.
	Ups        int       `json:"ups"`
	Downs      int       `json:"downs"`
	LastChange time.Time `json:"lastChange,omitzero"`
}

// Options tune a Server.
type Options struct {
	Logger *slog.Logger
	// OnChange is called (on its own goroutine) when a session goes up, or goes down after
	// having been up.
	OnChange func(peer netip.Addr, up bool, diag Diag)
	// Port is the UDP port to receive on and send to (0: 3784). Tests only.
	Port int
}

// Server runs the BFD sessions of one process (one network namespace): one receive socket
// per address family on the control port, one send socket per session.
type Server struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	sessions map[netip.Addr]*session
	byDiscr  map[uint32]*session
	recv     map[bool]net.PacketConn // by is-IPv6
	closed   bool
	wg       sync.WaitGroup
	nextPort int
}

// New returns a server with no sessions; sockets open with the first session.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Port == 0 {
		opts.Port = Port
	}
	n, _ := rand.Int(rand.Reader, big.NewInt(16384))
	return &Server{opts: opts, log: opts.Logger, sessions: map[netip.Addr]*session{}, byDiscr: map[uint32]*session{},
		recv: map[bool]net.PacketConn{}, nextPort: int(n.Int64())}
}

// Set makes the sessions exactly the peers of want: new peers get a session, removed ones
// are told AdminDown and removed, changed timers apply to the running session (with a Poll
// Sequence when it is up). Peers must be IPv4 or IPv6 addresses without zone.
func (s *Server) Set(want map[netip.Addr]Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("bfd: closed")
	}
	var errs []error
	for peer, ss := range s.sessions {
		if _, ok := want[peer]; !ok {
			s.removeLocked(ss, true)
		}
	}
	for peer, c := range want {
		if err := c.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("peer %s: %w", peer, err))
			continue
		}
		c = c.withDefaults()
		if ss := s.sessions[peer]; ss != nil {
			if ss.cfg != c {
				ss.cfg = c
				if ss.state == Up {
					ss.poll = true
				}
				ss.wake()
			}
			continue
		}
		if err := s.openRecv(peer.Is6()); err != nil {
			errs = append(errs, err)
			continue
		}
		conn, err := s.dial(peer)
		if err != nil {
			errs = append(errs, fmt.Errorf("bfd session to %s: %w", peer, err))
			continue
		}
		ss := &session{srv: s, peer: peer, cfg: c, conn: conn, state: Down, localDiscr: s.newDiscr(),
			remoteMinRx: time.Microsecond, remoteMult: 1, poke: make(chan struct{}, 1), quit: make(chan struct{})}
		s.sessions[peer] = ss
		s.byDiscr[ss.localDiscr] = ss
		s.wg.Add(1)
		go ss.run()
		s.log.Info("bfd: session added", "peer", peer, "minTx", c.MinTx, "minRx", c.MinRx, "multiplier", c.Multiplier)
	}
	return errors.Join(errs...)
}

// Status reports every session, sorted by peer.
func (s *Server) Status() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, 0, len(s.sessions))
	for _, ss := range s.sessions {
		out = append(out, ss.status())
	}
	slices.SortFunc(out, func(a, b Status) int { return a.Peer.Compare(b.Peer) })
	return out
}

// Close ends every session. adminDown=true tells the peers first (state AdminDown, so they
// take the session down at once); false just stops sending, as a crash would (a planned
// restart: the peers' detection timers run out, and with C=0 a peer doing graceful restart
// keeps the routes).
func (s *Server) Close(adminDown bool) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for _, ss := range s.sessions {
		s.removeLocked(ss, adminDown)
	}
	var errs []error
	for _, c := range s.recv {
		errs = append(errs, c.Close())
	}
	s.mu.Unlock()
	s.wg.Wait()
	return errors.Join(errs...)
}

func (s *Server) removeLocked(ss *session, adminDown bool) {
	delete(s.sessions, ss.peer)
	delete(s.byDiscr, ss.localDiscr)
	if adminDown {
		ss.state, ss.diag = AdminDown, DiagAdminDown
		b := ss.packetLocked(false).marshal()
		for range 3 { // RFC 5880 §6.8.16: the peer must learn of AdminDown; packets may be lost
			_, _ = ss.conn.Write(b)
		}
	}
	close(ss.quit)
	s.log.Info("bfd: session removed", "peer", ss.peer)
}

func (s *Server) newDiscr() uint32 {
	for {
		var b [4]byte
		_, _ = rand.Read(b[:])
		d := binary.BigEndian.Uint32(b[:])
		if d != 0 && s.byDiscr[d] == nil {
			return d
		}
	}
}

// openRecv opens the family's receive socket on the control port, with the TTL / hop limit
// of each packet delivered alongside it.
func (s *Server) openRecv(v6 bool) error {
	if s.recv[v6] != nil {
		return nil
	}
	network, addr := "udp4", fmt.Sprintf("0.0.0.0:%d", s.opts.Port)
	if v6 {
		network, addr = "udp6", fmt.Sprintf("[::]:%d", s.opts.Port)
	}
	c, err := net.ListenPacket(network, addr)
	if err != nil {
		return fmt.Errorf("bfd: listening on %s %s: %w", network, addr, err)
	}
	// The flags live in the x/net PacketConn (it sizes its ancillary buffer from them), so
	// the same one reads.
	p4, p6 := ipv4.NewPacketConn(c), ipv6.NewPacketConn(c)
	if v6 {
		err = p6.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagDst, true)
	} else {
		err = p4.SetControlMessage(ipv4.FlagTTL|ipv4.FlagDst, true)
	}
	if err != nil {
		c.Close()
		return fmt.Errorf("bfd: asking for the TTL of received packets on %s: %w", addr, err)
	}
	s.recv[v6] = c
	s.wg.Add(1)
	go s.receive(p4, p6, v6)
	return nil
}

// dial opens a session's send socket: source port from 49152-65535 (RFC 5881 §4), TTL 255.
func (s *Server) dial(peer netip.Addr) (*net.UDPConn, error) {
	var lastErr error
	for range 64 {
		port := 49152 + s.nextPort%16384
		s.nextPort++
		c, err := net.DialUDP("udp", &net.UDPAddr{Port: port}, net.UDPAddrFromAddrPort(netip.AddrPortFrom(peer, uint16(s.opts.Port))))
		if err != nil {
			lastErr = err
			if errors.Is(err, syscall.EADDRINUSE) {
				continue
			}
			return nil, err
		}
		if peer.Is6() {
			err = ipv6.NewConn(c).SetHopLimit(255)
		} else {
			err = ipv4.NewConn(c).SetTTL(255)
		}
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("setting TTL 255: %w", err)
		}
		return c, nil
	}
	return nil, fmt.Errorf("no free source port in 49152-65535: %w", lastErr)
}

func (s *Server) receive(p4 *ipv4.PacketConn, p6 *ipv6.PacketConn, v6 bool) {
	defer s.wg.Done()
	buf := make([]byte, 1500)
	for {
		var (
			n   int
			ttl int
			src net.Addr
			err error
		)
		if v6 {
			var cm *ipv6.ControlMessage
			n, cm, src, err = p6.ReadFrom(buf)
			if cm != nil {
				ttl = cm.HopLimit
			}
		} else {
			var cm *ipv4.ControlMessage
			n, cm, src, err = p4.ReadFrom(buf)
			if cm != nil {
				ttl = cm.TTL
			}
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("bfd: receive", "err", err)
			continue
		}
		ua, ok := src.(*net.UDPAddr)
		if !ok {
			continue
		}
		from := ua.AddrPort().Addr().Unmap()
		if err := s.handle(from, buf[:n], ttl, time.Now()); err != nil {
			s.log.Debug("bfd: packet discarded", "from", from, "reason", err)
		}
	}
}

// handle is RFC 5880 §6.8.6, reception of a control packet, for a packet from 'from'
// received with the given TTL / hop limit.
func (s *Server) handle(from netip.Addr, b []byte, ttl int, now time.Time) error {
	p, err := parse(b)
	if err != nil {
		return err
	}
	if ttl != 255 {
		return fmt.Errorf("%w: %d", errTTL, ttl)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var ss *session
	if p.YourDiscr != 0 {
		ss = s.byDiscr[p.YourDiscr]
		if ss == nil {
			return fmt.Errorf("your discriminator %d: no such session", p.YourDiscr)
		}
		if ss.peer != from {
			return fmt.Errorf("your discriminator %d belongs to peer %s, not %s", p.YourDiscr, ss.peer, from)
		}
	} else {
		ss = s.sessions[from]
		if ss == nil {
			return errors.New("no session for this source")
		}
	}
	ss.receiveLocked(p, now)
	return nil
}

// session is one BFD session (RFC 5880 §6.8.1 state variables).
type session struct {
	srv  *Server
	peer netip.Addr
	cfg  Config
	conn *net.UDPConn

	state, remoteState       State
	localDiscr, remoteDiscr  uint32
	diag                     Diag
	remoteMinRx, remoteMinTx time.Duration
	remoteMult               uint8
	poll, sendFinal          bool
	lastRx                   time.Time
	nextTx                   time.Time
	ups, downs               int
	lastChange               time.Time

	poke chan struct{}
	quit chan struct{}
}

// wake makes the session's goroutine look at its timers again (after a change).
func (ss *session) wake() {
	select {
	case ss.poke <- struct{}{}:
	default:
	}
}

// desiredTx is the bfd.DesiredMinTxInterval on the wire: at least 1 s while not up.
func (ss *session) desiredTx() time.Duration {
	if ss.state != Up {
		return max(ss.cfg.MinTx, slowTx)
	}
	return ss.cfg.MinTx
}

// txInterval is the interval between periodic packets (§6.8.7), 0 when the peer asks for none.
func (ss *session) txInterval() time.Duration {
	if ss.remoteMinRx == 0 {
		return 0
	}
	return max(ss.desiredTx(), ss.remoteMinRx)
}

// detectTime is the asynchronous-mode detection time (§6.8.4), 0 before the peer was heard.
func (ss *session) detectTime() time.Duration {
	if ss.remoteDiscr == 0 {
		return 0
	}
	return time.Duration(ss.remoteMult) * max(ss.cfg.MinRx, ss.remoteMinTx)
}

func (ss *session) packetLocked(final bool) packet {
	p := packet{Diag: ss.diag, State: ss.state, DetectMult: ss.cfg.Multiplier, MyDiscr: ss.localDiscr,
		YourDiscr: ss.remoteDiscr, DesiredMinTx: ss.desiredTx(), RequiredMinRx: ss.cfg.MinRx}
	if final {
		p.Final = true
	} else {
		p.Poll = ss.poll
	}
	return p
}

// receiveLocked updates the session from a valid packet (§6.8.6 after the session lookup).
func (ss *session) receiveLocked(p packet, now time.Time) {
	ss.remoteDiscr = p.MyDiscr
	ss.remoteState = p.State
	ss.remoteMinRx, ss.remoteMinTx, ss.remoteMult = p.RequiredMinRx, p.DesiredMinTx, p.DetectMult
	if p.Final && ss.poll {
		ss.poll = false // Poll Sequence done: the peer has our current timers
	}
	ss.lastRx = now
	if p.Poll {
		ss.sendFinal = true
	}
	if ss.state != AdminDown {
		switch {
		case p.State == AdminDown:
			if ss.state != Down {
				ss.setState(Down, DiagNeighborDown, now)
			}
		case ss.state == Down && p.State == Down:
			ss.setState(Init, DiagNone, now)
		case ss.state == Down && p.State == Init, ss.state == Init && (p.State == Init || p.State == Up):
			ss.setState(Up, DiagNone, now)
		case ss.state == Up && p.State == Down:
			ss.setState(Down, DiagNeighborDown, now)
		}
	}
	ss.wake()
}

// setState changes state, starts a Poll Sequence when the transmit interval changes on the
// way up (§6.8.3), and reports up and down-from-up transitions.
func (ss *session) setState(st State, d Diag, now time.Time) {
	old := ss.state
	ss.state = st
	if d != DiagNone || st == Up {
		ss.diag = d
	}
	ss.lastChange = now
	ss.nextTx = now // tell the peer at once
	// Going up lowers the transmit interval from the 1 s floor to MinTx: a Poll Sequence
	// tells the peer (it answers with F). Going down needs none.
	ss.poll = st == Up && ss.cfg.MinTx < slowTx
	switch {
	case st == Up:
		ss.ups++
	case old == Up:
		ss.downs++
	}
	ss.srv.log.Info("bfd: session state", "peer", ss.peer, "from", old, "to", st, "diag", d.String())
	if cb := ss.srv.opts.OnChange; cb != nil && (st == Up || old == Up) {
		go cb(ss.peer, st == Up, d)
	}
}

// run sends periodic packets and runs the detection timer.
func (ss *session) run() {
	srv := ss.srv
	defer srv.wg.Done()
	defer ss.conn.Close()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		srv.mu.Lock()
		now := time.Now()
		var out []byte
		if dt := ss.detectTime(); dt > 0 && now.Sub(ss.lastRx) >= dt {
			if ss.state == Init || ss.state == Up {
				ss.setState(Down, DiagTimeExpired, now)
			}
			ss.remoteDiscr, ss.remoteState = 0, Down // §6.8.1: reset when the detection time expires
			ss.remoteMinRx = time.Microsecond
		}
		if ss.sendFinal {
			ss.sendFinal = false
			out = ss.packetLocked(true).marshal()
		} else if iv := ss.txInterval(); iv > 0 && !now.Before(ss.nextTx) {
			out = ss.packetLocked(false).marshal()
			ss.nextTx = now.Add(jitter(iv, ss.cfg.Multiplier))
		}
		next := ss.nextTx
		if ss.txInterval() == 0 {
			next = now.Add(time.Second)
		}
		if dt := ss.detectTime(); dt > 0 {
			if d := ss.lastRx.Add(dt); d.Before(next) {
				next = d
			}
		}
		srv.mu.Unlock()
		if out != nil {
			_, _ = ss.conn.Write(out) // an unreachable peer is what detection is for
		}
		timer.Reset(max(time.Until(next), 0))
		select {
		case <-ss.quit:
			return
		case <-ss.poke:
		case <-timer.C:
		}
	}
}

// jitter is §6.8.7: 75-100% of the interval, 75-90% with a detect multiplier of 1.
func jitter(iv time.Duration, mult uint8) time.Duration {
	span := int64(25)
	if mult == 1 {
		span = 15
	}
	n, _ := rand.Int(rand.Reader, big.NewInt(span+1))
	return iv * time.Duration(75+n.Int64()) / 100
}

func (ss *session) status() Status {
	st := Status{Peer: ss.peer, State: ss.state.String(), RemoteState: ss.remoteState.String(), Diag: ss.diag.String(),
		LocalDiscr: ss.localDiscr, RemoteDiscr: ss.remoteDiscr, TxInterval: ss.txInterval(), DetectTime: ss.detectTime(),
		Ups: ss.ups, Downs: ss.downs, LastChange: ss.lastChange}
	return st
}
