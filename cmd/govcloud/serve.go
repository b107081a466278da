package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
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

// checkListen checks a comma-separated list of listen addresses (host:port; the host may be
// empty for every address, the port a number up to 65535) before anything listens, naming
// flag and the bad entry.
func checkListen(flag, list string) error {
	for _, addr := range strings.Split(list, ",") {
		addr = strings.TrimSpace(addr)
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return fmt.Errorf("%s %q: want host:port (%v)", flag, addr, err)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return fmt.Errorf("%s %q: port %q is not a number from 0 to 65535", flag, addr, port)
		}
	}
	return nil
}
