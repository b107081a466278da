// Package controller wires the control plane together: the store (embedded etcd under the data
// directory, or an external cluster), the first admin token, leader election among controllers
// sharing one etcd, the leader's allocation sweep, and the HTTP API.
package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/govcloud/govcloud/controlplane/alloc"
	"github.com/govcloud/govcloud/controlplane/api"
	"github.com/govcloud/govcloud/controlplane/store"
	"github.com/govcloud/govcloud/internal/httpserve"
)

// Options configure a controller.
type Options struct {
	DataDir       string
	Listen        string   // e.g. 127.0.0.1:8480
	EtcdEndpoints []string // empty: embedded etcd under DataDir
	Alloc         alloc.Config
	AnonymousRead bool
	ElectionTTL   time.Duration
	ID            string
	Out           io.Writer // where the first admin token is announced
	NoFsync       bool      // embedded etcd without fsync (tests)
	Ready         func(addr string)
	TLS           TLSOptions  // HTTPS (default) or --insecure-http
	EtcdTLS       *tls.Config // client TLS for EtcdEndpoints (https://)
	// Limits bound the API's connections and requests (zero: DefaultLimits).
	Limits httpserve.Limits
	// Backup schedules backups from the leader (Backup.Dir "" = none).
	Backup BackupOptions
	// MetricsListen serves Prometheus metrics (plain HTTP, no token: nothing secret) at
	// ADDR:PORT/metrics; "" = none.
	MetricsListen string
	// Extend runs before the API serves: other parts of the controller (the usage ledger) add
	// routes with srv.Handle and keep their data in st (st.Client(), under their own keys).
	Extend []func(ctx context.Context, srv *api.Server, st *store.Store) error
	// AdvertiseURL is the URL other controllers forward writes to (https://HOST:PORT). Default:
	// the listen address; a wildcard listen address (0.0.0.0, ::) with external etcd needs it.
	AdvertiseURL string
	// Compaction: every this long the leader compacts an external etcd's history to the
	// revision of one interval before (the embedded etcd compacts itself); 0: DefaultCompaction,
	// negative: never.
	Compaction time.Duration
	// Audit retention, applied by the leader every RetentionInterval: entries older than
	// AuditMaxAge and the oldest beyond AuditMaxEntries are deleted (0: DefaultAuditMaxAge,
	// DefaultAuditMaxEntries; negative: no limit).
	AuditMaxAge       time.Duration
	AuditMaxEntries   int64
	RetentionInterval time.Duration
	// Version is this build, shown on /v1/status.
	Version any
}

// Defaults of Options.
const (
	DefaultCompaction        = 5 * time.Minute
	DefaultAuditMaxAge       = 90 * 24 * time.Hour
	DefaultAuditMaxEntries   = 200000
	DefaultRetentionInterval = 10 * time.Minute
)

// DefaultLimits are the API's bounds: timeouts on every phase of a request (writes outlast the
// agents' 25 s long-poll), 256 connections per client address and 4096 in all.
var DefaultLimits = httpserve.Limits{PerClient: 256, Total: 4096}

// TokenFile is where the first admin token is written, under the data directory.
const TokenFile = "admin-token"

// Run serves until ctx ends.
func Run(ctx context.Context, log *slog.Logger, opt Options) error {
	if os.Getenv("GOGC") == "" {
		// The heap is small (the whole state is a few MB) and applies allocate in bursts;
		// collecting less often keeps read latency flat during applies.
		debug.SetGCPercent(400)
	}
	if opt.ElectionTTL <= 0 {
		opt.ElectionTTL = 5 * time.Second
	}
	if opt.Out == nil {
		opt.Out = os.Stdout
	}
	if err := os.MkdirAll(opt.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir %s: %w", opt.DataDir, err)
	}
	endpoints := opt.EtcdEndpoints
	if len(endpoints) == 0 {
		e, err := store.StartEmbedded(opt.DataDir, log, store.EmbeddedOptions{NoFsync: opt.NoFsync})
		if err != nil {
			return err
		}
		defer e.Close()
		endpoints = []string{e.Endpoint}
	}
	st, err := store.ConnectTLS(endpoints, opt.EtcdTLS, log)
	if err != nil {
		return err
	}
	defer st.Close()

	tok, err := api.Bootstrap(ctx, st)
	if err != nil {
		return err
	}
	tf := filepath.Join(opt.DataDir, TokenFile)
	if tok != "" {
		if err := os.WriteFile(tf, []byte(tok+"\n"), 0o600); err != nil {
			return fmt.Errorf("write admin token: %w", err)
		}
		// The token goes to the 0600 file only: output ends up in logs and terminals.
		fmt.Fprintf(opt.Out, "admin token: written to %s (0600)\n", tf)
	} else if _, err := os.Stat(tf); err == nil {
		fmt.Fprintf(opt.Out, "admin token: see %s\n", tf)
	} else {
		fmt.Fprintln(opt.Out, "admin token: created earlier by another controller of this etcd")
	}

	lim := opt.Limits
	if lim == (httpserve.Limits{}) {
		lim = DefaultLimits
	}
	l, err := httpserve.Listen(opt.Listen, lim)
	if err != nil {
		return fmt.Errorf("listen %s: %w", opt.Listen, err)
	}
	if opt.ID == "" {
		h, _ := os.Hostname()
		opt.ID = h + "/" + l.Addr().String()
	}
	scheme := "https://"
	if opt.TLS.InsecureHTTP {
		scheme = "http://"
	}
	adv, err := AdvertiseURL(opt.AdvertiseURL, scheme, l.Addr().String(), len(opt.EtcdEndpoints) > 0)
	if err != nil {
		l.Close()
		return err
	}
	var tr *trust
	if opt.TLS.InsecureHTTP {
		log.Warn("serving the API over PLAIN HTTP (--insecure-http): bearer tokens cross the network in clear, hosts cannot join", "listen", l.Addr().String())
	} else {
		if u, err := url.Parse(adv); err == nil && !slices.Contains(opt.TLS.SANs, u.Hostname()) {
			opt.TLS.SANs = append(slices.Clone(opt.TLS.SANs), u.Hostname()) // forwarding verifies it
		}
		if tr, err = setupTrust(ctx, log, st, opt.DataDir, l.Addr().String(), opt.TLS); err != nil {
			l.Close()
			return err
		}
	}
	el := &election{cli: st.Client(), id: opt.ID, ttl: opt.ElectionTTL, log: log, prefix: st.ElectionPrefix(),
		urls: st.Prefix() + "controllers/", url: adv}
	aopt := api.Options{Alloc: opt.Alloc, AnonymousRead: opt.AnonymousRead, ID: opt.ID, Leader: el.info, LeaderURL: el.leaderURL,
		Lease: el.lease, Ready: func(ctx context.Context) error { return el.ready(ctx, st) }, Version: opt.Version}
	if tr != nil {
		aopt.Trust = api.TrustOptions{CA: tr.ca, CertTTL: opt.TLS.CertTTL, ForwardTLS: tr.forward}
	}
	srv := api.New(st, log, aopt)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, ext := range opt.Extend {
		if err := ext(ctx, srv, st); err != nil {
			l.Close()
			return fmt.Errorf("controller extension: %w", err)
		}
	}
	bs := &backupState{}
	if opt.Backup.Dir != "" {
		if opt.Backup.Interval <= 0 {
			opt.Backup.Interval = time.Hour
		}
		bs.interval = opt.Backup.Interval
		bs.seed(opt.Backup.Dir)
	}
	if opt.MetricsListen != "" {
		ma, err := serveMetrics(ctx, opt.MetricsListen, bs.metricsHandler(func() bool { return el.info().IsLeader }), log)
		if err != nil {
			l.Close()
			return err
		}
		log.Info("controller metrics", "url", "http://"+ma.String()+"/metrics")
	}
	var wg sync.WaitGroup
	wg.Add(3)
	fatal := make(chan error, 1) // the election refused this controller (its id is taken)
	go func() { defer wg.Done(); srv.Run(ctx) }()
	go func() {
		defer wg.Done()
		err := el.run(ctx, func(lctx context.Context) {
			if opt.Backup.Dir != "" {
				var bw sync.WaitGroup
				bw.Add(1)
				go func() { defer bw.Done(); backupLoop(lctx, st, opt.Backup, bs, log) }()
				defer bw.Wait()
			}
			var hw sync.WaitGroup
			hw.Add(1)
			go func() { defer hw.Done(); housekeeping(lctx, st, opt, len(opt.EtcdEndpoints) > 0, log) }()
			defer hw.Wait()
			leaderLoop(lctx, srv, log)
		})
		if err != nil {
			fatal <- err
			cancel()
		}
	}()
	hs := httpserve.Server(srv.Handler(), lim)
	hs.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	if tr != nil {
		hs.TLSConfig = tr.server
	}
	go func() {
		defer wg.Done()
		<-ctx.Done()
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		_ = hs.Shutdown(sctx)
	}()
	log.Info("controller serving", "url", scheme+l.Addr().String(), "advertise", adv, "id", opt.ID, "etcd", endpoints)
	if opt.Ready != nil {
		opt.Ready(l.Addr().String())
	}
	if tr != nil {
		err = hs.ServeTLS(l, "", "")
	} else {
		err = hs.Serve(l)
	}
	cancel()
	// Every etcd call on the way out is bounded; this bounds the whole, so that a controller
	// whose etcd stopped answering still exits when told to.
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(shutdownWait):
		log.Error("controller: stopping without waiting longer for the election and the API", "waited", shutdownWait)
	}
	select {
	case ferr := <-fatal:
		return ferr
	default:
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// shutdownWait bounds how long a stopping controller waits for its parts to end.
const shutdownWait = 10 * time.Second

// etcdStopBound bounds each etcd call a controller makes when it stops leading or campaigning
// (resign, lease revoke): made with a fresh context, since the one of the lead has ended.
const etcdStopBound = 2 * time.Second

// leaderLoop is the leader's job: sweep allocations so pending values (a VM waiting for a host,
// a value freed by a failed writer) are filled in without waiting for the next apply.
func leaderLoop(ctx context.Context, srv *api.Server, log *slog.Logger) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		if err := srv.Sweep(ctx); err != nil && ctx.Err() == nil {
			log.Warn("allocation sweep", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// election is leader election through etcd. The lease in etcd has whole seconds (etcd's
// unit), the TTL rounded up; this controller's own view of its leadership has the exact TTL:
// it renews the lease every TTL/3 and counts itself leader only until TTL after the last renewal
// it sent that etcd confirmed. A leader paused or cut off for longer therefore stops writing on
// its own, and its commits are guarded by its election key besides (store.Guard), which etcd
// deletes with the lease.
//
// A controller whose lead lapsed or ended does not forward writes for drain (twice the TTL, at
// least 1 s) after it ended: requests that reached it while it led (queued in its sockets while
// it was paused or cut off) are read right after it comes back, and would otherwise run late at
// the new leader, after their client may have retried them elsewhere. They get a 503 instead.
type election struct {
	cli    *clientv3.Client
	id     string
	ttl    time.Duration
	log    *slog.Logger
	prefix string
	urls   string // key prefix: controller id -> API URL, held by each controller's session
	url    string // this controller's API URL

	mu         sync.Mutex
	leader     string
	me         bool
	guard      store.Guard // this controller's election key while it leads
	validUntil time.Time   // monotonic: leadership counts until then
	changed    time.Time   // when the observed leader last changed
	ledUntil   time.Time   // monotonic: when this controller's last lead ended
}

// drain is how long after its lead ended a controller refuses writes instead of forwarding
// them: twice the TTL, at least 1 s.
func (e *election) drain() time.Duration { return max(2*e.ttl, time.Second) }

// leaseSeconds is the etcd lease TTL for ttl: whole seconds, rounded up, at least 1.
func leaseSeconds(ttl time.Duration) int64 {
	return max(1, int64((ttl+time.Second-1)/time.Second))
}

func (e *election) info() api.LeaderInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	return api.LeaderInfo{IsLeader: e.me && time.Now().Before(e.validUntil), Leader: e.leader}
}

// lease returns the commit guard while this controller leads with a lease renewed within TTL.
func (e *election) lease() (store.Guard, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.me || e.guard.Key == "" || !time.Now().Before(e.validUntil) {
		return store.Guard{}, false
	}
	return e.guard, true
}

func (e *election) set(leader string, me bool) {
	e.mu.Lock()
	if leader != e.leader {
		e.changed = time.Now()
	}
	if e.me && !me {
		e.ledUntil = time.Now()
	}
	e.leader, e.me = leader, me
	if !me {
		e.guard = store.Guard{}
	}
	e.mu.Unlock()
}

// observed records the leader etcd reports (the value of the first key under the election
// prefix). It never changes whether this controller leads: that is its campaign's to set
// (won) and clear (lead ended: session, lease or context gone). An observation made before
// the campaign won can arrive after it; taking it as a demotion left a leader that ran its
// allocators but refused every write until it lost the election.
func (e *election) observed(leader string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.me {
		return
	}
	if leader != e.leader {
		e.changed = time.Now()
	}
	e.leader = leader
}

func (e *election) renewed(at time.Time) {
	e.mu.Lock()
	if v := at.Add(e.ttl); v.After(e.validUntil) {
		e.validUntil = v
	}
	e.mu.Unlock()
}

// forwardTo names the controller writes reaching this one go to: another controller that leads,
// while this one neither leads (even with a lapsed lease) nor ended its lead within drain.
// ok=false: serve the write here, where it commits only under a valid lease (else 503).
func (e *election) forwardTo() (leader string, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.me || e.leader == "" || e.leader == e.id || (!e.ledUntil.IsZero() && time.Since(e.ledUntil) < e.drain()) {
		return "", false
	}
	return e.leader, true
}

// leaderURL returns the API URL of the leader when writes go to another controller (forwardTo).
// An etcd that does not answer is an error (the write answers 503 at once) rather than a write
// served here, which would wait for the same etcd again.
func (e *election) leaderURL(ctx context.Context) (string, bool, error) {
	leader, ok := e.forwardTo()
	if !ok {
		return "", false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	r, err := e.cli.Get(ctx, e.urls+leader)
	if err != nil {
		return "", false, fmt.Errorf("etcd: the API URL of leader %s: %w", leader, err)
	}
	if len(r.Kvs) == 0 {
		return "", false, nil
	}
	return string(r.Kvs[0].Value), true, nil
}

// ready says whether this controller can serve writes: etcd answers a linearizable read (a
// quorum and an etcd leader), and a controller leads (this one, with a valid lease, or another
// whose key is in etcd).
func (e *election) ready(ctx context.Context, st *store.Store) error {
	r, err := e.cli.Get(clientv3.WithRequireLeader(ctx), e.prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
	if err != nil {
		return fmt.Errorf("etcd: no quorum or no etcd leader: %w", err)
	}
	info := e.info()
	switch {
	case e.isMe():
		if !info.IsLeader {
			return errors.New("leader lease not renewed within the election TTL")
		}
		return nil
	case len(r.Kvs) == 0:
		return errors.New("no controller leads (election under way)")
	}
	return nil
}

func (e *election) isMe() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.me
}

// ErrDuplicateID is the refusal of a controller whose --id another live controller registered.
var ErrDuplicateID = errors.New("duplicate controller id")

// run campaigns until ctx ends, calling lead while this controller leads. It returns an error
// only when this controller must not run (ErrDuplicateID).
func (e *election) run(ctx context.Context, lead func(context.Context)) error {
	for ctx.Err() == nil {
		err := e.once(ctx, lead)
		if errors.Is(err, ErrDuplicateID) {
			e.log.Error("leader election", "err", err)
			return err
		}
		if err != nil && ctx.Err() == nil {
			e.log.Warn("leader election", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(min(time.Second, e.ttl)):
			}
		}
	}
	return nil
}

// register records this controller's API URL under its id, held by lease, where the others
// look up the leader's. The key is put only if absent (or already held by this lease): another
// controller started with the same id would otherwise overwrite it, and writes forwarded to
// "the leader" would go to whichever registered last. A key held by another lease may be that
// of this controller's previous run (killed: its lease expires within the TTL), so it is
// retried until that lease must have expired; still held then, another controller is alive
// with this id, and this one is refused.
func (e *election) register(ctx context.Context, lease clientv3.LeaseID) error {
	key := e.urls + e.id
	deadline := time.Now().Add(time.Duration(leaseSeconds(e.ttl))*time.Second + 2*time.Second)
	for {
		rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), max(e.ttl, 2*time.Second))
		r, err := e.cli.Txn(rctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, e.url, clientv3.WithLease(lease))).Else(clientv3.OpGet(key)).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("register API URL: %w", err)
		}
		if r.Succeeded {
			return nil
		}
		var holder *mvccpb.KeyValue
		if kvs := r.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			holder = kvs[0]
			if clientv3.LeaseID(holder.Lease) == lease {
				return nil
			}
		}
		if time.Now().After(deadline) {
			other := "?"
			if holder != nil {
				other = fmt.Sprintf("%s, lease %x", holder.Value, holder.Lease)
			}
			return fmt.Errorf("%w: controller id %q is registered by another controller (%s) that keeps it alive; give each controller its own --id (the default is hostname/listen address)", ErrDuplicateID, e.id, other)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// revoke ends this controller's lease at once, with a fresh bounded context (the campaign's
// has ended): its election key and registration go with it, so another controller leads
// without waiting for the TTL. Without it a controller told to stop handed over no faster
// than a killed one (the revoke ran with the cancelled context: "context canceled").
func (e *election) revoke(lease clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), etcdStopBound)
	defer cancel()
	if _, err := e.cli.Revoke(ctx, lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		e.log.Warn("leader election: revoking the lease failed; it expires within the TTL", "id", e.id, "err", err)
	}
}

func (e *election) once(ctx context.Context, lead func(context.Context)) error {
	gctx, gcancel := context.WithTimeout(ctx, max(e.ttl, 2*time.Second))
	lg, err := e.cli.Grant(gctx, leaseSeconds(e.ttl))
	gcancel()
	if err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	sess, err := concurrency.NewSession(e.cli, concurrency.WithLease(lg.ID), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	defer e.revoke(lg.ID)
	defer sess.Orphan()
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	lost := make(chan struct{})
	go e.keepAlive(kctx, lg.ID, lost)
	if err := e.register(ctx, lg.ID); err != nil {
		return err
	}
	el := concurrency.NewElection(sess, e.prefix)
	octx, ocancel := context.WithCancel(ctx)
	defer ocancel()
	go func() {
		for r := range el.Observe(octx) {
			if len(r.Kvs) > 0 {
				l := string(r.Kvs[0].Value)
				e.observed(l)
			}
		}
	}()
	cctx, ccancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-sess.Done():
		case <-lost:
		case <-cctx.Done():
		}
		ccancel()
	}()
	if err := el.Campaign(cctx, e.id); err != nil {
		ccancel()
		return fmt.Errorf("campaign: %w", err)
	}
	e.mu.Lock()
	e.guard = store.Guard{Key: el.Key(), CreateRev: el.Rev()}
	e.mu.Unlock()
	e.log.Info("leading: running allocators", "id", e.id, "ttl", e.ttl)
	e.set(e.id, true)
	// Leadership lapses at validUntil unless renewed (lease: writes answer 503 meanwhile) and
	// comes back with the next confirmed renewal; it ends when etcd says the lease is gone.
	lead(cctx)
	ccancel()
	e.set("", false)
	select {
	case <-lost:
		return errors.New("lease lost; campaigning again")
	case <-sess.Done():
		if ctx.Err() == nil {
			return errors.New("session expired; campaigning again")
		}
	default:
	}
	return nil // the deferred revoke ends the lease and with it this controller's election key
}

// keepAlive renews the lease every TTL/3, recording each confirmed renewal by the time it was
// sent; it closes lost when etcd says the lease is gone. Failed renewals only let the
// leadership lapse (election.lease) until one succeeds.
func (e *election) keepAlive(ctx context.Context, id clientv3.LeaseID, lost chan struct{}) {
	defer close(lost)
	every := max(e.ttl/3, 10*time.Millisecond)
	e.renewed(time.Now())
	last, warned := time.Now(), false
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		sent := time.Now()
		// A confirmation arriving late still counts (from when it was sent), so wait up to TTL.
		rctx, cancel := context.WithTimeout(ctx, e.ttl)
		r, err := e.cli.KeepAliveOnce(rctx, id)
		cancel()
		switch {
		case err == nil && r.TTL > 0:
			e.renewed(sent)
			last = sent
		case ctx.Err() != nil:
			return
		case errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && r.TTL <= 0):
			e.log.Warn("leader election lease expired", "id", e.id)
			return
		default:
			if time.Since(last) > e.ttl && !warned && e.isMe() {
				e.log.Warn("leader election lease not renewed within the TTL; no writes until it is", "id", e.id, "err", err)
				warned = true
			}
		}
		if warned && last == sent {
			e.log.Info("leader election lease renewed again", "id", e.id)
			warned = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
