package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/api"
	"github.com/govcloud/govcloud/controlplane/apitest"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/store"
)

// haServer is an API server on its own prefix with the given options and its admin token.
func haServer(t *testing.T, prefix string, opt api.Options) (*httptest.Server, *store.Store, string) {
	t.Helper()
	st := apitest.Store(t).WithPrefix(prefix)
	srv := api.New(st, apitest.Log, opt)
	srv.Handle("GET /v1/slow", func(w http.ResponseWriter, r *http.Request, p api.Principal) error {
		// Sets headers all the while heartbeats go out (the map a 102 reads): a shared map
		// ended the process with "concurrent map read and map write".
		for start, i := time.Now(), 0; time.Since(start) < 1200*time.Millisecond; i++ {
			w.Header().Set("X-Slow", strconv.Itoa(i))
			if i%1000 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		w.Header().Set("X-Slow", "done")
		_, err := io.WriteString(w, "done")
		return err
	})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	tok, err := api.Bootstrap(context.Background(), st)
	if err != nil || tok == "" {
		t.Fatalf("bootstrap: %q %v", tok, err)
	}
	return hs, st, tok
}

// TestWritesNeedTheLease: with a Lease, writes commit only under it. No lease: 503 not_leader
// and nothing written; a guard whose key is gone (the lease ended in etcd): 503, nothing
// written; a guard whose key exists: committed.
func TestWritesNeedTheLease(t *testing.T) {
	ctx := context.Background()
	var guard atomic.Value // store.Guard; zero Key = no lease
	guard.Store(store.Guard{})
	hs, st, tok := haServer(t, "/test/lease/", api.Options{ID: "c1", Version: map[string]string{"commit": "abc123"}, Lease: func() (store.Guard, bool) {
		g := guard.Load().(store.Guard)
		return g, g.Key != ""
	}})
	c := client.New(hs.URL, tok)
	c.RetryFor = 500 * time.Millisecond
	fingerprint := func() int64 {
		snap, err := st.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return snap.Revision
	}
	before := fingerprint()
	for _, tc := range []struct {
		desc     string
		guard    store.Guard
		wantCode string // "" = success
	}{
		{"no lease", store.Guard{}, "not_leader"},
		{"lease key gone from etcd", store.Guard{Key: "/test/lease/leader/gone", CreateRev: 5}, "not_leader"},
	} {
		guard.Store(tc.guard)
		_, err := c.Apply(ctx, "base.yaml", []byte(apitest.Base), client.ApplyOptions{})
		var e *client.Error
		if !errors.As(err, &e) || e.Status != 503 || e.Code != tc.wantCode || !client.Retryable(err) {
			t.Errorf("%s: %v, want 503 %s", tc.desc, err, tc.wantCode)
		}
		if after := fingerprint(); after != before {
			t.Errorf("%s: state moved from revision %d to %d", tc.desc, before, after)
		}
	}
	// A held key: the write commits.
	r, err := st.Client().Put(ctx, "/test/lease/leader/held", "c1")
	if err != nil {
		t.Fatal(err)
	}
	guard.Store(store.Guard{Key: "/test/lease/leader/held", CreateRev: r.Header.Revision})
	if res, err := c.Apply(ctx, "base.yaml", []byte(apitest.Base), client.ApplyOptions{}); err != nil || res.Counts["create"] == 0 {
		t.Fatalf("apply under a held lease: %v %+v", err, res)
	}
	// /v1/status shows the build.
	if st, err := c.Status(ctx); err != nil || !strings.Contains(string(st.Version), `"commit": "abc123"`) {
		t.Errorf("status version: %v %s", err, st.Version)
	}
	// Plans need no lease.
	guard.Store(store.Guard{})
	if _, err := c.Apply(ctx, "base.yaml", []byte(apitest.Base), client.ApplyOptions{DryRun: true}); err != nil {
		t.Errorf("plan without the lease: %v", err)
	}
}

// TestReadiness: /healthz and /readyz answer 503 with the reason while Ready fails, 200 when it
// passes; /livez answers 200 throughout.
func TestReadiness(t *testing.T) {
	var reason atomic.Value
	reason.Store("")
	hs, _, _ := haServer(t, "/test/ready/", api.Options{ID: "c1",
		Leader: func() api.LeaderInfo { return api.LeaderInfo{Leader: "c2"} },
		Ready: func(context.Context) error {
			if r := reason.Load().(string); r != "" {
				return errors.New(r)
			}
			return nil
		}})
	get := func(path string) (int, api.Readiness) {
		resp, err := http.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var rd api.Readiness
		_ = json.NewDecoder(resp.Body).Decode(&rd)
		return resp.StatusCode, rd
	}
	for _, tc := range []struct {
		reason string
		want   int
	}{{"", 200}, {"etcd: no quorum", 503}, {"no controller leads", 503}, {"", 200}} {
		reason.Store(tc.reason)
		for _, p := range []string{"/healthz", "/readyz"} {
			code, rd := get(p)
			if code != tc.want || rd.Reason != tc.reason || rd.Ready != (tc.want == 200) || rd.Leader.Leader != "c2" {
				t.Errorf("%s with reason %q: %d %+v", p, tc.reason, code, rd)
			}
		}
		if code, _ := get("/livez"); code != 200 {
			t.Errorf("/livez with reason %q: %d", tc.reason, code)
		}
	}
}

// TestHeartbeat: a request asking for heartbeats gets "102 Processing" while the handler works;
// one that does not ask gets none. The handler sets headers all the while, and its last ones
// are in the answer.
func TestHeartbeat(t *testing.T) {
	hs, _, tok := haServer(t, "/test/heartbeat/", api.Options{})
	for _, ask := range []bool{true, false} {
		var beats atomic.Int64
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
				if code == http.StatusProcessing {
					beats.Add(1)
				}
				return nil
			}})
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, hs.URL+"/v1/slow", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if ask {
			req.Header.Set(client.HeartbeatHeader, "300ms")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "done" || resp.Header.Get("X-Slow") != "done" {
			t.Errorf("heartbeat %v: %d %q, X-Slow %q", ask, resp.StatusCode, b, resp.Header.Get("X-Slow"))
		}
		if n := beats.Load(); ask && n < 3 || !ask && n != 0 {
			t.Errorf("heartbeat asked %v: %d heartbeats over 1.2 s at 300 ms", ask, n)
		}
	}
}
