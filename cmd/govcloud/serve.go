package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
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

// lateHandler serves what set gives it, and 503 "starting" until then: the listeners are
// bound before the handlers exist.
type lateHandler struct{ h atomic.Pointer[http.Handler] }

func (l *lateHandler) set(h http.Handler) { l.h.Store(&h) }

func (l *lateHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := l.h.Load(); h != nil && *h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	http.Error(w, "starting", http.StatusServiceUnavailable)
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

// checkListen checks a comma-separated list of listen addresses before anything listens:
// each host:port, the host an IP address, "localhost" or empty (every address), the port a
// number up to 65535, no entry twice. It names flag and every bad entry.
func checkListen(flag, list string) error {
	var errs []error
	seen := map[string]bool{}
	for _, addr := range strings.Split(list, ",") {
		addr = strings.TrimSpace(addr)
		host, port, err := net.SplitHostPort(addr)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s %q: want host:port (%v)", flag, addr, err))
			continue
		case host != "" && host != "localhost" && !isIP(host):
			errs = append(errs, fmt.Errorf("%s %q: host %q is not an IP address (or localhost, or empty for every address)", flag, addr, host))
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: port %q is not a number from 0 to 65535", flag, addr, port))
		}
		if seen[addr] {
			errs = append(errs, fmt.Errorf("%s %q: given twice", flag, addr))
		}
		seen[addr] = true
	}
	return errors.Join(errs...)
}

func isIP(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Zone() == ""
}

// unjoin returns the errors errors.Join made err of, or err alone.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
