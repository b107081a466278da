package controller

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/govcloud/govcloud/controlplane/backup"
	"github.com/govcloud/govcloud/controlplane/store"
	"github.com/govcloud/govcloud/internal/httpserve"
)

// BackupOptions configure the leader's scheduled backups (see package backup).
type BackupOptions struct {
	Dir      string        // where backups go (meant to be another site's mount); "" = none
	Interval time.Duration // between backups (default 1h)
	Keep     int           // newest backups kept in Dir; older ones are removed (0 = all kept)
}

// backupState is what the metrics report about scheduled backups.
type backupState struct {
	mu          sync.Mutex
	interval    time.Duration
	lastTime    time.Time // the last successful backup's manifest time (from Dir at start)
	lastBytes   int64
	lastRev     int64
	lastSeconds float64 // how long the last successful backup took
	failures    int64
}

func (b *backupState) ok(t time.Time, size, rev int64, took time.Duration) {
	b.mu.Lock()
	b.lastTime, b.lastBytes, b.lastRev, b.lastSeconds = t, size, rev, took.Seconds()
	b.mu.Unlock()
}

// seed takes the newest readable backup already in dir as the last success, so a new leader
// (or a restarted controller) does not report "never".
func (b *backupState) seed(dir string) {
	es, err := backup.List(dir)
	if err != nil {
		return
	}
	for i := len(es) - 1; i >= 0; i-- {
		if es[i].Err == nil {
			b.mu.Lock()
			if es[i].Manifest.Time.After(b.lastTime) {
				b.lastTime, b.lastBytes, b.lastRev = es[i].Manifest.Time, es[i].Size, es[i].Manifest.Revision
			}
			b.mu.Unlock()
			return
		}
	}
}

// backupLoop is the leader's scheduled backup: one at once (the first backup after an
// Interval since the newest in Dir), then every Interval, pruning to Keep.
func backupLoop(ctx context.Context, st *store.Store, opt BackupOptions, state *backupState, log *slog.Logger) {
	state.seed(opt.Dir)
	for {
		state.mu.Lock()
		next := time.Until(state.lastTime.Add(opt.Interval))
		state.mu.Unlock()
		if next > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(next):
			}
		}
		start := time.Now()
		bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		path, m, err := backup.Create(bctx, st.Client(), st.Prefix(), opt.Dir)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			state.mu.Lock()
			state.failures++
			state.mu.Unlock()
			log.Error("scheduled backup failed; retrying in a minute", "dir", opt.Dir, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Minute):
			}
			continue
		}
		es, _ := backup.List(opt.Dir)
		size := m.SnapshotBytes
		for _, e := range es {
			if e.Path == path {
				size = e.Size
			}
		}
		state.ok(m.Time, size, m.Revision, time.Since(start))
		log.Info("scheduled backup written", "file", path, "revision", m.Revision, "bytes", size, "took", time.Since(start).Round(time.Millisecond))
		if removed, err := backup.Prune(opt.Dir, opt.Keep); err != nil {
			log.Warn("prune old backups", "dir", opt.Dir, "err", err)
		} else if len(removed) > 0 {
			log.Info("pruned old backups", "removed", removed, "keep", opt.Keep)
		}
	}
}

// metricsHandler serves the controller's Prometheus metrics (text format 0.0.4): only the
// scheduled backups' state, nothing secret, so the listener needs no token.
func (b *backupState) metricsHandler(leader func() bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		b.mu.Lock()
		defer b.mu.Unlock()
		var last float64
		if !b.lastTime.IsZero() {
			last = float64(b.lastTime.UnixNano()) / 1e9
		}
		lead := 0
		if leader() {
			lead = 1
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		fmt.Fprintf(w, "# HELP govcloud_controller_leader 1 when this controller leads (and so takes the scheduled backups).\n# TYPE govcloud_controller_leader gauge\ngovcloud_controller_leader %d\n", lead)
		fmt.Fprintf(w, "# HELP govcloud_backup_interval_seconds Configured time between scheduled backups (0: none scheduled).\n# TYPE govcloud_backup_interval_seconds gauge\ngovcloud_backup_interval_seconds %g\n", b.interval.Seconds())
		fmt.Fprintf(w, "# HELP govcloud_backup_last_success_timestamp_seconds Unix time of the last successful backup in the backup directory (0: none).\n# TYPE govcloud_backup_last_success_timestamp_seconds gauge\ngovcloud_backup_last_success_timestamp_seconds %g\n", last)
		fmt.Fprintf(w, "# HELP govcloud_backup_last_size_bytes Size of the last successful backup file.\n# TYPE govcloud_backup_last_size_bytes gauge\ngovcloud_backup_last_size_bytes %d\n", b.lastBytes)
		fmt.Fprintf(w, "# HELP govcloud_backup_last_revision etcd revision held by the last successful backup.\n# TYPE govcloud_backup_last_revision gauge\ngovcloud_backup_last_revision %d\n", b.lastRev)
		fmt.Fprintf(w, "# HELP govcloud_backup_last_duration_seconds How long the last successful backup took.\n# TYPE govcloud_backup_last_duration_seconds gauge\ngovcloud_backup_last_duration_seconds %g\n", b.lastSeconds)
		fmt.Fprintf(w, "# HELP govcloud_backup_failures_total Scheduled backups that failed since this controller started.\n# TYPE govcloud_backup_failures_total counter\ngovcloud_backup_failures_total %d\n", b.failures)
	})
}

// serveMetrics serves /metrics on addr (plain HTTP) until ctx ends.
func serveMetrics(ctx context.Context, addr string, h http.Handler, log *slog.Logger) (net.Addr, error) {
	l, err := httpserve.Listen(addr, httpserve.Limits{PerClient: 16, Total: 64})
	if err != nil {
		return nil, fmt.Errorf("metrics listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	hs := httpserve.Server(mux, httpserve.Limits{PerClient: 16, Total: 64})
	go func() {
		<-ctx.Done()
		sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		defer c()
		_ = hs.Shutdown(sctx)
	}()
	go func() {
		if err := hs.Serve(l); err != nil && err != http.ErrServerClosed {
			log.Error("metrics listener", "addr", addr, "err", err)
		}
	}()
	return l.Addr(), nil
}
