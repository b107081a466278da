package keeper

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/govcloud/govcloud/controlplane/api"
	"github.com/govcloud/govcloud/controlplane/apitest"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/config/configtest"
	"github.com/govcloud/govcloud/controlplane/lbtables"
	"github.com/govcloud/govcloud/controlplane/store"
	"github.com/govcloud/govcloud/lb"
)

func TestMain(m *testing.M) {
	code := m.Run()
	apitest.Shutdown()
	os.Exit(code)
}

// env is an API server with a keeper's routes on a fresh prefix of the test etcd.
type env struct {
	st     *store.Store
	k      *Keeper
	admin  *client.Client
	agent  *client.Client // host1's agent
	agent2 *client.Client // host2's agent
}

func newEnv(t testing.TB, size uint32) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st := apitest.Store(t).WithPrefix(fmt.Sprintf("/test/keeper/%s/", t.Name()))
	srv := api.New(st, apitest.Log, api.Options{ID: "test"})
	k, err := New(st, size, apitest.Log)
	if err != nil {
		t.Fatal(err)
	}
	k.Routes(srv)
	go srv.Run(ctx)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); cancel() })
	tok, err := api.Bootstrap(ctx, st)
	if err != nil || tok == "" {
		t.Fatalf("bootstrap: %q %v", tok, err)
	}
	e := &env{st: st, k: k, admin: client.New(hs.URL, tok)}
	for i, c := range []**client.Client{&e.agent, &e.agent2} {
		h := fmt.Sprintf("host%d", i+1)
		at, err := e.admin.CreateToken(ctx, client.TokenRequest{Name: "agent-" + h, Role: api.RoleAgent, Host: h})
		if err != nil {
			t.Fatal(err)
		}
		*c = client.New(hs.URL, at)
	}
	return e
}

const hosts = `---
apiVersion: govcloud/v1
kind: Host
metadata: {name: host1}
spec: {uplink: eth0, address: 198.18.0.11}
---
apiVersion: govcloud/v1
kind: Host
metadata: {name: host2}
spec: {uplink: eth0, address: 198.18.0.12}
`

// web returns the config with service web (port 80, address backends .10+i for i in ids)
// and service db (two ports, backends 30, 31).
func web(ids ...int) string {
	var bs []string
	for _, i := range ids {
		bs = append(bs, fmt.Sprintf("{address: 198.18.20.%d}", 10+i))
	}
	return configtest.LandsHealth + hosts +
		apitest.Doc("Service", "web", "{department: lands, vip: 198.19.0.10, mode: nat, ports: [{port: 80}], backends: ["+strings.Join(bs, ", ")+"]}") +
		apitest.Doc("Service", "db", "{department: lands, vip: 198.19.0.11, mode: nat, ports: [{port: 5432}, {port: 5433}], backends: [{address: 198.18.20.230}, {address: 198.18.20.231}]}")
}

func (e *env) apply(t *testing.T, yaml string) int64 {
	t.Helper()
	r, err := e.admin.Apply(context.Background(), "test.yaml", []byte(yaml), client.ApplyOptions{Prune: true})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return r.Revision
}

func (e *env) step(t *testing.T) StepResult {
	t.Helper()
	res, err := e.k.Step(context.Background())
	if err != nil {
		t.Fatalf("step: %v", err)
	}
	return res
}

// fetch brings a host's holder up to date through the API and returns the table bytes fetched.
func fetch(t *testing.T, c *client.Client, host string, h *lbtables.Holder, minRev int64) (*lbtables.FetchResponse, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.LBTables(ctx, host, h.Request(minRev))
	if err != nil {
		t.Fatalf("%s: fetch: %v", host, err)
	}
	if errs := h.Apply(resp); len(errs) > 0 {
		t.Fatalf("%s: apply: %v", host, errs)
	}
	return resp, resp.Bytes()
}

func ids(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// TestKeeperGenerationsDeltasAndHashes runs the controller side against a real etcd:
// generations follow the store revisions of the changes, a host that missed changes fetches
// bytes in proportion to the slots that moved (not the table), every fetched table verifies
// by hash and equals the controller's, and a second keeper on the same etcd (another
// controller, or this one restarted) serves the same tables.
func TestKeeperGenerationsDeltasAndHashes(t *testing.T) {
	e := newEnv(t, lb.DefaultTableSize)
	backends := ids(0, 100)
	rev := e.apply(t, web(backends...))
	res := e.step(t)
	if res.Revision != rev || res.Changed != 3 {
		t.Fatalf("first step: %+v, want revision %d and 3 tables (web/80, db/5432, db/5433)", res, rev)
	}
	sums := e.k.Summaries()
	w := lbtables.Name("web", 80, lb.TCP)
	if sums[w].Generation != uint64(rev) {
		t.Fatalf("table %s: generation %d, want the store revision %d", w, sums[w].Generation, rev)
	}

	h1, h2 := lbtables.NewHolder(), lbtables.NewHolder()
	_, full := fetch(t, e.agent, "host1", h1, rev)
	fetch(t, e.agent2, "host2", h2, rev)
	t.Logf("host from scratch: %d bytes for 3 tables of %d slots", full, lb.DefaultTableSize)

	// Ten changes, each replacing one of the 100 backends of web; host2 sees every one,
	// host1 none (its long poll coalesced them, or it was paused).
	gen := sums[w].Generation
	var moved, bytesEach int
	for i := range 10 {
		backends = append(backends[1:], 100+i)
		rev = e.apply(t, web(backends...))
		res := e.step(t)
		s := e.k.Summaries()
		if s[w].Generation != uint64(rev) || s[w].Generation <= gen || res.Changed != 1 {
			t.Fatalf("change %d: table %s at generation %d (was %d), step %+v: want generation %d, one table built", i, w, s[w].Generation, gen, res, rev)
		}
		if db := lbtables.Name("db", 5432, lb.TCP); s[db] != sums[db] {
			t.Fatalf("change %d: untouched table %s changed", i, db)
		}
		gen = s[w].Generation
		moved += res.MovedSlots
		resp, n := fetch(t, e.agent2, "host2", h2, rev)
		if len(resp.Tables) != 1 || resp.Tables[w].Full {
			t.Fatalf("change %d: host2 got %d tables (full=%v), want one delta", i, len(resp.Tables), resp.Tables[w].Full)
		}
		bytesEach += n
	}
	resp, missed10 := fetch(t, e.agent, "host1", h1, rev)
	if len(resp.Tables) != 1 || resp.Tables[w].Full {
		t.Fatalf("host1 after 10 changes: %d tables, full=%v: want one delta", len(resp.Tables), resp.Tables[w].Full)
	}
	t.Logf("10 changes moved %d slots in all; host1 (missed 10) fetched %d bytes, host2 (every change) %d bytes; a whole table is %d bytes", moved, missed10, bytesEach, len(e.k.tables[w].rec.Table.Slots))
	// Proportional to the moved slots: a few bytes each, far below the whole table.
	if missed10 > 3*moved || missed10 >= len(e.k.tables[w].rec.Table.Slots) {
		t.Fatalf("host1 fetched %d bytes for %d moved slots (whole table %d)", missed10, moved, len(e.k.tables[w].rec.Table.Slots))
	}
	for n, cur := range e.k.Summaries() {
		for host, h := range map[string]*lbtables.Holder{"host1": h1, "host2": h2} {
			if got := lbtables.SummaryOf(h.Tables[n]); got != cur || h.Mismatch(n) {
				t.Errorf("%s: table %s is %+v, the controller's %+v", host, n, got, cur)
			}
		}
	}
	// A host whose copy is corrupt fails the hash and gets the whole table on the next fetch.
	h1.Tables[w].Slots[7] = h1.Tables[w].Slots[7]%20 + 1
	h1.Tables[w].Generation-- // it asks for a delta from a generation it believes it holds
	h1.Tables[w] = &lb.SharedTable{Generation: h1.Tables[w].Generation, Backends: h1.Tables[w].Backends, Slots: h1.Tables[w].Slots}
	resp2, err := e.agent.LBTables(context.Background(), "host1", h1.Request(rev))
	if err != nil {
		t.Fatal(err)
	}
	if errs := h1.Apply(resp2); len(errs) != 1 || h1.Tables[w] != nil {
		t.Fatalf("corrupt copy: errors %v, table kept=%v: want the hash to refuse it", errs, h1.Tables[w] != nil)
	}
	if _, n := fetch(t, e.agent, "host1", h1, rev); n == 0 || h1.Mismatch(w) {
		t.Fatalf("refetch after a hash failure: %d bytes, mismatch=%v", n, h1.Mismatch(w))
	}

	// Coalesced at the controller: three applies, one step: one generation, the same
	// guarantees (only the slots of changed backends move).
	before := e.k.tables[w]
	prev, err := before.decode()
	if err != nil {
		t.Fatal(err)
	}
	gone := map[string]bool{fmt.Sprintf("198.18.20.%d:0", 10+backends[0]): true, fmt.Sprintf("198.18.20.%d:0", 10+backends[1]): true}
	e.apply(t, web(append(backends, 200)...))
	e.apply(t, web(append(backends[1:], 200)...))
	rev = e.apply(t, web(append(backends[2:], 200, 201)...))
	if res := e.step(t); res.Revision != rev || res.Changed != 1 {
		t.Fatalf("coalesced step: %+v", res)
	}
	next, _ := e.k.tables[w].decode()
	for s := range next.Slots {
		if next.Slots[s] != prev.Slots[s] {
			from := prev.Backends[prev.Slots[s]-1].Key
			to := next.Backends[next.Slots[s]-1].Key
			if !gone[from] && to != "198.18.20.210:0" && to != "198.18.20.211:0" {
				t.Fatalf("coalesced change moved slot %d from %s, which stayed", s, from)
			}
		}
	}

	// Another controller on the same etcd loads the same tables and serves the same bytes.
	k2, err := New(e.st, lb.DefaultTableSize, apitest.Log)
	if err != nil {
		t.Fatal(err)
	}
	if err := k2.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	if k2.Revision() != rev || fmt.Sprint(k2.Summaries()) != fmt.Sprint(e.k.Summaries()) {
		t.Fatalf("second keeper: revision %d, %v; want %d, %v", k2.Revision(), k2.Summaries(), rev, e.k.Summaries())
	}
	if res, err := k2.Step(context.Background()); err != nil || res.Changed != 0 {
		t.Fatalf("second keeper with nothing new: %+v %v", res, err)
	}
	// A change computed by the second keeper; the first one, stale, finds it done.
	rev = e.apply(t, web(backends[3:]...))
	if res, err := k2.Step(context.Background()); err != nil || res.Changed != 1 {
		t.Fatalf("second keeper step: %+v %v", res, err)
	}
	if res := e.step(t); res.Changed != 0 {
		t.Fatalf("first keeper recomputed a table the second one wrote: %+v", res)
	}
	if fmt.Sprint(k2.Summaries()) != fmt.Sprint(e.k.Summaries()) || e.k.Revision() != rev {
		t.Fatalf("keepers disagree: %v / %v", k2.Summaries(), e.k.Summaries())
	}

	// A deleted service's tables go; a fetch waits for the revision its desired state has.
	rev = e.apply(t, configtest.LandsHealth+hosts+apitest.Doc("Service", "db", "{department: lands, vip: 198.19.0.11, mode: nat, ports: [{port: 5432}], backends: [{address: 198.18.20.230}]}"))
	done := make(chan *lbtables.FetchResponse, 1)
	go func() {
		r, err := e.agent.LBTables(context.Background(), "host1", h1.Request(rev))
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	time.Sleep(200 * time.Millisecond)
	if res := e.step(t); res.Deleted != 2 || res.Changed != 1 {
		t.Fatalf("after deleting web and a port of db: %+v", res)
	}
	r := <-done
	if r == nil || r.Revision != rev || len(r.Current) != 1 {
		t.Fatalf("waiting fetch: %+v, want revision %d and one table", r, rev)
	}

	// Agents read only their own host's tables; departments read no summaries.
	if _, err := e.agent2.LBTables(context.Background(), "host1", lbtables.FetchRequest{}); err == nil || !strings.Contains(err.Error(), "host1") {
		t.Fatalf("host2's agent fetching host1's tables: %v", err)
	}
	sum, err := e.admin.LBTableSummaries(context.Background())
	if err != nil || sum.Revision != rev || len(sum.Tables) != 1 {
		t.Fatalf("summaries: %+v %v", sum, err)
	}
}

// TestKeeperSameBackendsOneBuild: tables built afresh in one step for the same backends (web's
// port and db's two ports, here) are each what a build of that table alone gives, and one of
// them changing later leaves the others' generations.
func TestKeeperSameBackendsOneBuild(t *testing.T) {
	e := newEnv(t, 251)
	rev := e.apply(t, web(220, 221))
	if res := e.step(t); res.Changed != 3 {
		t.Fatalf("first step built %d tables, want 3", res.Changed)
	}
	snap, err := e.st.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want, errs := DesiredTables(snap.State, rev)
	if len(errs) > 0 || len(want) != 3 {
		t.Fatalf("desired tables %v %v", want, errs)
	}
	sums := e.k.Summaries()
	for name, bs := range want {
		alone, _, err := lb.NextShared(251, nil, bs, uint64(rev))
		if err != nil {
			t.Fatal(err)
		}
		if got := sums[name]; got.Sum != fmt.Sprintf("%x", alone.Sum()) || got.Generation != uint64(rev) {
			t.Errorf("%s: %+v, a build of it alone %x at %d", name, got, alone.Sum(), rev)
		}
	}
	if s := sums["web/80/tcp"]; s.Sum != sums["db/5432/tcp"].Sum || s.Sum != sums["db/5433/tcp"].Sum {
		t.Errorf("tables of the same backends differ: %+v", sums)
	}
	rev2 := e.apply(t, web(220, 221, 0))
	if res := e.step(t); res.Changed != 1 {
		t.Fatalf("second step built %d tables, want 1 (web)", res.Changed)
	}
	after := e.k.Summaries()
	if after["web/80/tcp"].Generation != uint64(rev2) || after["db/5432/tcp"] != sums["db/5432/tcp"] || after["db/5433/tcp"] != sums["db/5433/tcp"] {
		t.Errorf("after web changed: %+v (before %+v)", after, sums)
	}
}

// TestSmallerTxns: a transaction etcd refuses as too large (too many operations, too many
// bytes) makes the keeper's next ones smaller, down to a floor; other errors do not.
func TestSmallerTxns(t *testing.T) {
	for _, tc := range []struct {
		name      string
		err       error
		ops, size int
		retry     bool
		wantOps   int
		wantBytes int
	}{
		{"no error", nil, 1000, 500 << 10, false, 1024, 1 << 20},
		{"too many operations", rpctypes.ErrTooManyOps, 1000, 500 << 10, true, 250, 1 << 20},
		{"too many operations (gRPC form)", rpctypes.ErrGRPCTooManyOps, 129, 500 << 10, true, 32, 1 << 20},
		{"too many operations at the floor", rpctypes.ErrTooManyOps, 2, 100, false, 1024, 1 << 20},
		{"request too large", rpctypes.ErrRequestTooLarge, 1000, 1 << 20, true, 1024, 256 << 10},
		{"request too large at the floor", rpctypes.ErrGRPCRequestTooLarge, 10, 64 << 10, false, 1024, 1 << 20},
		{"another error", errors.New("context deadline exceeded"), 1000, 1 << 20, false, 1024, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := &Keeper{log: apitest.Log, txnOps: defaultTxnOps, txnBytes: defaultTxnBytes}
			if got := k.smallerTxns(tc.err, tc.ops, tc.size); got != tc.retry || k.txnOps != tc.wantOps || k.txnBytes != tc.wantBytes {
				t.Errorf("retry %v, ops %d, bytes %d; want %v, %d, %d", got, k.txnOps, k.txnBytes, tc.retry, tc.wantOps, tc.wantBytes)
			}
		})
	}
}
