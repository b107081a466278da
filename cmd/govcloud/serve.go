package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/govcloud/govcloud/internal/httpserve"
)

// statusServer is what both daemons serve on --metrics-listen: GET /status (JSON),
// GET /healthz and GET /metrics (Prometheus), bounded by httpserve.
type statusServer struct {
	srv *http.Server
	lns []net.Listener
}

// serveStatus listens on each comma-separated address of listen and serves status and metrics
// (either may be nil). Close stops it.
func serveStatus(listen string, status, metrics http.Handler) (*statusServer, error) {
	mux := http.NewServeMux()
	if status != nil {
		mux.Handle("GET /status", status)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	lim := httpserve.Limits{PerClient: 16, Total: 256}
	s := &statusServer{srv: httpserve.Server(mux, lim)}
	for _, addr := range strings.Split(listen, ",") {
		ln, err := httpserve.Listen(strings.TrimSpace(addr), lim)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("--metrics-listen %s: %w", addr, err)
		}
		s.lns = append(s.lns, ln)
	}
	for _, ln := range s.lns {
		go func() { _ = s.srv.Serve(ln) }()
	}
	return s, nil
}

// Close stops serving, letting requests in flight finish for up to 2s.
func (s *statusServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	for _, ln := range s.lns {
		ln.Close()
	}
}
