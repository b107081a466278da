package store

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Bounds limit each etcd call made with a context that carries them (WithBounds): a call that
// only reads waits at most Read, one that writes at most Write. An API request's context
// carries them, so every etcd call made while serving it is bounded — the store's own, an
// extension's through Client(), each poll of a long poll — while the request itself may wait
// longer. An etcd that went silent (the controller cut off from it, its member paused) then
// fails the request with ErrEtcdTimeout instead of holding it until the connection is cut.
type Bounds struct {
	Read, Write time.Duration
}

type boundsCtxKey struct{}

// WithBounds returns ctx whose etcd calls (through a client made by Connect) are bounded by b.
// A zero duration leaves that kind of call unbounded.
func WithBounds(ctx context.Context, b Bounds) context.Context {
	return context.WithValue(ctx, boundsCtxKey{}, b)
}

// ErrEtcdTimeout is the error of an etcd call that did not finish within its Bounds.
var ErrEtcdTimeout = errors.New("etcd did not answer in time")

// TimeoutError is an etcd call cut by its Bounds; errors.Is(err, ErrEtcdTimeout).
type TimeoutError struct {
	Write bool          // the call writes: etcd may have applied it
	After time.Duration // the bound
	Err   error
}

func (e *TimeoutError) Error() string {
	if e.Write {
		return fmt.Sprintf("etcd did not confirm the write within %s (unreachable or no quorum): %v", e.After, e.Err)
	}
	return fmt.Sprintf("etcd did not answer within %s (unreachable or no quorum): %v", e.After, e.Err)
}

func (e *TimeoutError) Unwrap() []error { return []error{ErrEtcdTimeout, e.Err} }

// boundedKV applies the Bounds of each call's context. It replaces the KV of every client
// Connect makes; inner can be swapped by tests (Intercept).
type boundedKV struct {
	inner atomic.Pointer[kvBox]
}

type kvBox struct{ kv clientv3.KV }

func newBoundedKV(kv clientv3.KV) *boundedKV {
	b := &boundedKV{}
	b.inner.Store(&kvBox{kv})
	return b
}

func (b *boundedKV) kv() clientv3.KV { return b.inner.Load().kv }

// Intercept puts wrap's KV under the per-call bounds of cli, a client made by Connect (tests:
// an etcd that stops answering). It returns false for other clients.
func Intercept(cli *clientv3.Client, wrap func(clientv3.KV) clientv3.KV) bool {
	b, ok := cli.KV.(*boundedKV)
	if !ok {
		return false
	}
	b.inner.Store(&kvBox{wrap(b.kv())})
	return true
}

// bound returns ctx limited by its Bounds for a call that writes or only reads.
func bound(ctx context.Context, write bool) (context.Context, time.Duration, context.CancelFunc) {
	b, ok := ctx.Value(boundsCtxKey{}).(Bounds)
	d := b.Read
	if write {
		d = b.Write
	}
	if !ok || d <= 0 {
		return ctx, 0, func() {}
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
		return ctx, 0, func() {} // the caller's own deadline comes first
	}
	c, cancel := context.WithTimeout(ctx, d)
	return c, d, cancel
}

// timedOut says whether err is the bound d of bctx firing (not the caller's ctx ending).
func timedOut(ctx, bctx context.Context, d time.Duration, write bool, err error) error {
	if err == nil || d == 0 || ctx.Err() != nil || bctx.Err() == nil {
		return err
	}
	return &TimeoutError{Write: write, After: d, Err: err}
}

func (b *boundedKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	bctx, d, cancel := bound(ctx, true)
	defer cancel()
	r, err := b.kv().Put(bctx, key, val, opts...)
	return r, timedOut(ctx, bctx, d, true, err)
}

func (b *boundedKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	bctx, d, cancel := bound(ctx, false)
	defer cancel()
	r, err := b.kv().Get(bctx, key, opts...)
	return r, timedOut(ctx, bctx, d, false, err)
}

// GetStream is not bounded: the stream lasts as long as its caller reads it.
func (b *boundedKV) GetStream(ctx context.Context, key string, opts ...clientv3.OpOption) (clientv3.GetStreamChan, error) {
	return b.kv().GetStream(ctx, key, opts...)
}

func (b *boundedKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	bctx, d, cancel := bound(ctx, true)
	defer cancel()
	r, err := b.kv().Delete(bctx, key, opts...)
	return r, timedOut(ctx, bctx, d, true, err)
}

func (b *boundedKV) Compact(ctx context.Context, rev int64, opts ...clientv3.CompactOption) (*clientv3.CompactResponse, error) {
	bctx, d, cancel := bound(ctx, true)
	defer cancel()
	r, err := b.kv().Compact(bctx, rev, opts...)
	return r, timedOut(ctx, bctx, d, true, err)
}

func (b *boundedKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	w := writes(op)
	bctx, d, cancel := bound(ctx, w)
	defer cancel()
	r, err := b.kv().Do(bctx, op)
	return r, timedOut(ctx, bctx, d, w, err)
}

func (b *boundedKV) Txn(ctx context.Context) clientv3.Txn {
	return &boundedTxn{kv: b.kv(), ctx: ctx}
}

// writes says whether op changes anything (a put, a delete, or a transaction holding one).
func writes(op clientv3.Op) bool {
	if op.IsPut() || op.IsDelete() {
		return true
	}
	if op.IsTxn() {
		_, then, els := op.Txn()
		for _, o := range append(then, els...) {
			if writes(o) {
				return true
			}
		}
	}
	return false
}

// boundedTxn collects a transaction and sends it at Commit under the bound of its kind: a
// transaction of reads only (a snapshot) is a read.
type boundedTxn struct {
	kv        clientv3.KV
	ctx       context.Context
	cmps      []clientv3.Cmp
	then, els []clientv3.Op
}

func (t *boundedTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.cmps = append(t.cmps, cs...)
	return t
}

func (t *boundedTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.then = append(t.then, ops...)
	return t
}

func (t *boundedTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.els = append(t.els, ops...)
	return t
}

func (t *boundedTxn) Commit() (*clientv3.TxnResponse, error) {
	w := writes(clientv3.OpTxn(nil, t.then, t.els))
	bctx, d, cancel := bound(t.ctx, w)
	defer cancel()
	r, err := t.kv.Txn(bctx).If(t.cmps...).Then(t.then...).Else(t.els...).Commit()
	return r, timedOut(t.ctx, bctx, d, w, err)
}
