// Package keeper is the controller's side of the shared Maglev tables (issue 19): it computes
// every load-balancer table after each change of the store, from the stored previous table and
// the new backend set (lb.NextShared), keeps them in etcd with their generation, and serves
// each host the tables it misses as deltas (POST /v1/hosts/{name}/lbtables) and their
// summaries to operators (GET /v1/lbtables).
//
// Keys under the store's prefix:
//
//	lbtables/state        {"revision": R}: the store revision the tables were computed at
//	lbtables/t/NAME       one table (record JSON), NAME as lbtables.Name
//
// Every write is a transaction guarded by the mod revision of lbtables/state and of each table
// it replaces, so controllers sharing one etcd may all run a Keeper: one computes a change, the
// others find it done. A table is a function of the sequence of backend sets the keepers fed
// it, never of a host's history.
package keeper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/govcloud/govcloud/controlplane/api"
	"github.com/govcloud/govcloud/controlplane/config"
	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/controlplane/lbtables"
	"github.com/govcloud/govcloud/controlplane/reconcile"
	"github.com/govcloud/govcloud/controlplane/store"
	"github.com/govcloud/govcloud/lb"
)

// record is one table as etcd holds it: the whole table as a full lb.Delta (its hash
// included) and the per-slot generations (lb.SharedTable.EncodeSlotGen).
type record struct {
	Table   lb.Delta `json:"table"`
	SlotGen []byte   `json:"slotGen"`
}

// entry is one table in memory: encoded (a decoded table with its slot generations is about
// 12 bytes a slot, 0.8 MB at 65537 slots), decoded only to compute a successor or a delta.
type entry struct {
	rec     record
	modRev  int64
	summary lbtables.Summary
	want    map[string]uint32 // backend key -> weight, the set the table was built for
	// last delta served, by the generation it applies to (most hosts ask for the same one)
	deltaSince uint64
	delta      *lb.Delta
}

func newEntry(rec record, modRev int64) (*entry, error) {
	e := &entry{rec: rec, modRev: modRev, want: map[string]uint32{}}
	e.summary = lbtables.Summary{Generation: rec.Table.Generation, Sum: fmt.Sprintf("%x", rec.Table.Sum)}
	for _, b := range rec.Table.Backends {
		if b.Key != "" {
			e.want[b.Key] = b.Weight
		}
	}
	return e, nil
}

// decode returns the table with its slot generations, after checking its hash.
func (e *entry) decode() (*lb.SharedTable, error) {
	t, err := e.rec.Table.Apply(nil)
	if err != nil {
		return nil, err
	}
	if err := t.DecodeSlotGen(e.rec.SlotGen); err != nil {
		return nil, err
	}
	return t, nil
}

// Keeper computes, stores and serves the tables. Safe for concurrent use.
type Keeper struct {
	st     *store.Store
	cli    *clientv3.Client
	log    *slog.Logger
	size   uint32
	prefix string

	stepMu sync.Mutex // one Step at a time
	// txnOps and txnBytes bound one transaction of Step's writes (smaller after etcd refused
	// one): a few large transactions instead of one per 64 tables, each of which waited
	// behind the other writes of a busy store.
	txnOps, txnBytes int

	mu          sync.Mutex
	tables      map[string]*entry
	rev         int64 // store revision covered
	stateModRev int64 // mod revision of lbtables/state (0: none yet)
	notify      chan struct{}
}

// New returns a keeper of tables of size slots (prime; 0: lb.DefaultTableSize) in st.
func New(st *store.Store, size uint32, log *slog.Logger) (*Keeper, error) {
	if size == 0 {
		size = lb.DefaultTableSize
	}
	if !lb.IsPrime(size) {
		return nil, fmt.Errorf("maglev table size %d is not prime", size)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Keeper{st: st, cli: st.Client(), log: log, size: size, prefix: st.Prefix() + "lbtables/",
		tables: map[string]*entry{}, notify: make(chan struct{}), txnOps: defaultTxnOps, txnBytes: defaultTxnBytes}, nil
}

func (k *Keeper) stateKey() string { return k.prefix + "state" }
func (k *Keeper) tableKey(name string) string {
	return k.prefix + "t/" + name
}

// Load reads every stored table (checking each one's hash) and the revision they cover.
func (k *Keeper) Load(ctx context.Context) error {
	r, err := k.cli.Get(ctx, k.prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("read maglev tables: %w", err)
	}
	tables := map[string]*entry{}
	var rev, stateModRev int64
	for _, kv := range r.Kvs {
		key := string(kv.Key)
		if key == k.stateKey() {
			var s struct{ Revision int64 }
			if err := json.Unmarshal(kv.Value, &s); err != nil {
				return fmt.Errorf("maglev tables state %q: %w", kv.Value, err)
			}
			rev, stateModRev = s.Revision, kv.ModRevision
			continue
		}
		name, ok := strings.CutPrefix(key, k.prefix+"t/")
		if !ok {
			continue
		}
		e, err := decodeEntry(kv.Value, kv.ModRevision)
		if err != nil {
			return fmt.Errorf("maglev table %q: %w", name, err)
		}
		tables[name] = e
	}
	k.mu.Lock()
	k.tables, k.rev, k.stateModRev = tables, rev, stateModRev
	k.wakeLocked()
	k.mu.Unlock()
	return nil
}

func decodeEntry(v []byte, modRev int64) (*entry, error) {
	var rec record
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, err
	}
	if !rec.Table.Full || rec.Table.Size == 0 {
		return nil, errors.New("not a whole table")
	}
	return newEntry(rec, modRev)
}

func (k *Keeper) wakeLocked() {
	close(k.notify)
	k.notify = make(chan struct{})
}

// Revision is the store revision the tables cover.
func (k *Keeper) Revision() int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.rev
}

// Summaries returns every table's summary by name.
func (k *Keeper) Summaries() map[string]lbtables.Summary {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make(map[string]lbtables.Summary, len(k.tables))
	for n, e := range k.tables {
		out[n] = e.summary
	}
	return out
}

// errStale: another keeper wrote first; reload and compute again.
var errStale = errors.New("maglev tables changed by another controller")

// StepResult says what one Step did.
type StepResult struct {
	Revision     int64 // store revision computed at (0: nothing to do)
	Changed      int   // tables built (new or changed)
	Deleted      int   // tables removed
	MovedSlots   int   // slots that changed owner, over all tables
	BytesWritten int   // etcd value bytes written
	// Built is how long reading the store and building the tables took, Stored how long
	// writing them did.
	Built, Stored time.Duration
}

// Step brings the tables up to the store's current state: each table whose backend set
// changed (or that is new) is built from the stored previous one, each table of a service or
// port that is gone is removed. Tables are written in transactions of at most about 1 MB,
// guarded as the package comment says; when another controller wrote first, Step reloads and
// computes again.
func (k *Keeper) Step(ctx context.Context) (StepResult, error) {
	k.stepMu.Lock()
	defer k.stepMu.Unlock()
	for try := 0; ; try++ {
		res, err := k.step(ctx)
		if !errors.Is(err, errStale) || try >= 3 {
			return res, err
		}
		if err := k.Load(ctx); err != nil {
			return res, err
		}
	}
}

func (k *Keeper) step(ctx context.Context) (StepResult, error) {
	began := time.Now()
	snap, err := k.st.Snapshot(ctx)
	if err != nil {
		return StepResult{}, err
	}
	k.mu.Lock()
	covered, stateModRev := k.rev, k.stateModRev
	cur := maps.Clone(k.tables)
	k.mu.Unlock()
	if snap.Revision <= covered {
		return StepResult{}, nil
	}
	want, errs := DesiredTables(snap.State, snap.Revision)
	if len(errs) > 0 {
		k.log.Debug("maglev tables: services left out", "revision", snap.Revision, "err", errors.Join(errs...))
	}
	res := StepResult{Revision: snap.Revision}
	gen := uint64(snap.Revision)
	type write struct {
		name string
		e    *entry // nil: delete
		val  []byte
	}
	var writes []write
	// A table built afresh depends only on its backends (and the generation): services with
	// the same backends (several ports of one VM) get one build and one encoding.
	type built struct {
		rec   record
		moved int
	}
	fresh := map[string]built{}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		bs := want[name]
		old := cur[name]
		if old != nil && sameSet(old.want, bs) {
			continue
		}
		var prev *lb.SharedTable
		if old != nil {
			if prev, err = old.decode(); err != nil {
				k.log.Warn("maglev table unreadable; building it from scratch", "table", name, "err", err)
				prev = nil
			}
			if prev != nil && prev.Generation >= gen {
				continue // written by a keeper that saw a newer revision
			}
		}
		var rec record
		var moved int
		freshKey := ""
		if prev == nil {
			freshKey = backendSetKey(bs)
		}
		if b, ok := fresh[freshKey]; ok && freshKey != "" {
			rec, moved = b.rec, b.moved
		} else {
			next, m, err := lb.NextShared(k.size, prev, bs, gen)
			if err != nil {
				k.log.Warn("maglev table not built", "table", name, "err", err)
				continue
			}
			rec, moved = record{Table: next.DeltaSince(0), SlotGen: next.EncodeSlotGen()}, m
			if freshKey != "" {
				fresh[freshKey] = built{rec, moved}
			}
		}
		val, err := json.Marshal(rec)
		if err != nil {
			return res, fmt.Errorf("encode maglev table %q: %w", name, err)
		}
		e, _ := newEntry(rec, 0)
		writes = append(writes, write{name, e, val})
		res.Changed++
		res.MovedSlots += moved
		res.BytesWritten += len(val)
	}
	for _, name := range slices.Sorted(maps.Keys(cur)) {
		if _, ok := want[name]; !ok {
			writes = append(writes, write{name: name})
			res.Deleted++
		}
	}
	stateVal, _ := json.Marshal(map[string]int64{"revision": snap.Revision})
	res.Built = time.Since(began)

	for len(writes) > 0 || stateVal != nil {
		maxOps, maxBytes := k.txnOps, k.txnBytes
		var ops []clientv3.Op
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(k.stateKey()), "=", stateModRev)}
		size, n := 0, 0
		for n < len(writes) && len(ops) < maxOps && (n == 0 || size+len(writes[n].val) <= maxBytes) {
			w := writes[n]
			var mr int64
			if old := cur[w.name]; old != nil {
				mr = old.modRev
			}
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k.tableKey(w.name)), "=", mr))
			if w.e == nil {
				ops = append(ops, clientv3.OpDelete(k.tableKey(w.name)))
			} else {
				ops = append(ops, clientv3.OpPut(k.tableKey(w.name), string(w.val)))
			}
			size += len(w.val)
			n++
		}
		last := n == len(writes)
		if last {
			ops = append(ops, clientv3.OpPut(k.stateKey(), string(stateVal)))
		}
		tr, err := k.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if smaller := k.smallerTxns(err, len(ops), size); smaller {
			continue // the same writes again, fewer at a time
		}
		if err != nil {
			return res, fmt.Errorf("store %d maglev tables at revision %d: %w", n, snap.Revision, err)
		}
		if !tr.Succeeded {
			return res, errStale
		}
		wrev := tr.Header.Revision
		k.mu.Lock()
		for _, w := range writes[:n] {
			if w.e == nil {
				delete(k.tables, w.name)
				continue
			}
			w.e.modRev = wrev
			k.tables[w.name] = w.e
		}
		if last {
			k.rev, k.stateModRev = snap.Revision, wrev
			k.wakeLocked()
		}
		k.mu.Unlock()
		writes = writes[n:]
		if last {
			stateVal = nil
		}
	}
	res.Stored = time.Since(began) - res.Built
	return res, nil
}

// The keeper's transactions at first: far below what an apply of the scale lab takes (the
// controller asks etcd for --max-txn-ops and --max-request-bytes large enough for an apply).
const (
	defaultTxnOps   = 1024
	defaultTxnBytes = 1 << 20
)

// smallerTxns makes the keeper's transactions smaller when etcd refused one of ops operations
// and size value bytes as too large (an etcd started with the default --max-txn-ops 128 or
// --max-request-bytes 1.5 MiB), and says whether it did.
func (k *Keeper) smallerTxns(err error, ops, size int) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, rpctypes.ErrTooManyOps) || errors.Is(err, rpctypes.ErrGRPCTooManyOps):
		if ops <= 2 {
			return false
		}
		k.txnOps = max(ops/4, 2)
	case errors.Is(err, rpctypes.ErrRequestTooLarge) || errors.Is(err, rpctypes.ErrGRPCRequestTooLarge):
		if size <= 64<<10 {
			return false
		}
		k.txnBytes = max(size/4, 64<<10)
	default:
		return false
	}
	k.log.Info("maglev tables: etcd refused a transaction as too large; writing fewer tables at a time", "ops", k.txnOps, "bytes", k.txnBytes, "err", err)
	return true
}

// sameSet reports whether bs is the set (keys and weights) a table was built for.
func sameSet(have map[string]uint32, bs []lb.Backend) bool {
	if len(have) != len(bs) {
		return false
	}
	for _, b := range bs {
		if w, ok := have[b.Key()]; !ok || w != b.Weight {
			return false
		}
	}
	return true
}

// DesiredTables is every table's backend set in the configuration st at store revision rev
// (lbtables.Desired of the services as every host receives them).
func DesiredTables(st *config.State, rev int64) (map[string][]lb.Backend, []error) {
	hosts := st.List(config.KindHost)
	if len(hosts) == 0 {
		return map[string][]lb.Backend{}, nil // no host balances anything
	}
	// Every host carries every service (reconcile): any host's desired services are all.
	var ds *desired.State = reconcile.ForHost(st, hosts[0].Metadata.Name, rev)
	return lbtables.Desired(ds)
}

// backendSetKey identifies a backend list (keys and weights, in order) for building a table
// afresh.
func backendSetKey(bs []lb.Backend) string {
	var b strings.Builder
	for _, x := range bs {
		fmt.Fprintf(&b, "%s/%d\x00", x.Key(), x.Weight)
	}
	return b.String()
}

// Fetch answers a host: it waits until the tables cover req.MinRevision (at most req.WaitMs,
// or ctx), then returns for every table whose generation differs from req.Have a delta from
// the host's generation, or the whole table when the host has none or the delta would not be
// smaller.
func (k *Keeper) Fetch(ctx context.Context, req lbtables.FetchRequest) (*lbtables.FetchResponse, error) {
	wait := time.Duration(req.WaitMs) * time.Millisecond
	if wait <= 0 {
		wait = 10 * time.Second
	}
	wait = min(wait, time.Minute)
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		k.mu.Lock()
		rev, ch := k.rev, k.notify
		k.mu.Unlock()
		if rev >= req.MinRevision {
			break
		}
		select {
		case <-ch:
			continue
		case <-deadline.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		break
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	resp := &lbtables.FetchResponse{Revision: k.rev, Size: k.size, Tables: map[string]lb.Delta{}, Current: map[string]lbtables.Summary{}}
	for name, e := range k.tables {
		resp.Current[name] = e.summary
		have := req.Have[name]
		if have == e.summary.Generation {
			continue
		}
		d, err := k.deltaLocked(e, have)
		if err != nil {
			return nil, fmt.Errorf("maglev table %q: %w", name, err)
		}
		resp.Tables[name] = d
	}
	return resp, nil
}

// deltaLocked is e's delta since generation have (0 or newer than e: the whole table).
func (k *Keeper) deltaLocked(e *entry, have uint64) (lb.Delta, error) {
	if have == 0 || have > e.summary.Generation {
		return e.rec.Table, nil
	}
	if e.delta != nil && e.deltaSince == have {
		return *e.delta, nil
	}
	t, err := e.decode()
	if err != nil {
		return lb.Delta{}, err
	}
	d := t.DeltaSince(have)
	if !d.Full && len(d.Slots) >= len(e.rec.Table.Slots) {
		d = e.rec.Table
	}
	e.delta, e.deltaSince = &d, have
	return d, nil
}

// Run steps after every change of the store and at least every 10 s, and follows other
// controllers' writes, until ctx ends.
func (k *Keeper) Run(ctx context.Context) {
	if err := k.Load(ctx); err != nil && ctx.Err() == nil {
		k.log.Warn("maglev tables: load", "err", err)
	}
	kick := make(chan struct{}, 1)
	go k.st.WatchState(ctx, func(int64) {
		select {
		case kick <- struct{}{}:
		default:
		}
	})
	go k.follow(ctx)
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		start := time.Now()
		if res, err := k.Step(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			k.log.Warn("maglev tables: step", "err", err)
		} else if res.Revision != 0 && (res.Changed > 0 || res.Deleted > 0) {
			k.log.Info("maglev tables computed", "revision", res.Revision, "changed", res.Changed, "deleted", res.Deleted,
				"movedSlots", res.MovedSlots, "bytes", res.BytesWritten, "took", time.Since(start), "built", res.Built, "stored", res.Stored)
		}
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-t.C:
		}
	}
}

// follow applies other controllers' table writes to the memory copy.
func (k *Keeper) follow(ctx context.Context) {
	for ctx.Err() == nil {
		for wr := range k.cli.Watch(clientv3.WithRequireLeader(ctx), k.prefix, clientv3.WithPrefix()) {
			k.mu.Lock()
			for _, ev := range wr.Events {
				key := string(ev.Kv.Key)
				if key == k.stateKey() {
					var s struct{ Revision int64 }
					if ev.Type == clientv3.EventTypePut && ev.Kv.ModRevision > k.stateModRev && json.Unmarshal(ev.Kv.Value, &s) == nil {
						k.rev, k.stateModRev = max(k.rev, s.Revision), ev.Kv.ModRevision
						k.wakeLocked()
					}
					continue
				}
				name, ok := strings.CutPrefix(key, k.prefix+"t/")
				if !ok {
					continue
				}
				if old := k.tables[name]; old != nil && old.modRev >= ev.Kv.ModRevision {
					continue // ours, or older
				}
				if ev.Type == clientv3.EventTypeDelete {
					delete(k.tables, name)
					continue
				}
				if e, err := decodeEntry(ev.Kv.Value, ev.Kv.ModRevision); err == nil {
					k.tables[name] = e
				}
			}
			k.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// Extension returns the controller extension (controller.Options.Extend) that runs a keeper
// of size-slot tables, logging to log (nil: the API server's logger), and serves:
//
//	POST /v1/hosts/{name}/lbtables   lbtables.FetchRequest -> lbtables.FetchResponse
//	                                 (the host's agent, admin)
//	GET  /v1/lbtables                name -> lbtables.Summary, with "revision" (any reader
//	                                 but a department)
func Extension(size uint32, log *slog.Logger) func(ctx context.Context, srv *api.Server, st *store.Store) error {
	return func(ctx context.Context, srv *api.Server, st *store.Store) error {
		if log == nil {
			log = srv.Logger()
		}
		k, err := New(st, size, log)
		if err != nil {
			return err
		}
		go k.Run(ctx)
		k.Routes(srv)
		return nil
	}
}

// MaxFetchRequest bounds a fetch request's body.
const MaxFetchRequest = 4 << 20

// Summaries is the answer of GET /v1/lbtables.
type Summaries struct {
	Revision int64                       `json:"revision"`
	Tables   map[string]lbtables.Summary `json:"tables"`
}

// Routes adds the keeper's routes to srv.
func (k *Keeper) Routes(srv *api.Server) {
	srv.Handle("POST /v1/hosts/{name}/lbtables", func(w http.ResponseWriter, r *http.Request, p api.Principal) error {
		host := r.PathValue("name")
		if p.Role != api.RoleAdmin && !(p.Role == api.RoleAgent && p.Host == host) {
			return &api.HTTPError{Status: http.StatusForbidden, Code: "forbidden", Message: fmt.Sprintf("role %q may not fetch the maglev tables of host %q", p.Role, host)}
		}
		var req lbtables.FetchRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxFetchRequest))
		if err := dec.Decode(&req); err != nil {
			return &api.HTTPError{Status: http.StatusBadRequest, Code: "bad_request", Message: fmt.Sprintf("maglev table fetch of host %q: %v", host, err)}
		}
		resp, err := k.Fetch(r.Context(), req)
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/json")
		return json.NewEncoder(w).Encode(resp)
	})
	srv.Handle("GET /v1/lbtables", func(w http.ResponseWriter, r *http.Request, p api.Principal) error {
		if p.Role == api.RoleDepartment {
			return &api.HTTPError{Status: http.StatusForbidden, Code: "forbidden", Message: "role department may not read the maglev tables"}
		}
		w.Header().Set("Content-Type", "application/json")
		return json.NewEncoder(w).Encode(Summaries{Revision: k.Revision(), Tables: k.Summaries()})
	})
}
