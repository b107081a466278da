package api

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Readiness is the JSON of /healthz and /readyz: 200 when ready, 503 (with the reason) when
// this controller cannot serve writes — no etcd quorum, or no leader elected. /livez answers
// 200 "ok" while the process serves HTTP at all.
type Readiness struct {
	Ready  bool       `json:"ready"`
	ID     string     `json:"id,omitempty"`
	Leader LeaderInfo `json:"leader"`
	Reason string     `json:"reason,omitempty"`
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	out := Readiness{Ready: true, ID: s.opt.ID, Leader: LeaderInfo{IsLeader: true, Leader: s.opt.ID}}
	if s.opt.Leader != nil {
		out.Leader = s.opt.Leader()
	}
	if s.opt.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		err := s.opt.Ready(ctx)
		cancel()
		if err != nil {
			out.Ready, out.Reason = false, err.Error()
		}
	}
	if !out.Ready {
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, out)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// etcdUnavailable says whether err is etcd telling that it cannot serve now (no leader, no
// quorum, stopping, timeout).
func etcdUnavailable(err error) bool {
	if errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, rpctypes.ErrGRPCNoLeader) || errors.Is(err, rpctypes.ErrTimeout) ||
		errors.Is(err, rpctypes.ErrGRPCTimeout) || errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail) || errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost) {
		return true
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		switch se.GRPCStatus().Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
			return true
		}
	}
	return false
}

// heartbeatHeader is client.HeartbeatHeader (the client package is not imported here).
const heartbeatHeader = "X-Govcloud-Heartbeat"

// heartbeat sends "102 Processing" every interval the request asks for (header
// X-Govcloud-Heartbeat, a duration of 100ms to 10s) until the handler writes its answer, so a
// client can tell a controller that is working from one that is paused or cut off.
func heartbeat(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.Header.Get(heartbeatHeader))
		if err != nil || d < 100*time.Millisecond || d > 10*time.Second || r.ProtoMajor != 1 {
			next.ServeHTTP(w, r)
			return
		}
		hw := newBeatWriter(w)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(d)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-r.Context().Done():
					return
				case <-t.C:
					hw.beat()
				}
			}
		}()
		defer func() { close(stop); wg.Wait() }()
		next.ServeHTTP(hw, r)
	})
}

// beatWriter serializes the heartbeat with the handler's writes; after the handler's header
// no more heartbeats go out. The handler sets headers on a map of its own (Header), copied to
// the connection's when its answer starts: a 102 writes the connection's header map, and the
// handler setting a header at that moment was a concurrent map read and write, which the Go
// runtime answers by ending the process (a controller lost mid-apply).
type beatWriter struct {
	http.ResponseWriter
	header  http.Header // the handler's headers until its answer starts
	mu      sync.Mutex
	written bool
}

func newBeatWriter(w http.ResponseWriter) *beatWriter {
	return &beatWriter{ResponseWriter: w, header: w.Header().Clone()}
}

// Header is the handler's own header map; only the handler's goroutine touches it.
func (b *beatWriter) Header() http.Header { return b.header }

func (b *beatWriter) beat() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.written {
		b.ResponseWriter.WriteHeader(http.StatusProcessing)
	}
}

// start copies the handler's headers to the connection's, once, before its answer; mu held.
func (b *beatWriter) start() {
	if b.written {
		return
	}
	b.written = true
	h := b.ResponseWriter.Header()
	clear(h)
	for k, v := range b.header {
		h[k] = v
	}
}

func (b *beatWriter) WriteHeader(code int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if code >= 200 {
		b.start()
	}
	b.ResponseWriter.WriteHeader(code)
}

func (b *beatWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.start()
	return b.ResponseWriter.Write(p)
}

// Flush passes flushes through (streamed backups).
func (b *beatWriter) Flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if f, ok := b.ResponseWriter.(http.Flusher); ok {
		b.start()
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection (deadlines of long writes).
func (b *beatWriter) Unwrap() http.ResponseWriter { return b.ResponseWriter }
