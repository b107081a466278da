package agent

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/controlplane/lbtables"
	"github.com/govcloud/govcloud/lb"
)

// fakeTables is the controller's side of the shared tables, computed like the keeper does
// (lbtables.Desired, lb.NextShared) from the desired states it is given.
type fakeTables struct {
	mu      sync.Mutex
	rev     int64
	tables  map[string]*lb.SharedTable
	err     error // every fetch fails with it
	fetches int
	bytes   int
}

func (f *fakeTables) update(t *testing.T, st *desired.State) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	want, errs := lbtables.Desired(st)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if f.tables == nil {
		f.tables = map[string]*lb.SharedTable{}
	}
	for n, bs := range want {
		next, _, err := lb.NextShared(lb.DefaultTableSize, f.tables[n], bs, uint64(st.Revision))
		if err != nil {
			t.Fatal(err)
		}
		f.tables[n] = next
	}
	f.rev = st.Revision
}

func (f *fakeTables) LBTables(_ context.Context, _ string, req lbtables.FetchRequest) (*lbtables.FetchResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetches++
	if f.err != nil {
		return nil, f.err
	}
	resp := &lbtables.FetchResponse{Revision: f.rev, Size: lb.DefaultTableSize, Tables: map[string]lb.Delta{}, Current: map[string]lbtables.Summary{}}
	for n, t := range f.tables {
		resp.Current[n] = lbtables.SummaryOf(t)
		if req.Have[n] != t.Generation {
			resp.Tables[n] = t.DeltaSince(req.Have[n])
		}
	}
	f.bytes += resp.Bytes()
	return resp, nil
}

func sharedRig(t *testing.T, src *fakeTables) *rig {
	r := newRig(t, "h1", false)
	r.a.cfg.Tables = src
	return r
}

// TestSharedTablesWrittenAndGated: the agent writes the controller's tables (byte-identical
// to the controller's, whatever it saw before), reports their generation and hash, advertises
// a VIP only once its tables are verified, and keeps a verified table while the controller's
// tables lag the desired state.
func TestSharedTablesWrittenAndGated(t *testing.T) {
	src := &fakeTables{}
	st := labState()
	st.Revision = 10
	src.update(t, st)
	r := sharedRig(t, src)

	status := r.pass(t, st)
	if !status.Ready || status.TablesMode != "shared" {
		t.Fatalf("first pass: %+v", status)
	}
	for _, s := range r.lb.State().Services {
		ct := src.tables[s.Name]
		if s.Shared == nil || s.Shared.Sum() != ct.Sum() {
			t.Fatalf("service %s written without the controller's table", s.Name)
		}
		ht := status.Tables[s.Name]
		if ht.Generation != 10 || ht.Sum != lbtables.SummaryOf(ct).Sum || ht.Mismatch {
			t.Fatalf("status of table %s: %+v", s.Name, ht)
		}
	}
	if _, ads := r.bgp.State(); len(ads) != 1 {
		t.Fatalf("verified tables: %d adverts, want the public VIP", len(ads))
	}

	// A backend added to the desired state that the controller's tables do not know yet:
	// the service keeps its verified table, the VIP stays advertised, the status says why.
	lag := labState()
	lag.Revision = 11
	lag.Services[0].Backends = append(lag.Services[0].Backends, desired.Backend{Address: netip.MustParseAddr("198.18.20.9"), Weight: 1})
	status = r.pass(t, lag)
	www := lbtables.Name("lands-www", 80, lb.TCP)
	if status.Ready || !strings.Contains(status.Tables[www].Error, "198.18.20.9") {
		t.Fatalf("lagging tables: ready=%v table %+v", status.Ready, status.Tables[www])
	}
	for _, s := range r.lb.State().Services {
		if s.Name == www && (len(s.Backends) != 2 || s.Shared.Generation != 10) {
			t.Fatalf("lagging tables: %s rewritten: %+v", www, s)
		}
	}
	if _, ads := r.bgp.State(); len(ads) != 1 {
		t.Fatalf("lagging tables: the verified VIP was withdrawn")
	}
	src.update(t, lag)
	if status = r.pass(t, lag); !status.Ready || status.Tables[www].Generation != 11 {
		t.Fatalf("caught up: %+v", status)
	}

	// A new host (nothing held) whose controller does not answer: nothing written, nothing
	// advertised.
	down := &fakeTables{err: errors.New("controller away")}
	r2 := sharedRig(t, down)
	status = r2.pass(t, lag)
	if status.Ready || len(r2.lb.State().Services) != 0 {
		t.Fatalf("no tables: ready=%v services %v", status.Ready, r2.lb.State().Services)
	}
	if _, ads := r2.bgp.State(); len(ads) != 0 {
		t.Fatalf("no tables: %d VIPs advertised before any table was verified", len(ads))
	}
	// Once it answers, the new host holds byte-identical tables to the first host's.
	down.mu.Lock()
	down.err, down.rev, down.tables = nil, src.rev, src.tables
	down.mu.Unlock()
	status = r2.pass(t, lag)
	if !status.Ready {
		t.Fatalf("new host: %s", status.Error)
	}
	for _, s := range r2.lb.State().Services {
		if s.Shared.Sum() != src.tables[s.Name].Sum() {
			t.Fatalf("new host: table %s differs from the first host's", s.Name)
		}
	}
	if _, ads := r2.bgp.State(); len(ads) != 1 {
		t.Fatal("new host: verified VIP not advertised")
	}
	// Nothing new: no fetch.
	n := src.fetches
	r.pass(t, lag)
	if src.fetches != n {
		t.Fatal("a pass with nothing new fetched tables again")
	}
}

// TestLocalTablesKeepTheOldBehaviour: LocalTables fetches and reports the shared tables but
// writes history-dependent ones and does not gate advertising on them.
func TestLocalTablesKeepTheOldBehaviour(t *testing.T) {
	src := &fakeTables{err: errors.New("controller away")}
	r := sharedRig(t, src)
	r.a.cfg.LocalTables = true
	st := labState()
	st.Revision = 3
	status := r.pass(t, st)
	if status.TablesMode != "local" || len(r.lb.State().Services) != 1 { // the internal VIP is routed
		t.Fatalf("local tables: mode %q, %d services", status.TablesMode, len(r.lb.State().Services))
	}
	for _, s := range r.lb.State().Services {
		if s.Shared != nil {
			t.Fatalf("local tables: %s written with a shared table", s.Name)
		}
	}
	if _, ads := r.bgp.State(); len(ads) != 1 {
		t.Fatal("local tables: advertising must not wait for shared tables")
	}
}
