package client

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeCtl is a fake controller: answers with status and body, optionally after delay,
// sending heartbeats (102) meanwhile when beat is set.
type fakeCtl struct {
	status int
	delay  time.Duration
	beat   bool
	hits   atomic.Int64
	srv    *httptest.Server
}

func newFake(t *testing.T, status int, delay time.Duration, beat bool) *fakeCtl {
	f := &fakeCtl{status: status, delay: delay, beat: beat}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.hits.Add(1)
		if r.Header.Get(HeartbeatHeader) == "" {
			t.Errorf("request without %s", HeartbeatHeader)
		}
		end := time.After(f.delay)
		tick := time.NewTicker(HeartbeatInterval)
		defer tick.Stop()
	wait:
		for {
			select {
			case <-end:
				break wait
			case <-r.Context().Done():
				return
			case <-tick.C:
				if f.beat {
					w.WriteHeader(http.StatusProcessing)
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.status)
		_, _ = io.WriteString(w, `{"id":"`+r.Host+`","revision":7,"code":"x","error":"status `+http.StatusText(f.status)+`"}`)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// deadURL is a URL nothing listens on (connection refused).
func deadURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + l.Addr().String()
	l.Close()
	return u
}

// silentURL accepts connections and never answers (a paused process: the kernel completes
// the handshake, nobody reads).
func silentURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return "http://" + l.Addr().String()
}

// TestFailover: each row lists controllers in order; the request must end at the one named
// want (index), within the time bound, with the status given.
func TestFailover(t *testing.T) {
	for _, tc := range []struct {
		desc     string
		ctls     []string
		want     int // index of the controller that answers; -1: error
		status   int
		within   time.Duration
		retryFor time.Duration
	}{
		{"first answers", []string{"ok", "ok"}, 0, 200, time.Second, 0},
		{"refused connection moves on", []string{"dead", "ok"}, 1, 200, time.Second, 0},
		{"paused controller (silent) is left within the idle timeout", []string{"silent", "ok"}, 1, 200, 2500 * time.Millisecond, 0},
		{"503 moves on", []string{"503", "ok"}, 1, 200, time.Second, 0},
		{"slow but heartbeating controller is waited for", []string{"slow-beat", "ok"}, 0, 200, 5 * time.Second, 0},
		{"slow controller without heartbeats is left", []string{"slow-quiet", "ok"}, 1, 200, 2500 * time.Millisecond, 0},
		{"500 is final (not retried elsewhere)", []string{"500", "ok"}, 0, 500, time.Second, 0},
		{"all 503: the last 503 after RetryFor", []string{"503", "503"}, 0, 503, 3 * time.Second, 1500 * time.Millisecond},
		{"all dead: an error naming each after RetryFor", []string{"dead", "dead"}, -1, 0, 3 * time.Second, time.Second},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var urls []string
			fakes := make([]*fakeCtl, len(tc.ctls))
			for i, k := range tc.ctls {
				switch k {
				case "ok":
					fakes[i] = newFake(t, 200, 0, false)
				case "503":
					fakes[i] = newFake(t, 503, 0, false)
				case "500":
					fakes[i] = newFake(t, 500, 0, false)
				case "slow-beat":
					fakes[i] = newFake(t, 200, 3*time.Second, true)
				case "slow-quiet":
					fakes[i] = newFake(t, 200, 3*time.Second, false)
				}
				switch k {
				case "dead":
					urls = append(urls, deadURL(t))
				case "silent":
					urls = append(urls, silentURL(t))
				default:
					urls = append(urls, fakes[i].srv.URL)
				}
			}
			c := New(strings.Join(urls, ","), "tok")
			c.RetryFor = tc.retryFor
			t0 := time.Now()
			st, err := c.Status(context.Background())
			took := time.Since(t0)
			if took > tc.within {
				t.Errorf("took %v, want within %v", took, tc.within)
			}
			if tc.want < 0 {
				if err == nil {
					t.Fatalf("no error, answer %+v", st)
				}
				for _, u := range urls {
					if !strings.Contains(err.Error(), u) {
						t.Errorf("error does not name %s: %v", u, err)
					}
				}
				return
			}
			var e *Error
			switch {
			case tc.status == 200 && err != nil:
				t.Fatalf("error %v", err)
			case tc.status != 200 && (!errors.As(err, &e) || e.Status != tc.status):
				t.Fatalf("error %v, want HTTP %d", err, tc.status)
			}
			if tc.status == 200 && st.Revision != 7 {
				t.Errorf("answer %+v", st)
			}
			if got := c.Base; got != urls[tc.want] {
				t.Errorf("answered by %s, want %s (%d)", got, urls[tc.want], tc.want)
			}
			if tc.status == 503 && !Retryable(err) {
				t.Errorf("503 not Retryable: %v", err)
			}
		})
	}
}

// TestFailoverSticks: after a failover the next request goes straight to the controller that
// answered, not back to the dead one first.
func TestFailoverSticks(t *testing.T) {
	ok := newFake(t, 200, 0, false)
	c := New(silentURL(t)+","+ok.srv.URL, "")
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 500*time.Millisecond {
		t.Errorf("second request took %v: it tried the silent controller again", d)
	}
	if ok.hits.Load() != 2 {
		t.Errorf("working controller saw %d requests, want 2", ok.hits.Load())
	}
}

// TestFailoverHTTP: requests built elsewhere (the usage reporters) fail over too, carrying
// the client's token and not the one they set.
func TestFailoverHTTP(t *testing.T) {
	var auth atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth.Store(r.Header.Get("Authorization") + " " + r.Method + " " + r.URL.RequestURI())
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	}))
	defer srv.Close()
	c := New(deadURL(t)+","+srv.URL, "good")
	req, _ := http.NewRequest(http.MethodPost, "http://ignored.invalid/v1/usage/report?x=1", strings.NewReader("payload"))
	req.Header.Set("Authorization", "Bearer other")
	resp, err := c.FailoverHTTP().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "payload" || auth.Load() != "Bearer good POST /v1/usage/report?x=1" {
		t.Errorf("body %q, request %q", b, auth.Load())
	}
}

// TestRepointWhileRetrying: a request retrying against controllers that are gone (the drill's
// lost controller) moves to the URLs a Repoint gives, at its next attempt, instead of
// retrying the old ones for the rest of its RetryFor. Also through FailoverHTTP (the usage
// reporters).
func TestRepointWhileRetrying(t *testing.T) {
	for _, tc := range []struct {
		name string
		old  func(t *testing.T) string
	}{
		{"connection refused", deadURL},
		{"answers 503 (no leader)", func(t *testing.T) string { return newFake(t, http.StatusServiceUnavailable, 0, false).srv.URL }},
		{"silent (paused)", silentURL},
		{"two refused", func(t *testing.T) string { return deadURL(t) + "," + deadURL(t) }},
	} {
		for _, via := range []string{"client", "FailoverHTTP"} {
			t.Run(tc.name+"/"+via, func(t *testing.T) {
				ok := newFake(t, 200, 0, false)
				c := New(tc.old(t), "tok")
				c.RetryFor = 20 * time.Second
				done := make(chan error, 1)
				t0 := time.Now()
				go func() {
					if via == "client" {
						_, err := c.Status(context.Background())
						done <- err
						return
					}
					req, _ := http.NewRequest(http.MethodGet, "http://ignored.invalid/v1/status", nil)
					resp, err := c.FailoverHTTP().Do(req)
					if err == nil {
						resp.Body.Close()
						if resp.StatusCode != 200 {
							err = errors.New(resp.Status)
						}
					}
					done <- err
				}()
				time.Sleep(1500 * time.Millisecond) // retrying by now
				c.Repoint(ok.srv.URL)
				select {
				case err := <-done:
					if err != nil {
						t.Fatalf("after the repoint: %v", err)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("still retrying the old controllers %v after the repoint", time.Since(t0))
				}
				if ok.hits.Load() != 1 {
					t.Errorf("the new controller saw %d requests, want 1", ok.hits.Load())
				}
				if got := c.CurrentBase(); got != ok.srv.URL {
					t.Errorf("CurrentBase %q, want %q", got, ok.srv.URL)
				}
			})
		}
	}
}
