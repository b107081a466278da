package metering

import (
	"context"
	"fmt"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Versioned is a stored value and the revision it was last written at (0: absent).
type Versioned struct {
	Value []byte
	Rev   int64
}

// KV is the ledger's storage: reads with revisions, and an all-or-nothing commit that fails
// with ErrConflict when any compared key's revision moved (0 compares "absent").
type KV interface {
	Get(ctx context.Context, key string) (Versioned, error)
	List(ctx context.Context, prefix string) (map[string][]byte, error)
	Commit(ctx context.Context, conds map[string]int64, puts map[string][]byte) error
}

// MemKV is an in-memory KV (tests and a controller without a store).
type MemKV struct {
	mu   sync.Mutex
	rev  int64
	data map[string]Versioned
}

// NewMemKV returns an empty MemKV.
func NewMemKV() *MemKV { return &MemKV{data: map[string]Versioned{}} }

// Get implements KV.
func (m *MemKV) Get(_ context.Context, key string) (Versioned, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.data[key], nil
}

// List implements KV.
func (m *MemKV) List(_ context.Context, prefix string) (map[string][]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string][]byte{}
	for k, v := range m.data {
		if strings.HasPrefix(k, prefix) {
			out[k] = v.Value
		}
	}
	return out, nil
}

// Commit implements KV.
func (m *MemKV) Commit(_ context.Context, conds map[string]int64, puts map[string][]byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, rev := range conds {
		if m.data[k].Rev != rev {
			return ErrConflict
		}
	}
	m.rev++
	for k, v := range puts {
		m.data[k] = Versioned{Value: append([]byte(nil), v...), Rev: m.rev}
	}
	return nil
}

// EtcdKV stores the ledger in etcd; commits are transactions comparing mod revisions.
type EtcdKV struct{ C *clientv3.Client }

// Get implements KV.
func (e EtcdKV) Get(ctx context.Context, key string) (Versioned, error) {
	r, err := e.C.Get(ctx, key)
	if err != nil {
		return Versioned{}, fmt.Errorf("etcd get %s: %w", key, err)
	}
	if len(r.Kvs) == 0 {
		return Versioned{}, nil
	}
	return Versioned{Value: r.Kvs[0].Value, Rev: r.Kvs[0].ModRevision}, nil
}

// List implements KV.
func (e EtcdKV) List(ctx context.Context, prefix string) (map[string][]byte, error) {
	r, err := e.C.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("etcd list %s: %w", prefix, err)
	}
	out := make(map[string][]byte, len(r.Kvs))
	for _, kv := range r.Kvs {
		out[string(kv.Key)] = kv.Value
	}
	return out, nil
}

// Commit implements KV.
func (e EtcdKV) Commit(ctx context.Context, conds map[string]int64, puts map[string][]byte) error {
	var cmps []clientv3.Cmp
	for k, rev := range conds {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", rev))
	}
	var ops []clientv3.Op
	for k, v := range puts {
		ops = append(ops, clientv3.OpPut(k, string(v)))
	}
	r, err := e.C.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("etcd commit of %d keys: %w", len(puts), err)
	}
	if !r.Succeeded {
		return ErrConflict
	}
	return nil
}
