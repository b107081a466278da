// Package store keeps govcloud's objects, audit log, tokens and host status in etcd (embedded
// or external). Every change of objects is one etcd transaction guarded by the revision of a
// single state key, so two writers can never both commit against the same snapshot
// (optimistic concurrency); allocations live in the objects' status and commit with them.
package store

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/govcloud/govcloud/controlplane/config"
)

// Key layout under the store's prefix (default /govcloud/):
//
//	state             rewritten by every object change: the store's version
//	objects/KIND/NAME config.Object JSON (spec and status)
//	audit/NANOS       AuditEntry JSON
//	tokens/SHA256     Token JSON (the token itself is never stored)
//	hoststatus/HOST   last report of the host's agent
//	computestatus/HOST last report of the host's compute agent
//	console/VM        the end of the VM's serial console log (console.go)
//	leader            election prefix
const DefaultPrefix = "/govcloud/"

func (s *Store) keyState() string         { return s.prefix + "state" }
func (s *Store) keyObjects() string       { return s.prefix + "objects/" }
func (s *Store) keyAudit() string         { return s.prefix + "audit/" }
func (s *Store) keyTokens() string        { return s.prefix + "tokens/" }
func (s *Store) keyHostStatus() string    { return s.prefix + "hoststatus/" }
func (s *Store) keyComputeStatus() string { return s.prefix + "computestatus/" }

// ElectionPrefix is where controllers of this store campaign for leadership.
func (s *Store) ElectionPrefix() string { return s.prefix + "leader" }

// WithPrefix returns a store sharing the client but keeping its keys under prefix (tests keep
// their data apart in one etcd this way).
func (s *Store) WithPrefix(prefix string) *Store {
	return &Store{cli: s.cli, log: s.log, prefix: prefix}
}

// ErrStale means the state changed between the snapshot and the commit; recompute and retry.
var ErrStale = errors.New("state changed since the snapshot")

// ErrNotFound is returned for missing keys.
var ErrNotFound = errors.New("not found")

// Store is the etcd-backed store.
type Store struct {
	cli    *clientv3.Client
	log    *slog.Logger
	prefix string

	mu       sync.Mutex
	cache    *Snapshot
	reloadMu sync.Mutex
}

// OwnCallBound bounds the etcd calls the client makes with its own context (Connect).
const OwnCallBound = 2 * time.Second

// Connect opens a client to endpoints (http://, unix://; https:// needs ConnectTLS).
func Connect(endpoints []string, log *slog.Logger) (*Store, error) {
	return ConnectTLS(endpoints, nil, log)
}

// ConnectTLS opens a client to endpoints, with tc (nil: none) for https:// endpoints: the CA
// that signed etcd's server certificate and the client certificate etcd requires
// (see EtcdTLS).
func ConnectTLS(endpoints []string, tc *tls.Config, log *slog.Logger) (*Store, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		// Find a member that stopped answering (partitioned: no reset ever comes) within
		// about 13 s and route around it; etcd refuses pings more often than every 5 s.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		MaxCallSendMsgSize:   64 << 20,
		MaxCallRecvMsgSize:   256 << 20,
		TLS:                  tc,
		Logger:               nil,
		// Calls the etcd client makes with its own context (an election campaign cleaning up
		// after its context ended) are bounded too: an etcd that stopped answering must not
		// hold a controller's shutdown.
		Context: WithBounds(context.Background(), Bounds{Read: OwnCallBound, Write: OwnCallBound}),
	})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %s: %w", strings.Join(endpoints, ","), err)
	}
	cli.KV = newBoundedKV(cli.KV) // every call honours the Bounds of its context
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Get(ctx, DefaultPrefix+"state"); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(endpoints, ","), err)
	}
	return &Store{cli: cli, log: log, prefix: DefaultPrefix}, nil
}

// Client exposes the etcd client (leader election).
func (s *Store) Client() *clientv3.Client { return s.cli }

// Close closes the client.
func (s *Store) Close() error { return s.cli.Close() }

// Snapshot is a consistent view of every object at one state version.
type Snapshot struct {
	State     *config.State
	Revision  int64                // mod revision of the state key: changes with every object write (0 = empty store)
	ModRev    map[config.Key]int64 // per object
	raw       map[config.Key][]byte
	EtcdRev   int64
	Timestamp time.Time
}

// Raw returns the stored JSON of an object (nil if absent).
func (s *Snapshot) Raw(k config.Key) []byte { return s.raw[k] }

func (s *Store) objKey(k config.Key) string { return s.keyObjects() + k.Kind + "/" + k.Name }

// Snapshot returns the current objects, from cache when the state key has not moved. When it
// has, only objects changed since the cached snapshot are read and decoded.
func (s *Store) Snapshot(ctx context.Context) (*Snapshot, error) {
	r, err := s.cli.Get(ctx, s.keyState())
	if err != nil {
		return nil, fmt.Errorf("read state version: %w", err)
	}
	var rev int64
	if len(r.Kvs) > 0 {
		rev = r.Kvs[0].ModRevision
	}
	if c := s.cached(); c != nil && c.Revision >= rev {
		return c, nil
	}
	s.reloadMu.Lock() // one reload at a time; the others then find it cached
	defer s.reloadMu.Unlock()
	c := s.cached()
	if c != nil && c.Revision >= rev {
		return c, nil
	}
	snap, err := s.load(ctx, c)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.cache == nil || s.cache.Revision < snap.Revision {
		s.cache = snap
	}
	s.mu.Unlock()
	return snap, nil
}

func (s *Store) cached() *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cache
}

// load reads a consistent snapshot; with prev, it decodes only objects changed since prev.
func (s *Store) load(ctx context.Context, prev *Snapshot) (*Snapshot, error) {
	ops := []clientv3.Op{clientv3.OpGet(s.keyState())}
	if prev == nil {
		ops = append(ops, clientv3.OpGet(s.keyObjects(), clientv3.WithPrefix()))
	} else {
		ops = append(ops, clientv3.OpGet(s.keyObjects(), clientv3.WithPrefix(), clientv3.WithMinModRev(prev.EtcdRev+1)),
			clientv3.OpGet(s.keyObjects(), clientv3.WithPrefix(), clientv3.WithKeysOnly()))
	}
	tr, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("read objects: %w", err)
	}
	snap := &Snapshot{State: config.NewState(), ModRev: map[config.Key]int64{}, raw: map[config.Key][]byte{}, EtcdRev: tr.Header.Revision, Timestamp: time.Now()}
	if kvs := tr.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		snap.Revision = kvs[0].ModRevision
	}
	for _, kv := range tr.Responses[1].GetResponseRange().Kvs {
		var o config.Object
		if err := json.Unmarshal(kv.Value, &o); err != nil {
			return nil, fmt.Errorf("stored object %s: %w", kv.Key, err)
		}
		k := o.Key()
		snap.State.Objects[k] = &o
		snap.ModRev[k] = kv.ModRevision
		snap.raw[k] = kv.Value
	}
	if prev == nil {
		return snap, nil
	}
	// Unchanged objects come from prev; keys absent from the listing were deleted.
	for _, kv := range tr.Responses[2].GetResponseRange().Kvs {
		kind, name, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), s.keyObjects()), "/")
		if !ok {
			continue
		}
		k := config.Key{Kind: kind, Name: name}
		if _, changed := snap.State.Objects[k]; changed {
			continue
		}
		o := prev.State.Objects[k]
		if o == nil || prev.ModRev[k] != kv.ModRevision {
			return s.load(ctx, nil) // prev does not explain this key: read everything
		}
		snap.State.Objects[k], snap.ModRev[k], snap.raw[k] = o, kv.ModRevision, prev.raw[k]
	}
	return snap, nil
}

// AuditEntry records one write, done or refused. Every field is data (JSON), never text to be
// parsed: a name holding a newline cannot fake a second entry.
type AuditEntry struct {
	Time           time.Time      `json:"time"`
	Who            string         `json:"who"`
	Role           string         `json:"role"`
	TokenID        string         `json:"tokenId,omitempty"` // the credential's id (Token.ID)
	Remote         string         `json:"remote,omitempty"`  // the client's address, host:port
	Action         string         `json:"action"`            // apply | delete | token | revoke-token | status | compute-status | usage-report | ...
	Result         string         `json:"result,omitempty"`  // "" (done) | refused
	Error          string         `json:"error,omitempty"`   // why it was refused
	Changes        []AuditChange  `json:"changes,omitempty"`
	BeforeRevision int64          `json:"beforeRevision"`
	AfterRevision  int64          `json:"afterRevision"`
	Detail         map[string]any `json:"detail,omitempty"`
}

func (s *Store) auditPut(audit AuditEntry) clientv3.Op {
	if audit.Time.IsZero() {
		audit.Time = time.Now().UTC()
	}
	ab, _ := json.Marshal(audit)
	return clientv3.OpPut(fmt.Sprintf("%s%020d", s.keyAudit(), audit.Time.UnixNano()), string(ab))
}

// AppendAudit records an entry on its own (refused writes, usage reports).
func (s *Store) AppendAudit(ctx context.Context, audit AuditEntry) error {
	if _, err := s.cli.Txn(ctx).Then(s.auditPut(audit)).Commit(); err != nil {
		return fmt.Errorf("write audit entry %q of %q: %w", audit.Action, audit.Who, err)
	}
	return nil
}

// AuditChange is one object changed by a write.
type AuditChange struct {
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	Action string `json:"action"`
}

// Commit writes puts and deletes in one transaction that succeeds only if the state version is
// still snap.Revision (and ctx's Guard, if any, holds), together with the audit entry. It
// returns the new state revision, ErrStale or ErrNotLeader.
func (s *Store) Commit(ctx context.Context, snap *Snapshot, puts []*config.Object, deletes []config.Key, audit AuditEntry) (int64, error) {
	ops := make([]clientv3.Op, 0, len(puts)+len(deletes)+2)
	raws := make([][]byte, len(puts))
	for i, o := range puts {
		b, err := json.Marshal(o)
		if err != nil {
			return 0, fmt.Errorf("encode %s: %w", o.Key(), err)
		}
		raws[i] = b
		ops = append(ops, clientv3.OpPut(s.objKey(o.Key()), string(b)))
	}
	for _, k := range deletes {
		ops = append(ops, clientv3.OpDelete(s.objKey(k)))
	}
	audit.BeforeRevision = snap.Revision
	ops = append(ops, clientv3.OpPut(s.keyState(), fmt.Sprint(time.Now().UnixNano())), s.auditPut(audit))
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.keyState()), "=", snap.Revision)}
	var elseOps []clientv3.Op
	g, gcmp, gget, guarded := guardOf(ctx)
	if guarded {
		cmps, elseOps = append(cmps, gcmp), []clientv3.Op{gget}
	}
	tr, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Else(elseOps...).Commit()
	if err != nil {
		if strings.Contains(err.Error(), "too many operations") || strings.Contains(err.Error(), "request is too large") {
			return 0, fmt.Errorf("commit %d changes: etcd refused one transaction of %d operations (%w); start etcd with a larger --max-txn-ops / --max-request-bytes", len(ops)-2, len(ops), err)
		}
		return 0, fmt.Errorf("commit %d changes: %w", len(ops)-2, err)
	}
	if !tr.Succeeded {
		if guarded && guardFailed(g, tr) {
			return 0, ErrNotLeader
		}
		return 0, ErrStale
	}
	// Write-through: the next snapshot is this one plus the change, without re-reading etcd.
	rev := tr.Header.Revision
	next := &Snapshot{State: config.NewState(), Revision: rev, EtcdRev: rev, Timestamp: time.Now(),
		ModRev: make(map[config.Key]int64, len(snap.ModRev)+len(puts)), raw: make(map[config.Key][]byte, len(snap.raw)+len(puts))}
	for k, o := range snap.State.Objects {
		next.State.Objects[k], next.ModRev[k], next.raw[k] = o, snap.ModRev[k], snap.raw[k]
	}
	for i, o := range puts {
		k := o.Key()
		c := *o
		c.Source = nil
		next.State.Objects[k], next.ModRev[k], next.raw[k] = &c, rev, raws[i]
	}
	for _, k := range deletes {
		delete(next.State.Objects, k)
		delete(next.ModRev, k)
		delete(next.raw, k)
	}
	s.mu.Lock()
	if s.cache == nil || s.cache.Revision < rev {
		s.cache = next
	}
	s.mu.Unlock()
	return rev, nil
}

// Audit returns up to limit entries, newest first.
func (s *Store) Audit(ctx context.Context, limit int64) ([]AuditEntry, error) {
	r, err := s.cli.Get(ctx, s.keyAudit(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	out := make([]AuditEntry, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		var e AuditEntry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return nil, fmt.Errorf("audit entry %s: %w", kv.Key, err)
		}
		e.AfterRevision = kv.ModRevision
		out = append(out, e)
	}
	return out, nil
}

// Token is a bearer token's grant; the token itself is never stored, only its hash.
type Token struct {
	ID         string     `json:"id"` // TokenID of the hash: unique, safe to show and log
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	Department string     `json:"department,omitempty"`
	Host       string     `json:"host,omitempty"`
	Created    time.Time  `json:"created"`
	Expires    *time.Time `json:"expires,omitempty"` // nil: never
}

// TokenID is a token's id: "tok_" and the first 16 hex digits of its SHA-256 (the hash it is
// stored under), so grants made before ids existed have one too.
func TokenID(hash string) string {
	if len(hash) > 16 {
		hash = hash[:16]
	}
	return "tok_" + hash
}

// Expired says whether the grant has expired at now.
func (t *Token) Expired(now time.Time) bool { return t.Expires != nil && !now.Before(*t.Expires) }

// ErrLastAdmin refuses a revocation that would leave no admin token that is still valid.
var ErrLastAdmin = errors.New("would revoke the last valid admin token (create another admin token first)")

// PutToken stores a grant under the token's hash, with its audit entry.
func (s *Store) PutToken(ctx context.Context, hash string, t Token, audit AuditEntry) error {
	t.ID = TokenID(hash)
	b, _ := json.Marshal(t)
	_, err := s.cli.Txn(ctx).Then(clientv3.OpPut(s.keyTokens()+hash, string(b)), s.auditPut(audit)).Commit()
	if err != nil {
		return fmt.Errorf("store token %q: %w", t.Name, err)
	}
	return nil
}

// PutTokenIfNone stores a grant only when no token exists at all (first start). It reports
// whether it stored it.
func (s *Store) PutTokenIfNone(ctx context.Context, hash string, t Token) (bool, error) {
	t.ID = TokenID(hash)
	b, _ := json.Marshal(t)
	// The bootstrap marker key guards against two controllers both creating an admin token.
	marker := s.keyTokens()[:len(s.keyTokens())-1] + "-bootstrapped"
	tr, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(marker), "=", 0)).
		Then(clientv3.OpPut(marker, t.Name), clientv3.OpPut(s.keyTokens()+hash, string(b))).Commit()
	if err != nil {
		return false, fmt.Errorf("store bootstrap token: %w", err)
	}
	return tr.Succeeded, nil
}

// GetToken returns the grant for a token hash.
func (s *Store) GetToken(ctx context.Context, hash string) (*Token, error) {
	r, err := s.cli.Get(ctx, s.keyTokens()+hash)
	if err != nil {
		return nil, fmt.Errorf("read token: %w", err)
	}
	if len(r.Kvs) == 0 {
		return nil, ErrNotFound
	}
	var t Token
	if err := json.Unmarshal(r.Kvs[0].Value, &t); err != nil {
		return nil, fmt.Errorf("stored token: %w", err)
	}
	t.ID = TokenID(hash)
	return &t, nil
}

// Tokens lists every grant (never the tokens themselves).
func (s *Store) Tokens(ctx context.Context) ([]Token, error) {
	r, err := s.cli.Get(ctx, s.keyTokens(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read tokens: %w", err)
	}
	out := make([]Token, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		var t Token
		if err := json.Unmarshal(kv.Value, &t); err != nil {
			return nil, fmt.Errorf("stored token %s: %w", kv.Key, err)
		}
		t.ID = TokenID(strings.TrimPrefix(string(kv.Key), s.keyTokens()))
		out = append(out, t)
	}
	return out, nil
}

// RevokeToken deletes every grant named name, with an audit entry; it returns how many. It
// refuses (ErrLastAdmin) when no valid admin grant would be left.
func (s *Store) RevokeToken(ctx context.Context, name string, audit AuditEntry) (int, error) {
	return s.revoke(ctx, fmt.Sprintf("token %q", name), func(_ string, t Token) bool { return t.Name == name }, audit)
}

// RevokeTokenID deletes the grant with id (Token.ID), with an audit entry; it returns how many
// (0 or 1). It refuses (ErrLastAdmin) when no valid admin grant would be left.
func (s *Store) RevokeTokenID(ctx context.Context, id string, audit AuditEntry) (int, error) {
	return s.revoke(ctx, fmt.Sprintf("token id %q", id), func(hash string, _ Token) bool { return TokenID(hash) == id }, audit)
}

func (s *Store) revoke(ctx context.Context, what string, match func(hash string, t Token) bool, audit AuditEntry) (int, error) {
	r, err := s.cli.Get(ctx, s.keyTokens(), clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("read tokens: %w", err)
	}
	var ops []clientv3.Op
	var cmps []clientv3.Cmp
	admins := 0
	now := time.Now()
	for _, kv := range r.Kvs {
		var t Token
		if json.Unmarshal(kv.Value, &t) != nil {
			continue
		}
		// Every grant read is compared: a concurrent revoke or create makes this one retry,
		// so two revocations can never together remove the last admin.
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision))
		if match(strings.TrimPrefix(string(kv.Key), s.keyTokens()), t) {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		} else if t.Role == "admin" && !t.Expired(now) {
			admins++
		}
	}
	if len(ops) == 0 {
		return 0, nil
	}
	if admins == 0 {
		return 0, fmt.Errorf("revoke %s: %w", what, ErrLastAdmin)
	}
	ops = append(ops, s.auditPut(audit))
	tr, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return 0, fmt.Errorf("revoke %s: %w", what, err)
	}
	if !tr.Succeeded {
		return 0, fmt.Errorf("revoke %s: %w", what, ErrStale)
	}
	return len(ops) - 1, nil
}

// PutHostStatus stores what the network agent reports about its host, with its audit entry.
func (s *Store) PutHostStatus(ctx context.Context, host string, status json.RawMessage, audit AuditEntry) error {
	return s.putStatus(ctx, s.keyHostStatus(), "status", host, status, audit)
}

// PutComputeStatus stores what the compute agent reports about its host (kept apart from the
// network agent's report, which it would otherwise replace), with its audit entry.
func (s *Store) PutComputeStatus(ctx context.Context, host string, status json.RawMessage, audit AuditEntry) error {
	return s.putStatus(ctx, s.keyComputeStatus(), "compute status", host, status, audit)
}

func (s *Store) putStatus(ctx context.Context, prefix, what, host string, status json.RawMessage, audit AuditEntry) error {
	v, _ := json.Marshal(map[string]any{"host": host, "time": time.Now().UTC(), "status": status})
	if _, err := s.cli.Txn(ctx).Then(clientv3.OpPut(prefix+host, string(v)), s.auditPut(audit)).Commit(); err != nil {
		return fmt.Errorf("store %s of host %q: %w", what, host, err)
	}
	return nil
}

// HostStatus returns every host's last network agent report, by host name.
func (s *Store) HostStatus(ctx context.Context) (map[string]json.RawMessage, error) {
	return s.statuses(ctx, s.keyHostStatus(), "host status")
}

// ComputeStatus returns every host's last compute agent report, by host name.
func (s *Store) ComputeStatus(ctx context.Context) (map[string]json.RawMessage, error) {
	return s.statuses(ctx, s.keyComputeStatus(), "compute status")
}

func (s *Store) statuses(ctx context.Context, prefix, what string) (map[string]json.RawMessage, error) {
	r, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	out := map[string]json.RawMessage{}
	for _, kv := range r.Kvs {
		out[strings.TrimPrefix(string(kv.Key), prefix)] = json.RawMessage(kv.Value)
	}
	return out, nil
}

// WatchState calls fn with the new state revision after every object change, until ctx ends.
func (s *Store) WatchState(ctx context.Context, fn func(rev int64)) {
	for ctx.Err() == nil {
		wc := s.cli.Watch(clientv3.WithRequireLeader(ctx), s.keyState())
		for wr := range wc {
			for _, ev := range wr.Events {
				fn(ev.Kv.ModRevision)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// Prefix is where this store keeps its keys.
func (s *Store) Prefix() string { return s.prefix }
