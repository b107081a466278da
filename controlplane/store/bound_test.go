package store

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// silentKV is an etcd that never answers: every call waits for its context.
type silentKV struct{ clientv3.KV }

func (silentKV) Get(ctx context.Context, _ string, _ ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (silentKV) Put(ctx context.Context, _, _ string, _ ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (silentKV) Delete(ctx context.Context, _ string, _ ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (silentKV) Do(ctx context.Context, _ clientv3.Op) (clientv3.OpResponse, error) {
	<-ctx.Done()
	return clientv3.OpResponse{}, ctx.Err()
}

func (silentKV) Txn(ctx context.Context) clientv3.Txn { return silentTxn{ctx} }

type silentTxn struct{ ctx context.Context }

func (t silentTxn) If(...clientv3.Cmp) clientv3.Txn  { return t }
func (t silentTxn) Then(...clientv3.Op) clientv3.Txn { return t }
func (t silentTxn) Else(...clientv3.Op) clientv3.Txn { return t }
func (t silentTxn) Commit() (*clientv3.TxnResponse, error) {
	<-t.ctx.Done()
	return nil, t.ctx.Err()
}

// TestBoundsCutSilentEtcd: every kind of call to an etcd that does not answer ends at the bound
// of its kind (a transaction of reads only is a read) with a TimeoutError saying whether it
// wrote; without Bounds on the context, or with an earlier deadline of the caller's own, the
// bound does not apply.
func TestBoundsCutSilentEtcd(t *testing.T) {
	const read, write = 60 * time.Millisecond, 240 * time.Millisecond
	kv := newBoundedKV(silentKV{})
	get := clientv3.OpGet("k")
	put := clientv3.OpPut("k", "v")
	call := map[string]func(ctx context.Context) error{
		"get":    func(ctx context.Context) error { _, err := kv.Get(ctx, "k"); return err },
		"put":    func(ctx context.Context) error { _, err := kv.Put(ctx, "k", "v"); return err },
		"delete": func(ctx context.Context) error { _, err := kv.Delete(ctx, "k"); return err },
		"do get": func(ctx context.Context) error { _, err := kv.Do(ctx, get); return err },
		"do put": func(ctx context.Context) error { _, err := kv.Do(ctx, put); return err },
		"txn of reads": func(ctx context.Context) error {
			_, err := kv.Txn(ctx).Then(get, get).Commit()
			return err
		},
		"txn with a put in else": func(ctx context.Context) error {
			_, err := kv.Txn(ctx).If(clientv3.Compare(clientv3.Version("k"), "=", 0)).Then(get).Else(put).Commit()
			return err
		},
		"txn holding a txn that deletes": func(ctx context.Context) error {
			_, err := kv.Txn(ctx).Then(clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpDelete("k")}, nil)).Commit()
			return err
		},
	}
	for _, tc := range []struct {
		call  string
		write bool
	}{
		{"get", false}, {"do get", false}, {"txn of reads", false},
		{"put", true}, {"delete", true}, {"do put", true}, {"txn with a put in else", true}, {"txn holding a txn that deletes", true},
	} {
		t.Run(tc.call, func(t *testing.T) {
			t.Parallel()
			want := read
			if tc.write {
				want = write
			}
			ctx := WithBounds(context.Background(), Bounds{Read: read, Write: write})
			t0 := time.Now()
			err := call[tc.call](ctx)
			took := time.Since(t0)
			var te *TimeoutError
			if !errors.As(err, &te) || !errors.Is(err, ErrEtcdTimeout) || te.Write != tc.write || te.After != want {
				t.Fatalf("%s: err %v (%#v), want a TimeoutError{Write: %v, After: %s}", tc.call, err, te, tc.write, want)
			}
			if took < want || took > want+time.Second {
				t.Fatalf("%s: ended after %s, want %s", tc.call, took, want)
			}
			// The caller's earlier deadline wins and is its own error, not a bound's.
			dctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
			defer cancel()
			if err := call[tc.call](dctx); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrEtcdTimeout) {
				t.Fatalf("%s under the caller's 10ms deadline: %v, want its context.DeadlineExceeded", tc.call, err)
			}
		})
	}
	// No Bounds: the call waits for its caller.
	ctx, cancel := context.WithTimeout(context.Background(), write+200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	if _, err := kv.Get(ctx, "k"); errors.Is(err, ErrEtcdTimeout) || time.Since(t0) < write+200*time.Millisecond {
		t.Fatalf("get without Bounds: %v after %s, want the caller's deadline after %s", err, time.Since(t0), write+200*time.Millisecond)
	}
}
