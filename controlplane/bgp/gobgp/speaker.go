// Package gobgp implements bgp.Speaker on an embedded GoBGP server. It is the only package
// in the project that imports GoBGP. The server's sockets live in the network namespace of
// the process (the agent runs inside its host's namespace).
package gobgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/govcloud/govcloud/controlplane/bgp"
	"github.com/govcloud/govcloud/controlplane/bgp/bfd"
)

// Options tune a Speaker.
type Options struct {
	Logger *slog.Logger
	// Restarting says this speaker replaces one that stopped with Close(graceful=true) and
	// that forwarding continued meanwhile: the OPEN carries the graceful-restart R bit and
	// the per-family F bit, so peers keep the stale routes until End-of-RIB.
	Restarting bool
	// ConnectRetry is how often an unestablished session dials again (0: 5 s).
	ConnectRetry time.Duration
}

// Speaker is a bgp.Speaker on GoBGP. Create it with New; it starts the BGP server on the
// first Set.
type Speaker struct {
	opts Options
	log  *slog.Logger
	logs *logAdapter

	// mu serialises Set and Close. It is held only across GoBGP calls that cannot block on
	// a peer (route and peer changes return once queued) and across stop, which is bounded
	// (see stopWait); Status never takes it.
	mu     sync.Mutex
	srv    *server.BgpServer
	global bgp.Config // RouterID, ASN and ListenPort of the running server
	peers  map[netip.Addr]bgp.Peer
	paths  map[netip.Prefix]bgp.Advertisement
	closed bool

	// view is what Status reads: the running server and configured peers (published by Set
	// under viewMu), and the last answer GoBGP gave, for when it does not answer in time.
	viewMu    sync.Mutex
	viewSrv   *server.BgpServer
	viewPeers map[netip.Addr]bgp.Peer
	viewBFD   *bfd.Server
	lastQuery *peerQuery
	// querying is closed when the query of GoBGP under way ends (nil: none under way).
	// Callers of Status share it: one query at a time, however many callers wait, so a
	// server slowed by a large RIB never gets a queue of them in front of Set's routes.
	querying chan struct{}
	// restarting is Options.Restarting until the first Set has added its peers: peers added
	// later are not part of the restart.
	restarting bool
	// want are the routes of the last Set; hy and holdDown decide which are announced now,
	// wake releases the held ones.
	want     []bgp.Advertisement
	holdDown bgp.HoldDown
	hy       bgp.Hysteresis
	wake     *time.Timer
	// bfd runs the BFD sessions of the peers that have BFD (nil: none).
	bfd *bfd.Server
}

var _ bgp.Speaker = (*Speaker)(nil)

// New returns a stopped speaker.
func New(opts Options) *Speaker {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ConnectRetry <= 0 {
		opts.ConnectRetry = 5 * time.Second
	}
	return &Speaker{opts: opts, log: opts.Logger, logs: newLogAdapter(opts.Logger), restarting: opts.Restarting}
}

// Set applies the whole desired state: it starts the server (or restarts it when the router
// ID, ASN or listen port changed), adds, replaces and withdraws routes, and adds, removes or
// re-creates only the peers whose own settings changed. Routes are applied before new peers
// so a restarted speaker's first UPDATEs already carry every route.
func (s *Speaker) Set(cfg bgp.Config, adverts []bgp.Advertisement) error {
	if cfg.IsZero() && len(adverts) == 0 {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			return bgp.ErrClosed
		}
		if s.srv != nil {
			s.log.Info("bgp: no BGP configuration any more; stopping the speaker")
		}
		return s.stop(false)
	}
	if err := bgp.Validate(cfg, adverts); err != nil {
		return fmt.Errorf("bgp desired state: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return bgp.ErrClosed
	}
	ctx := context.Background()
	g := bgp.Config{RouterID: cfg.RouterID, ASN: cfg.ASN, ListenPort: cfg.ListenPort}
	if s.srv != nil && !reflect.DeepEqual(g, s.global) {
		s.log.Info("bgp: router ID, ASN or listen port changed; restarting the speaker (sessions reset)",
			"routerID", cfg.RouterID, "asn", cfg.ASN, "listenPort", cfg.ListenPort)
		if err := s.stop(false); err != nil {
			s.log.Warn("bgp: stopping the old speaker", "err", err)
		}
	}
	if s.srv == nil {
		if err := s.start(ctx, g); err != nil {
			return err
		}
	}
	defer func() { s.restarting = false }()
	known := slices.Collect(maps.Values(s.peers))
	s.logs.setSecrets(append(known, cfg.Peers...))

	var errs []error
	s.want = make([]bgp.Advertisement, 0, len(adverts))
	for _, a := range adverts {
		s.want = append(s.want, cloneAdvert(a))
	}
	s.holdDown = cfg.HoldDown
	errs = append(errs, s.applyRoutes(ctx)...)

	// Peers: only those whose settings changed are touched.
	wantPeers := make(map[netip.Addr]bgp.Peer, len(cfg.Peers))
	for _, p := range cfg.Peers {
		wantPeers[p.Address] = p
	}
	for addr, old := range s.peers {
		if p, ok := wantPeers[addr]; ok && reflect.DeepEqual(p, old) {
			continue
		}
		srv := s.srv
		if err := s.bounded("removing peer "+addr.String(), s.sessionPorts(addr), func() error {
			return srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()})
		}); err != nil {
			errs = append(errs, fmt.Errorf("removing peer %s: %w", old, err))
			continue
		}
		delete(s.peers, addr)
		s.logs.forget(addr.String())
		s.log.Info("bgp: peer removed", "peer", old.String())
	}
	for _, p := range cfg.Peers {
		if _, ok := s.peers[p.Address]; ok {
			continue
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(p)}); err != nil {
			errs = append(errs, fmt.Errorf("adding peer %s: %w", p, err))
			continue
		}
		s.peers[p.Address] = p
		s.log.Info("bgp: peer added", "peer", p.String())
	}
	if err := s.setBFD(cfg.Peers); err != nil {
		errs = append(errs, err)
	}
	s.publish()
	return errors.Join(errs...)
}

// applyRoutes makes the server's routes what the hysteresis lets through of s.want: withdraw
// what is gone, (re)announce what is new or changed, and set the timer that releases routes
// held down. Called with s.mu held.
func (s *Speaker) applyRoutes(ctx context.Context) []error {
	adverts, wake := s.hy.Filter(time.Now(), s.holdDown, s.want)
	if s.wake != nil {
		s.wake.Stop()
		s.wake = nil
	}
	if !wake.IsZero() {
		s.log.Debug("bgp: re-announcement held down (flap hysteresis)", "held", len(s.want)-len(adverts), "until", wake)
		s.wake = time.AfterFunc(time.Until(wake), s.release)
	}
	want := make(map[netip.Prefix]bgp.Advertisement, len(adverts))
	for _, a := range adverts {
		want[a.Prefix] = a
	}
	// Every withdrawal and (re)announcement goes to the server in one operation: the peers
	// get them in as few UPDATEs as the attributes allow (1200 VIPs: two, not 1200). Should
	// the batch be refused, they go one by one, so each error names its prefix.
	var batch []*api.Path
	var gone []netip.Prefix
	var added []bgp.Advertisement
	for p := range s.paths {
		if _, ok := want[p]; !ok {
			path, err := apiPath(s.paths[p])
			if err != nil {
				return s.applyEach(ctx, want, adverts)
			}
			path.IsWithdraw = true
			batch, gone = append(batch, path), append(gone, p)
		}
	}
	for _, a := range adverts {
		if old, ok := s.paths[a.Prefix]; ok && reflect.DeepEqual(old, a) {
			continue
		}
		path, err := apiPath(a)
		if err != nil {
			return s.applyEach(ctx, want, adverts)
		}
		batch, added = append(batch, path), append(added, a)
	}
	if len(batch) == 0 {
		return nil
	}
	if err := s.srv.AddPaths(ctx, api.TableType_GLOBAL, "", batch); err != nil {
		s.log.Warn("bgp: routes refused as a batch; one by one", "routes", len(batch), "err", err)
		return s.applyEach(ctx, want, adverts)
	}
	for _, p := range gone {
		delete(s.paths, p)
	}
	for _, a := range added {
		s.paths[a.Prefix] = a
	}
	return nil
}

// applyEach is applyRoutes one route per operation: withdraw each path not in want, announce
// each of adverts that is new or changed. Called with s.mu held.
func (s *Speaker) applyEach(ctx context.Context, want map[netip.Prefix]bgp.Advertisement, adverts []bgp.Advertisement) []error {
	var errs []error
	for p := range s.paths {
		if _, ok := want[p]; !ok {
			path, err := apiPath(s.paths[p])
			if err == nil {
				err = s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: family(p), Path: path})
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("withdrawing %s: %w", p, err))
				continue
			}
			delete(s.paths, p)
		}
	}
	for _, a := range adverts {
		if old, ok := s.paths[a.Prefix]; ok && reflect.DeepEqual(old, a) {
			continue
		}
		path, err := apiPath(a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// Adding a path for a prefix the speaker already originates replaces it (implicit
		// withdraw).
		if _, err := s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path}); err != nil {
			errs = append(errs, fmt.Errorf("advertising %s: %w", a.Prefix, err))
			continue
		}
		s.paths[a.Prefix] = a
	}
	return errs
}

// setBFD makes the BFD sessions those of the peers with BFD: the server starts with the first
// and stops (telling the peers AdminDown) with the last.
func (s *Speaker) setBFD(peers []bgp.Peer) error {
	want := map[netip.Addr]bfd.Config{}
	for _, p := range peers {
		if p.BFD != nil {
			want[p.Address] = bfd.Config{MinTx: p.BFD.MinTx, MinRx: p.BFD.MinRx, Multiplier: p.BFD.Multiplier}
		}
	}
	if len(want) == 0 {
		if s.bfd != nil {
			err := s.bfd.Close(true)
			s.bfd = nil
			return err
		}
		return nil
	}
	if s.bfd == nil {
		s.bfd = bfd.New(bfd.Options{Logger: s.log, OnChange: s.bfdChanged})
	}
	return s.bfd.Set(want)
}

// bfdChanged resets the BGP session to a peer whose BFD session went down: the peer is gone
// (or its path is), so the session is not left to the hold timer. GoBGP then reconnects as
// usual. It runs on its own goroutine, never under s.mu.
func (s *Speaker) bfdChanged(peer netip.Addr, up bool, diag bfd.Diag) {
	if up {
		s.log.Info("bfd: session up", "peer", peer)
		return
	}
	s.viewMu.Lock()
	srv := s.viewSrv
	_, ours := s.viewPeers[peer]
	s.viewMu.Unlock()
	if srv == nil || !ours {
		return
	}
	s.log.Warn("bfd: session down; resetting the BGP session", "peer", peer, "diag", diag.String())
	done := make(chan error, 1)
	go func() {
		done <- srv.ResetPeer(context.Background(), &api.ResetPeerRequest{Address: peer.String(), Communication: "BFD down: " + diag.String()})
	}()
	select {
	case err := <-done:
		if err != nil {
			s.log.Warn("bfd: resetting the BGP session", "peer", peer, "err", err)
		}
	case <-time.After(2 * stopWait):
		s.log.Warn("bfd: resetting the BGP session still pending", "peer", peer)
	}
}

// release runs when a held-down route's delay is over.
func (s *Speaker) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.srv == nil {
		return
	}
	if err := errors.Join(s.applyRoutes(context.Background())...); err != nil {
		s.log.Warn("bgp: announcing routes after their hold-down", "err", err)
	}
}

// publish makes the running server and configured peers visible to Status.
func (s *Speaker) publish() {
	s.viewMu.Lock()
	defer s.viewMu.Unlock()
	s.viewSrv = s.srv
	s.viewPeers = maps.Clone(s.peers)
	s.viewBFD = s.bfd
}

// cloneAdvert copies a so later changes to the caller's slices or pointers cannot change
// what the speaker believes it advertises.
func cloneAdvert(a bgp.Advertisement) bgp.Advertisement {
	a.Communities = slices.Clone(a.Communities)
	a.LargeCommunities = slices.Clone(a.LargeCommunities)
	if a.LocalPref != nil {
		v := *a.LocalPref
		a.LocalPref = &v
	}
	if a.MED != nil {
		v := *a.MED
		a.MED = &v
	}
	return a
}

func (s *Speaker) start(ctx context.Context, g bgp.Config) error {
	plainTCPListeners(s.log)
	srv := server.NewBgpServer(server.LoggerOption(s.logs))
	go srv.Serve()
	err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:        g.ASN,
		RouterId:   g.RouterID.String(),
		ListenPort: int32(g.ListenPort),
	}})
	if err == nil {
		// Accept nothing from peers: the fabric's routes are not ours to install. The global
		// import policy also sees the speaker's own routes, so it rejects by route type
		// (learned over eBGP or iBGP) and accepts the rest (locally originated).
		reject := &api.Actions{RouteAction: api.RouteAction_REJECT}
		err = srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{Name: importPolicy, Statements: []*api.Statement{
			{Name: importPolicy + "-ebgp", Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_EXTERNAL}, Actions: reject},
			{Name: importPolicy + "-ibgp", Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_INTERNAL}, Actions: reject},
		}}})
	}
	if err == nil {
		err = srv.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name: "global", Direction: api.PolicyDirection_IMPORT, Policies: []*api.Policy{{Name: importPolicy}}, DefaultAction: api.RouteAction_ACCEPT,
		}})
	}
	if err != nil {
		_ = srv.StopBgp(ctx, &api.StopBgpRequest{})
		srv.Stop()
		return fmt.Errorf("starting BGP speaker AS%d router ID %s port %d: %w", g.ASN, g.RouterID, g.ListenPort, err)
	}
	s.srv, s.global = srv, g
	s.peers = map[netip.Addr]bgp.Peer{}
	s.paths = map[netip.Prefix]bgp.Advertisement{}
	s.publish()
	return nil
}

// stopWait bounds each of the two waits of stop: for GoBGP to stop on its own, then, after
// shutting the BGP sockets, for it to notice. A peer that stopped reading (a wedged ToR)
// blocks GoBGP's write of its Cease until the write deadline (the hold time, seconds to
// minutes) and StopBgp waits for that write; shutting the socket fails it at once.
const stopWait = 300 * time.Millisecond

// stop stops the running server within about 2*stopWait whatever its peers do. The
// listener is closed before stop returns, so a new server can take the port.
func (s *Speaker) stop(graceful bool) error {
	if s.srv == nil {
		return nil
	}
	var err error
	keys := s.sessionPorts()
	if graceful {
		// GoBGP's StopBgp always sends a Cease NOTIFICATION. Shut the sessions' sockets
		// first, so that NOTIFICATION cannot be written and peers see only a TCP close: the
		// graceful-restart helper then keeps our routes as stale.
		n, serr := shutdownSessions(keys)
		if serr != nil {
			err = fmt.Errorf("closing BGP sessions without NOTIFICATION: %w", serr)
		}
		s.log.Info("bgp: graceful stop, sessions closed without NOTIFICATION", "sockets", n)
	}
	if s.bfd != nil {
		// A planned restart only stops sending (the peers' detection runs out, and with the
		// C bit 0 a graceful-restart helper keeps the routes); otherwise AdminDown.
		err = errors.Join(err, s.bfd.Close(!graceful))
		s.bfd = nil
	}
	srv := s.srv
	s.srv = nil
	s.peers, s.paths = nil, nil
	s.hy = bgp.Hysteresis{} // the sessions end: nothing is left announced
	if s.wake != nil {
		s.wake.Stop()
		s.wake = nil
	}
	s.publish()
	return errors.Join(err, s.bounded("stopping BGP speaker", keys, func() error {
		_ = srv.StopBgp(context.Background(), &api.StopBgpRequest{})
		srv.Stop()
		return nil
	}))
}

// bounded runs a GoBGP call that waits for peers' sessions to end (StopBgp, DeletePeer) and
// returns within about 2*stopWait: when the call has not returned after stopWait, some peer
// is not taking its Cease, so the sockets named by keys (the peers concerned; the others'
// Cease is long written) are shut, which fails the blocked write at once.
func (s *Speaker) bounded(what string, keys sessionKeys, call func() error) error {
	done := make(chan error, 1)
	go func() { done <- call() }()
	select {
	case err := <-done:
		return err
	case <-time.After(stopWait):
	}
	n, serr := shutdownSessions(keys)
	s.log.Warn("bgp: a peer is not reading (wedged?); shut its BGP sockets", "while", what, "sockets", n, "err", serr)
	select {
	case err := <-done:
		return err
	case <-time.After(stopWait):
		return fmt.Errorf("%s: GoBGP still busy after %s; left to finish in the background", what, 2*stopWait)
	}
}

// plainTCPListeners turns off, for this process, Go's default (since Go 1.24) of MPTCP for
// listening sockets: an MPTCP listener refuses TCP_MD5SIG (ENOPROTOOPT) and the TTL options,
// so a peer dialling in with a password would never get a session. An explicit
// multipathtcp setting in GODEBUG is left alone.
func plainTCPListeners(log *slog.Logger) {
	v := os.Getenv("GODEBUG")
	if strings.Contains(v, "multipathtcp=") {
		if !strings.Contains(v, "multipathtcp=0") {
			log.Warn("bgp: GODEBUG keeps MPTCP listeners; peers dialling in with TCP-MD5 will fail", "GODEBUG", v)
		}
		return
	}
	if v != "" {
		v += ","
	}
	_ = os.Setenv("GODEBUG", v+"multipathtcp=0")
}

// sessionPorts lists the (peer address, peer port, local port) triples that identify this
// speaker's BGP sockets: to the peers named, or to every peer (and the listener) when none is.
func (s *Speaker) sessionPorts(only ...netip.Addr) sessionKeys {
	k := sessionKeys{listenPort: s.global.ListenPort, peers: map[netip.Addr]int{}}
	if k.listenPort == 0 {
		k.listenPort = bgp.DefaultPort
	}
	k.listener = len(only) == 0
	for a, p := range s.peers {
		if len(only) > 0 && !slices.Contains(only, a) {
			continue
		}
		port := p.Port
		if port == 0 {
			port = bgp.DefaultPort
		}
		k.peers[a] = port
	}
	return k
}

// Close stops the server. With graceful=true peers see the TCP sessions close without a
// NOTIFICATION (see Options.Restarting for the speaker that follows).
func (s *Speaker) Close(ctx context.Context, graceful bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	// stop is bounded by itself (2*stopWait); ctx can only cut it shorter.
	err := s.stop(graceful)
	if err == nil && ctx.Err() != nil {
		err = fmt.Errorf("stopping BGP speaker: %w", ctx.Err())
	}
	return err
}

func (s *Speaker) apiPeer(p bgp.Peer) *api.Peer {
	port := uint32(p.Port)
	if port == 0 {
		port = bgp.DefaultPort
	}
	hold := uint64(p.HoldTime / time.Second)
	if hold == 0 {
		hold = 90
	}
	keep := uint64(p.Keepalive / time.Second)
	if keep == 0 {
		keep = max(hold/3, 1)
	}
	ap := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.ASN, AuthPassword: p.Password.Reveal()},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:           uint64(max(s.opts.ConnectRetry/time.Second, 1)),
			HoldTime:               hold,
			KeepaliveInterval:      keep,
			IdleHoldTimeAfterReset: 1,
		}},
		Transport: &api.Transport{RemotePort: port},
	}
	if p.Multihop > 0 {
		ap.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.Multihop)}
	}
	if p.GracefulRestart {
		rt := uint32(p.RestartTime / time.Second)
		if rt == 0 {
			rt = 120
		}
		ap.GracefulRestart = &api.GracefulRestart{
			Enabled:     true,
			RestartTime: rt,
			// The speaker imports nothing, so waiting for peers' End-of-RIB before sending
			// ours gains nothing; keep the wait short.
			DeferralTime:    2,
			LocalRestarting: s.restarting,
		}
	}
	v4, v6 := p.Families()
	for _, f := range []struct {
		on  bool
		fam *api.Family
	}{{v4, familyV4}, {v6, familyV6}} {
		if !f.on {
			continue
		}
		as := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f.fam, Enabled: true}}
		if p.GracefulRestart {
			as.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		ap.AfiSafis = append(ap.AfiSafis, as)
	}
	return ap
}

const importPolicy = "govcloud-reject-learned"

var (
	familyV4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	familyV6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

func family(p netip.Prefix) *api.Family {
	if p.Addr().Is4() {
		return familyV4
	}
	return familyV6
}

func apiPath(a bgp.Advertisement) (*api.Path, error) {
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: a.Prefix.Addr().String(), PrefixLen: uint32(a.Prefix.Bits())})
	if err != nil {
		return nil, fmt.Errorf("advertisement %s: %w", a.Prefix, err)
	}
	attrs := []proto.Message{&api.OriginAttribute{Origin: 0}} // IGP
	// The unspecified next hop makes GoBGP put, per session, its own local address of that
	// session (eBGP and iBGP alike): next-hop-self per peer.
	if a.Prefix.Addr().Is4() {
		attrs = append(attrs, &api.NextHopAttribute{NextHop: netip.IPv4Unspecified().String()})
	} else {
		attrs = append(attrs, &api.MpReachNLRIAttribute{Family: familyV6, NextHops: []string{netip.IPv6Unspecified().String()}, Nlris: []*anypb.Any{nlri}})
	}
	if len(a.Communities) > 0 {
		c := &api.CommunitiesAttribute{}
		for _, x := range a.Communities {
			c.Communities = append(c.Communities, x.Uint32())
		}
		attrs = append(attrs, c)
	}
	if len(a.LargeCommunities) > 0 {
		c := &api.LargeCommunitiesAttribute{}
		for _, x := range a.LargeCommunities {
			c.Communities = append(c.Communities, &api.LargeCommunity{GlobalAdmin: x.Global, LocalData1: x.Local1, LocalData2: x.Local2})
		}
		attrs = append(attrs, c)
	}
	if a.LocalPref != nil {
		attrs = append(attrs, &api.LocalPrefAttribute{LocalPref: *a.LocalPref})
	}
	if a.MED != nil {
		attrs = append(attrs, &api.MultiExitDiscAttribute{Med: *a.MED})
	}
	path := &api.Path{Family: family(a.Prefix), Nlri: nlri}
	for _, m := range attrs {
		x, err := anypb.New(m)
		if err != nil {
			return nil, fmt.Errorf("advertisement %s: attribute %T: %w", a.Prefix, m, err)
		}
		path.Pattrs = append(path.Pattrs, x)
	}
	return path, nil
}

// statusWait bounds how long Status waits for GoBGP's answer; past it Status reports the
// last answer (Reason says how old), so a busy or wedged server never stalls callers.
const statusWait = 500 * time.Millisecond

// peerQuery is one answer from GoBGP: sessions by neighbour address, and each neighbour's
// paths in the global RIB.
type peerQuery struct {
	at    time.Time
	srv   *server.BgpServer
	got   map[string]*api.Peer
	inRIB map[string]int
}

func query(srv *server.BgpServer) *peerQuery {
	q := &peerQuery{at: time.Now(), srv: srv, got: map[string]*api.Peer{}, inRIB: map[string]int{}}
	ctx := context.Background()
	_ = srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		if p.Conf != nil {
			q.got[p.Conf.NeighborAddress] = p
		}
	})
	// Accepted counts the peer's routes in the global RIB (after the import policy); GoBGP's
	// own "accepted" counter is taken before the global policy.
	for _, f := range []*api.Family{familyV4, familyV6} {
		// Only the neighbour is read: binary NLRI and attributes are far cheaper to hand out
		// than GoBGP's protobuf conversion of each of them.
		_ = srv.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: f, EnableOnlyBinary: true}, func(d *api.Destination) {
			for _, p := range d.Paths {
				if p.NeighborIp != "" && p.NeighborIp != "<nil>" {
					q.inRIB[p.NeighborIp]++
				}
			}
		})
	}
	return q
}

// Status reports every configured peer, sorted by address. It returns within statusWait
// (plus the time to format) whatever Set or GoBGP are doing.
func (s *Speaker) Status() []bgp.PeerStatus {
	s.viewMu.Lock()
	srv := s.viewSrv
	bfdSrv := s.viewBFD
	peers := make(map[string]bgp.Peer, len(s.viewPeers))
	for a, p := range s.viewPeers {
		peers[a.String()] = p
	}
	s.viewMu.Unlock()
	q := &peerQuery{got: map[string]*api.Peer{}, inRIB: map[string]int{}}
	stale := ""
	if srv != nil {
		s.viewMu.Lock()
		done := s.querying
		if done == nil {
			done = make(chan struct{})
			s.querying = done
			go func() {
				got := query(srv)
				s.viewMu.Lock()
				s.lastQuery, s.querying = got, nil
				s.viewMu.Unlock()
				close(done)
			}()
		}
		s.viewMu.Unlock()
		select {
		case <-done:
		case <-time.After(statusWait):
			stale = "speaker busy"
		}
		s.viewMu.Lock()
		if last := s.lastQuery; last != nil && last.srv == srv {
			q = last
		}
		s.viewMu.Unlock()
		if stale != "" {
			stale = fmt.Sprintf("speaker busy: state as of %s ago", time.Since(q.at).Round(time.Millisecond))
		}
	}
	bfds := map[netip.Addr]bfd.Status{}
	if bfdSrv != nil {
		for _, b := range bfdSrv.Status() {
			bfds[b.Peer] = b
		}
	}
	out := make([]bgp.PeerStatus, 0, len(peers))
	for addr, cfg := range peers {
		st := bgp.PeerStatus{Address: cfg.Address, ASN: cfg.ASN, State: "idle"}
		if cfg.BFD != nil {
			b, ok := bfds[cfg.Address]
			st.BFD = &bgp.BFDStatus{State: "down"}
			if ok {
				st.BFD = &bgp.BFDStatus{State: b.State, RemoteState: b.RemoteState, Diag: b.Diag, TxInterval: b.TxInterval,
					DetectTime: b.DetectTime, Ups: b.Ups, Downs: b.Downs}
			}
		}
		if p := q.got[addr]; p != nil && p.State != nil {
			st.State = sessionState(p.State.SessionState)
			st.Established = p.State.SessionState == api.PeerState_ESTABLISHED
			eorRecv, anyGR := true, false
			grOn := st.Established && p.GracefulRestart != nil && p.GracefulRestart.Enabled
			for _, as := range p.AfiSafis {
				if as.State != nil {
					st.Received += int(as.State.Received)
					n := int(as.State.Advertised)
					if grOn && n > 0 {
						n-- // GoBGP counts the End-of-RIB marker among the paths
					}
					st.Advertised += n
				}
				if gr := as.MpGracefulRestart; gr != nil && gr.State != nil && gr.State.Enabled {
					anyGR = true
					eorRecv = eorRecv && gr.State.EndOfRibReceived
				}
			}
			st.EndOfRIBReceived = anyGR && eorRecv
			st.Accepted = q.inRIB[addr]
		}
		if !st.Established {
			st.Reason = s.logs.reason(addr, cfg.Password != "")
		}
		if stale != "" {
			st.Reason = strings.TrimPrefix(st.Reason+"; "+stale, "; ")
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b bgp.PeerStatus) int { return a.Address.Compare(b.Address) })
	return out
}

func sessionState(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_IDLE:
		return "idle"
	case api.PeerState_CONNECT:
		return "connect"
	case api.PeerState_ACTIVE:
		return "active"
	case api.PeerState_OPENSENT:
		return "opensent"
	case api.PeerState_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_ESTABLISHED:
		return "established"
	}
	return "unknown"
}
