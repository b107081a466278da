package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/govcloud/govcloud/controlplane/bgp"
	"github.com/govcloud/govcloud/controlplane/desired"
)

// bgpConfig turns the host's BGP settings into the speaker's. Passwords are read here from
// their file or variable and never leave the speaker.
func bgpConfig(st *desired.State) (bgp.Config, error) {
	if st.BGP == nil {
		return bgp.Config{}, nil
	}
	cfg := bgp.Config{ASN: st.BGP.ASN}
	if h := st.BGP.HoldDown; h != nil {
		cfg.HoldDown = bgp.HoldDown{Off: h.Off, Initial: time.Duration(h.InitialMs) * time.Millisecond, Max: time.Duration(h.MaxMs) * time.Millisecond}
	}
	cfg.RouterID = st.BGP.RouterID
	if !cfg.RouterID.IsValid() {
		cfg.RouterID = st.Address
	}
	if !cfg.RouterID.IsValid() {
		return cfg, errors.New("router ID: none, and no host address")
	}
	for i, p := range st.BGP.Peers {
		addr := p.Address
		if !addr.IsValid() {
			return cfg, fmt.Errorf("peer %d (AS%d): no address", i, p.ASN)
		}
		peer := bgp.Peer{Address: addr, ASN: p.ASN, GracefulRestart: p.GracefulRestart, Multihop: uint8(p.Multihop),
			HoldTime: time.Duration(p.HoldTime) * time.Second, Keepalive: time.Duration(p.Keepalive) * time.Second}
		if b := p.BFD; b != nil {
			if b.Multiplier < 0 || b.Multiplier > 255 {
				return cfg, fmt.Errorf("peer %s: BFD multiplier %d: must be from 0 to 255", addr, b.Multiplier)
			}
			peer.BFD = &bgp.BFD{MinTx: time.Duration(b.MinTxMs) * time.Millisecond, MinRx: time.Duration(b.MinRxMs) * time.Millisecond, Multiplier: uint8(b.Multiplier)}
		}
		switch {
		case p.PasswordFile != "":
			b, err := os.ReadFile(p.PasswordFile)
			if err != nil {
				return cfg, fmt.Errorf("peer %s: password file: %w", addr, err)
			}
			peer.Password = bgp.Secret(strings.TrimSpace(string(b)))
		case p.PasswordEnv != "":
			v, ok := os.LookupEnv(p.PasswordEnv)
			if !ok {
				return cfg, fmt.Errorf("peer %s: password variable %s is not set", addr, p.PasswordEnv)
			}
			peer.Password = bgp.Secret(v)
		}
		cfg.Peers = append(cfg.Peers, peer)
	}
	return cfg, nil
}

// adverts lists the public VIPs to announce: only while the load balancer is attached here
// and the VIP has a healthy backend somewhere. Each carries its department's communities; the
// next hop is left to each session (the speaker's own address on it), so every ToR of a
// dual-homed host gets an address on its own subnet.
func adverts(st *desired.State, plan lbPlan, attached bool) []bgp.Advertisement {
	if st.BGP == nil {
		return nil
	}
	if !attached {
		return natAdverts(st)
	}
	var fabricASN uint32
	if len(st.BGP.Peers) > 0 {
		fabricASN = st.BGP.Peers[0].ASN
	}
	up := map[netip.Addr]bool{}
	for _, v := range plan.advertise {
		up[v] = true
	}
	var out []bgp.Advertisement
	seen := map[netip.Addr]bool{}
	for _, svc := range st.Services {
		vip := svc.VIP
		if !up[vip] || seen[vip] {
			continue
		}
		seen[vip] = true
		cs, lc := bgp.DepartmentCommunities(fabricASN, st.BGP.ASN, uint32(svc.TableID))
		a := bgp.Advertisement{Prefix: netip.PrefixFrom(vip, vip.BitLen()), Communities: cs,
			LargeCommunities: []bgp.LargeCommunity{lc}, LocalPref: svc.LocalPref, MED: svc.MED}
		out = append(out, a)
	}
	return append(out, natAdverts(st)...)
}

// natAdverts lists this host's egress addresses and floating IPs as /32s with their
// department's communities: the fabric routes their return traffic (and a floating IP's
// inbound) to this host, which holds the translation. They do not depend on the load
// balancer.
func natAdverts(st *desired.State) []bgp.Advertisement {
	var fabricASN uint32
	if len(st.BGP.Peers) > 0 {
		fabricASN = st.BGP.Peers[0].ASN
	}
	table := map[string]int{}
	var out []bgp.Advertisement
	add := func(a netip.Addr, t int) {
		if !a.Is4() {
			return
		}
		cs, lc := bgp.DepartmentCommunities(fabricASN, st.BGP.ASN, uint32(t))
		out = append(out, bgp.Advertisement{Prefix: netip.PrefixFrom(a, 32), Communities: cs, LargeCommunities: []bgp.LargeCommunity{lc}})
	}
	for _, d := range st.Departments {
		table[d.Name] = d.TableID
		add(d.Egress, d.TableID)
	}
	for _, f := range floatingIPs(st) { // only those mapped to an address here
		add(f.Public, table[f.Department])
	}
	return out
}

// Bounds on how long one reconcile pass waits for the speaker (issue 18: a wedged ToR must not
// stall the agent): Set waits up to speakerSetWait for its state to be applied, Status up to
// speakerStatusWait for an answer. Together they stay well under a second.
const (
	speakerSetWait    = 600 * time.Millisecond
	speakerStatusWait = 250 * time.Millisecond
)

// guardedSpeaker hands desired states to a speaker from one worker goroutine, latest state
// wins, and never lets the caller wait longer than the bounds above: a Set that has not
// finished in time returns an error saying its state is queued, and the worker applies the
// newest state when the speaker returns. Status past its bound answers with the last status
// it got, each peer's Reason saying so.
type guardedSpeaker struct {
	sp bgp.Speaker

	mu      sync.Mutex
	pending *speakerState // newest state not yet handed to sp
	running bool          // the worker is applying a state
	gen     uint64        // generation of the newest state given to Set
	done    uint64        // generation of the last state sp.Set returned for
	doneErr error         // what that Set returned
	changed chan struct{} // closed and replaced whenever done advances
	status  []bgp.PeerStatus
	since   time.Time // when applying the current state began
}

type speakerState struct {
	cfg     bgp.Config
	adverts []bgp.Advertisement
	gen     uint64
}

func guardSpeaker(sp bgp.Speaker) *guardedSpeaker {
	return &guardedSpeaker{sp: sp, changed: make(chan struct{})}
}

// Set queues the state and waits up to speakerSetWait for the speaker to apply it.
func (g *guardedSpeaker) Set(cfg bgp.Config, adverts []bgp.Advertisement) error {
	g.mu.Lock()
	g.gen++
	my := g.gen
	g.pending = &speakerState{cfg: cfg, adverts: slices.Clone(adverts), gen: my}
	if !g.running {
		g.running = true
		go g.work()
	}
	g.mu.Unlock()
	deadline := time.NewTimer(speakerSetWait)
	defer deadline.Stop()
	for {
		g.mu.Lock()
		if g.done >= my {
			err := g.doneErr
			g.mu.Unlock()
			return err
		}
		ch, since := g.changed, g.since
		g.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			return fmt.Errorf("speaker still applying a state after %s (a peer not reading?): the newest state is queued", time.Since(since).Round(time.Millisecond))
		}
	}
}

func (g *guardedSpeaker) work() {
	for {
		g.mu.Lock()
		st := g.pending
		if st == nil {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.pending = nil
		g.since = time.Now()
		g.mu.Unlock()
		err := g.sp.Set(st.cfg, st.adverts)
		g.mu.Lock()
		g.done, g.doneErr = st.gen, err
		close(g.changed)
		g.changed = make(chan struct{})
		g.mu.Unlock()
	}
}

// Status asks the speaker and waits up to speakerStatusWait.
func (g *guardedSpeaker) Status() []bgp.PeerStatus {
	ch := make(chan []bgp.PeerStatus, 1)
	go func() { ch <- g.sp.Status() }()
	select {
	case st := <-ch:
		g.mu.Lock()
		g.status = st
		g.mu.Unlock()
		return st
	case <-time.After(speakerStatusWait):
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	out := slices.Clone(g.status)
	for i := range out {
		out[i].Reason = strings.TrimPrefix(out[i].Reason+"; speaker not answering: last known status", "; ")
	}
	return out
}

// Close closes the speaker (bounded by ctx as the speaker honours it).
func (g *guardedSpeaker) Close(ctx context.Context, graceful bool) error {
	return g.sp.Close(ctx, graceful)
}
