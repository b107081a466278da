package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/govcloud/govcloud/controlplane/api"
	"github.com/govcloud/govcloud/controlplane/apitest"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/store"
)

// stallKV stops answering while stalled is set: every call waits for its context, as a
// controller cut off from etcd (packets dropped, member paused) sees it.
type stallKV struct {
	clientv3.KV
	stalled *atomic.Bool
}

func (k stallKV) wait(ctx context.Context) error {
	if !k.stalled.Load() {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

func (k stallKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if err := k.wait(ctx); err != nil {
		return nil, err
	}
	return k.KV.Get(ctx, key, opts...)
}

func (k stallKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	if err := k.wait(ctx); err != nil {
		return nil, err
	}
	return k.KV.Put(ctx, key, val, opts...)
}

func (k stallKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	if err := k.wait(ctx); err != nil {
		return nil, err
	}
	return k.KV.Delete(ctx, key, opts...)
}

func (k stallKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	if err := k.wait(ctx); err != nil {
		return clientv3.OpResponse{}, err
	}
	return k.KV.Do(ctx, op)
}

func (k stallKV) Txn(ctx context.Context) clientv3.Txn {
	return stallTxn{Txn: k.KV.Txn(ctx), ctx: ctx, k: k}
}

type stallTxn struct {
	clientv3.Txn
	ctx context.Context
	k   stallKV
}

func (t stallTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { t.Txn = t.Txn.If(cs...); return t }
func (t stallTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Then(ops...); return t }
func (t stallTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(ops...); return t }
func (t stallTxn) Commit() (*clientv3.TxnResponse, error) {
	if err := t.k.wait(t.ctx); err != nil {
		return nil, err
	}
	return t.Txn.Commit()
}

// TestEtcdSilentAnswers503: while etcd does not answer, every request that needs it — a token
// not in the cache, reads, a long poll, an apply, a delete — answers 503 within the read bound
// saying etcd did not answer and nothing was done (the client then tries another controller),
// instead of holding the request (with heartbeats) until the connection is cut. Nothing was
// changed, and the same requests succeed once etcd answers again.
func TestEtcdSilentAnswers503(t *testing.T) {
	const bound = 300 * time.Millisecond
	apitest.Store(t) // starts the shared etcd
	own, err := store.Connect([]string{apitest.Endpoint()}, apitest.Log)
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	var stalled atomic.Bool
	if !store.Intercept(own.Client(), func(kv clientv3.KV) clientv3.KV { return stallKV{KV: kv, stalled: &stalled} }) {
		t.Fatal("store.Intercept: the client made by store.Connect has no bounded KV")
	}
	st := own.WithPrefix("/test/etcd-silent/")
	srv := api.New(st, apitest.Log, api.Options{ID: "c1", EtcdReadTimeout: bound})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Run(ctx)
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	admin, err := api.Bootstrap(ctx, st)
	if err != nil || admin == "" {
		t.Fatalf("bootstrap: %q %v", admin, err)
	}
	c := client.New(hs.URL, admin)
	if _, err := c.Apply(ctx, "base.yaml", []byte(apitest.Base), client.ApplyOptions{}); err != nil {
		t.Fatalf("apply base: %v", err)
	}
	fresh, err := c.CreateToken(ctx, client.TokenRequest{Name: "fresh", Role: api.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := st.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rev := snap.Revision
	seg := apitest.Doc("Segment", "lands-db", "{department: lands, ipv4: 198.18.21.0/24}")
	rows := []struct {
		desc, method, path, token, body string
	}{
		{"token not cached", "GET", "/v1/objects", fresh, ""},
		{"list", "GET", "/v1/objects", admin, ""},
		{"get", "GET", "/v1/objects/segments/lands-web", admin, ""},
		{"status", "GET", "/v1/status", admin, ""},
		{"audit", "GET", "/v1/audit", admin, ""},
		{"long poll", "GET", "/v1/hosts/host1/desired?timeout=30s&after=" + strconv.FormatInt(rev, 10), admin, ""},
		{"apply", "POST", "/v1/apply", admin, seg},
		{"plan", "POST", "/v1/plan", admin, seg},
		{"delete", "DELETE", "/v1/objects/services/health-www", admin, ""},
	}
	do := func(method, path, token, body string) (*http.Response, []byte, error) {
		req, _ := http.NewRequest(method, hs.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set(client.HeartbeatHeader, "250ms")
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}
	// The admin token is in the cache (2 s) from a request just before etcd goes silent.
	if resp, b, err := do("GET", "/v1/whoami", admin, ""); err != nil || resp.StatusCode != 200 {
		t.Fatalf("whoami: %v %s", err, b)
	}
	stalled.Store(true)
	t.Run("silent", func(t *testing.T) {
		for _, row := range rows {
			t.Run(row.desc, func(t *testing.T) {
				t.Parallel()
				t0 := time.Now()
				resp, b, err := do(row.method, row.path, row.token, row.body)
				took := time.Since(t0)
				if err != nil {
					t.Fatalf("%s %s while etcd is silent: %v after %s, want 503 within %s", row.method, row.path, err, took, bound)
				}
				var e struct{ Code, Error string }
				_ = json.Unmarshal(b, &e)
				if resp.StatusCode != http.StatusServiceUnavailable || e.Code != "etcd_timeout" ||
					!strings.Contains(e.Error, "etcd did not answer within 300ms") || !strings.Contains(e.Error, "nothing was done") {
					t.Fatalf("%s %s while etcd is silent: %d %s, want 503 etcd_timeout naming the 300ms and that nothing was done", row.method, row.path, resp.StatusCode, b)
				}
				if took > bound+time.Second {
					t.Fatalf("%s %s: 503 after %s, want within %s", row.method, row.path, took, bound)
				}
			})
		}
	})
	stalled.Store(false)
	after, err := st.Snapshot(ctx)
	if err != nil || after.Revision != rev {
		t.Fatalf("state revision %d (%v) after the refused writes, want %d: something was done", after.Revision, err, rev)
	}
	for _, row := range rows {
		if row.path == rows[5].path {
			continue // a long poll with nothing new waits its 30 s
		}
		if resp, b, err := do(row.method, row.path, row.token, row.body); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s %s once etcd answers: %v %s", row.method, row.path, err, b)
		}
	}
}
