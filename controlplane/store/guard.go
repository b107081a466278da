package store

import (
	"context"
	"errors"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Guard is a condition a commit made under its context must meet: Key (a controller's
// leader-election key, attached to its lease) still exists with create revision CreateRev.
// When the lease ends (the leader was paused, partitioned or stopped for longer than its
// TTL) etcd deletes the key, so no commit of that leader can land afterwards.
type Guard struct {
	Key       string
	CreateRev int64
}

type guardCtxKey struct{}

// WithGuard returns ctx carrying g: Commit under it succeeds only while g holds.
func WithGuard(ctx context.Context, g Guard) context.Context {
	return context.WithValue(ctx, guardCtxKey{}, g)
}

// ErrNotLeader is Commit's refusal when the context's Guard no longer holds; nothing was
// written.
var ErrNotLeader = errors.New("leadership lease ended before the commit; nothing was written")

// guardOf returns the comparison and the read that explains a failed transaction, if ctx
// carries a Guard.
func guardOf(ctx context.Context) (Guard, clientv3.Cmp, clientv3.Op, bool) {
	g, ok := ctx.Value(guardCtxKey{}).(Guard)
	if !ok || g.Key == "" {
		return Guard{}, clientv3.Cmp{}, clientv3.Op{}, false
	}
	return g, clientv3.Compare(clientv3.CreateRevision(g.Key), "=", g.CreateRev), clientv3.OpGet(g.Key), true
}

// guardFailed says whether a failed transaction's Else read (of the guard key) shows the
// guard broken.
func guardFailed(g Guard, tr *clientv3.TxnResponse) bool {
	if len(tr.Responses) == 0 {
		return false
	}
	kvs := tr.Responses[0].GetResponseRange().Kvs
	return len(kvs) == 0 || kvs[0].CreateRevision != g.CreateRev
}
