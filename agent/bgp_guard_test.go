package agent

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/bgp"
	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
	"github.com/govcloud/govcloud/dataplane/hostnet"
	"github.com/govcloud/govcloud/dataplane/lbmap"
	"github.com/govcloud/govcloud/dataplane/viproute"
)

// stuckSpeaker is a speaker whose Set and Status block until released, as GoBGP did behind
// a ToR that stopped reading (issue 18); it records what it finally applied.
type stuckSpeaker struct {
	bgp.Fake
	release chan struct{}
	once    sync.Once
}

func (s *stuckSpeaker) Set(cfg bgp.Config, a []bgp.Advertisement) error {
	<-s.release
	return s.Fake.Set(cfg, a)
}

func (s *stuckSpeaker) Status() []bgp.PeerStatus {
	<-s.release
	return s.Fake.Status()
}

func (s *stuckSpeaker) unstick() { s.once.Do(func() { close(s.release) }) }

// A reconcile pass returns within a second while the speaker blocks, says so in the status,
// and the newest state reaches the speaker once it answers again.
func TestReconcileBoundedByWedgedSpeaker(t *testing.T) {
	sp := &stuckSpeaker{release: make(chan struct{})}
	defer sp.unstick()
	r := &rig{ctl: &fakeController{}, hn: &hostnet.Fake{}, lb: &lbmap.Fake{}, routes: &viproute.Fake{},
		health: &fakeHealth{down: map[hoststatus.BackendKey]bool{}, changed: make(chan struct{}, 1)}}
	a, err := New(Config{Host: "h1", Controller: r.ctl, HostNet: r.hn, LB: r.lb, Routes: r.routes, Speaker: sp,
		PollTimeout: 20 * time.Millisecond, PeerPoll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	a.checks.Close()
	a.checks = r.health
	a.resolve = func(netip.Addr) {}
	r.a = a
	st := labState()
	for pass := 1; pass <= 3; pass++ {
		t0 := time.Now()
		status := r.pass(t, st)
		if d := time.Since(t0); d > time.Second {
			t.Fatalf("pass %d with a blocked speaker took %s, want < 1s", pass, d)
		}
		if status.Ready || !strings.Contains(status.Error, "speaker still applying") {
			t.Fatalf("pass %d: ready %v error %q; want not ready, naming the busy speaker", pass, status.Ready, status.Error)
		}
		st = labState()
		st.BGP.ASN = uint32(65010 + pass) // every pass a new desired state
	}
	sp.unstick()
	eventually(t, "the newest state to reach the speaker", 2*time.Second, func() bool {
		cfg, _ := sp.Fake.State()
		return cfg.ASN == 65012
	})
	if sp.Fake.Changes > 2 {
		t.Errorf("speaker applied %d states; the queued ones should collapse to the newest", sp.Fake.Changes)
	}
	status := r.pass(t, st)
	if !status.Ready || !slices.ContainsFunc(status.BGP, func(p bgp.PeerStatus) bool { return p.Established }) {
		t.Fatalf("after the speaker answers: ready %v error %q bgp %+v", status.Ready, status.Error, status.BGP)
	}
	_ = a.speaker.Close(context.Background(), false)
}

// The host's BFD and hold-down settings reach the speaker's config in its units.
func TestBGPConfigBFDAndHoldDown(t *testing.T) {
	st := labState()
	st.BGP.HoldDown = &desired.HoldDown{InitialMs: 500, MaxMs: 30000}
	st.BGP.Peers[0].BFD = &desired.BFD{MinTxMs: 100, MinRxMs: 150, Multiplier: 4}
	cfg, err := bgpConfig(st)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HoldDown != (bgp.HoldDown{Initial: 500 * time.Millisecond, Max: 30 * time.Second}) {
		t.Errorf("hold-down %+v", cfg.HoldDown)
	}
	if b := cfg.Peers[0].BFD; b == nil || *b != (bgp.BFD{MinTx: 100 * time.Millisecond, MinRx: 150 * time.Millisecond, Multiplier: 4}) {
		t.Errorf("BFD %+v", b)
	}
	st.BGP.Peers[0].BFD.Multiplier = 256
	if _, err := bgpConfig(st); err == nil || !strings.Contains(err.Error(), "BFD multiplier 256") {
		t.Errorf("multiplier 256: %v", err)
	}
}
