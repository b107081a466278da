// Package api is the controller's REST API (JSON under /v1, OpenAPI at /v1/openapi.json):
// apply/plan of YAML, get/delete of objects, per-host desired state with long-poll watch,
// host status write-back, audit log and tokens. Every request carries a bearer token whose
// role (admin, network, department, agent) decides what it may see and change; every write
// is recorded in the audit log in the same etcd transaction as the change.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/govcloud/govcloud/controlplane/alloc"
	"github.com/govcloud/govcloud/controlplane/config"
	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/controlplane/plan"
	"github.com/govcloud/govcloud/controlplane/reconcile"
	"github.com/govcloud/govcloud/controlplane/store"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/time/rate"
)

// writeTimeout bounds the etcd calls of one object write (apply, delete, sweep); without
// quorum they fail with 503 at the latest after it.
const writeTimeout = 10 * time.Second

// DefaultEtcdReadTimeout bounds each etcd read made while serving a request (token lookups,
// snapshots, each poll of a long poll): a controller cut off from etcd answers 503 within it,
// and its client tries another controller, instead of holding the request until the
// connection is cut.
const DefaultEtcdReadTimeout = 2 * time.Second

// maxAttempts is how often a write recomputes after another writer moved the state before
// it gives up with a 503 (contention).
const maxAttempts = 50

// Options configure the server.
type Options struct {
	Alloc         alloc.Config
	AnonymousRead bool              // allow GETs without a token (the lab)
	ID            string            // this controller's name in status
	Leader        func() LeaderInfo // who leads; nil = always this one
	// LeaderURL returns the leader's API URL when another controller leads: writes are then
	// forwarded there, so allocation runs on the leader. nil or ok=false: serve locally.
	// An error (etcd did not answer who leads) answers 503: nothing was done.
	LeaderURL func(ctx context.Context) (url string, ok bool, err error)
	// Trust: the CA that signs host certificates at join and renewal (nil: this server issues
	// none), their lifetime, and how writes are forwarded to the leader (its CA).
	Trust TrustOptions
	// Lease returns the guard of this controller's leadership while it holds a valid lease
	// (ok=false otherwise). With Lease set, object writes (apply, delete, sweep) commit only
	// under it: a controller whose lease ended (paused, partitioned) answers 503 and commits
	// nothing, whatever it had queued. nil: every write commits unguarded (one controller).
	Lease func() (g store.Guard, ok bool)
	// Ready reports why this controller should not take requests (no etcd quorum, no leader);
	// nil error: ready. /healthz and /readyz answer 503 with the reason. nil: always ready.
	Ready func(ctx context.Context) error
	// Version is shown on /v1/status (nil: none).
	Version any
	// ForwardIdle abandons a write forwarded to the leader when the leader sends nothing
	// (heartbeat or answer) for this long; the client gets a 503 and tries again (default
	// 1 s, four heartbeats). ForwardTimeout bounds the whole forward (default 2 minutes).
	ForwardIdle, ForwardTimeout time.Duration
	// EtcdReadTimeout bounds each etcd read made while serving a request (default
	// DefaultEtcdReadTimeout); writes are bounded by writeTimeout.
	EtcdReadTimeout time.Duration
}

// LeaderInfo describes the election.
type LeaderInfo struct {
	IsLeader bool   `json:"isLeader"`
	Leader   string `json:"leader"`
}

// Server serves the API.
type Server struct {
	store *store.Store
	log   *slog.Logger
	opt   Options

	applySem chan struct{} // one object write at a time on this controller (1 slot)
	tokens   tokenCache

	notifyMu sync.Mutex
	notify   chan struct{} // closed and replaced on every state change

	anonAudit *rate.Limiter // refused writes without a valid token: audited at a bounded rate

	extra   []extraRoute
	console consoleBook // when console reads were audited (console.go)
	trust   trustState  // host certificates (trust.go)

	// hostStates caches each host's desired state by store revision: every agent asks for its
	// peer health each second, and working the state out costs milliseconds on a large store.
	hostStatesMu sync.Mutex
	hostStates   map[string]*desired.State
	hostStatesAt int64

	downs downCache // each host report's down backends, decoded once (PeerHealth)
}

// Logger is the server's logger, for extensions that log beside it.
func (s *Server) Logger() *slog.Logger { return s.log }

// hostState is reconcile.ForHost of snap, computed once per host and store revision.
func (s *Server) hostState(snap *store.Snapshot, host string) *desired.State {
	s.hostStatesMu.Lock()
	defer s.hostStatesMu.Unlock()
	if s.hostStatesAt != snap.Revision || s.hostStates == nil {
		s.hostStates, s.hostStatesAt = map[string]*desired.State{}, snap.Revision
	}
	st, ok := s.hostStates[host]
	if !ok {
		st = reconcile.ForHost(snap.State, host, snap.Revision)
		s.hostStates[host] = st
	}
	return st
}

type extraRoute struct {
	pattern string
	h       func(http.ResponseWriter, *http.Request, Principal) error
}

// Principal is who made a request, for handlers added with Handle.
type Principal struct {
	Name       string `json:"name"`
	Role       string `json:"role"`
	Department string `json:"department,omitempty"`
	Host       string `json:"host,omitempty"`
	TokenID    string `json:"tokenId,omitempty"` // the credential's id (audit)
	Remote     string `json:"remote,omitempty"`  // the client's address, host:port (audit)
}

// HTTPError lets a handler added with Handle choose the status of its failure; the body is
// the API's usual error JSON.
type HTTPError struct {
	Status  int
	Code    string
	Message string
	Audited bool // the handler recorded the refusal in the audit log itself
}

func (e *HTTPError) Error() string { return e.Message }

// Handle adds an authenticated route (Go ServeMux pattern, e.g. "GET /v1/usage") served next to
// the built-in ones: how other parts of the controller (the usage ledger) expose their API.
// Call it before Handler. The handler decides what each role may do.
func (s *Server) Handle(pattern string, h func(w http.ResponseWriter, r *http.Request, p Principal) error) {
	s.extra = append(s.extra, extraRoute{pattern, h})
}

// New returns a server over st.
func New(st *store.Store, log *slog.Logger, opt Options) *Server {
	if opt.Alloc.VLANs == nil {
		opt.Alloc = alloc.DefaultConfig()
	}
	if opt.EtcdReadTimeout <= 0 {
		opt.EtcdReadTimeout = DefaultEtcdReadTimeout
	}
	return &Server{store: st, log: log, opt: opt, tokens: tokenCache{m: map[string]cachedToken{}}, notify: make(chan struct{}), applySem: make(chan struct{}, 1),
		anonAudit: rate.NewLimiter(10, 50)}
}

// Run follows state changes (for watches) until ctx ends.
func (s *Server) Run(ctx context.Context) {
	s.store.WatchState(ctx, func(int64) { s.wake() })
}

func (s *Server) wake() {
	s.notifyMu.Lock()
	close(s.notify)
	s.notify = make(chan struct{})
	s.notifyMu.Unlock()
}

func (s *Server) waiter() <-chan struct{} {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	return s.notify
}

// apiError is the JSON body of every failure.
type apiError struct {
	Status  int           `json:"-"`
	Code    string        `json:"code"`
	Message string        `json:"error"`
	Errors  config.Errors `json:"errors,omitempty"`
	audited bool          // the refusal is in the audit log already
}

func (e *apiError) Error() string { return e.Message }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeErr(w http.ResponseWriter, e *apiError) { writeJSON(w, e.Status, e) }

func forbidden(format string, args ...any) *apiError {
	return &apiError{Status: http.StatusForbidden, Code: "forbidden", Message: fmt.Sprintf(format, args...)}
}

// invalid answers a refused input. With several errors the message only counts them and names
// the first: the list is in Errors, once.
func invalid(err error) *apiError {
	es := config.AsErrors(err)
	msg := err.Error()
	if len(es) > 1 {
		msg = fmt.Sprintf("%d problems, nothing was changed; the first: %s", es.Count(), es[0].Error())
	}
	return &apiError{Status: http.StatusUnprocessableEntity, Code: "invalid", Message: msg, Errors: es}
}

// internal answers a failure of this controller: 500, or 503 when etcd could not serve (no
// quorum, no etcd leader, timeout), which the client may retry elsewhere.
func internal(err error) *apiError {
	var te *store.TimeoutError
	if errors.As(err, &te) {
		if te.Write {
			return unavailable("unknown_outcome", err.Error()+"; it may or may not have been applied, sending it again is safe")
		}
		return unavailable("etcd_timeout", err.Error()+"; nothing was done, try again (another controller may reach etcd)")
	}
	if errors.Is(err, context.DeadlineExceeded) || etcdUnavailable(err) {
		return unavailable("no_quorum", "etcd cannot serve now (no quorum or no etcd leader): "+err.Error())
	}
	return &apiError{Status: http.StatusInternalServerError, Code: "internal", Message: err.Error()}
}

type handler func(w http.ResponseWriter, r *http.Request, p *principal) *apiError

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(openAPI))
	})
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /healthz", s.handleReady)
	mux.HandleFunc("GET /readyz", s.handleReady)
	route := func(pattern string, h handler) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if s.opt.ID != "" {
				w.Header().Set("X-Govcloud-Controller", s.opt.ID)
			}
			// An etcd member without a raft leader refuses at once instead of waiting for one,
			// and every etcd call made for this request is bounded (store.Bounds): an etcd
			// that does not answer (this controller cut off from it) is a 503 the client
			// takes elsewhere, not a request held until the connection is cut.
			r = r.WithContext(store.WithBounds(clientv3.WithRequireLeader(r.Context()),
				store.Bounds{Read: s.opt.EtcdReadTimeout, Write: writeTimeout}))
			p, e := s.authenticate(r.Context(), r)
			if e == nil {
				e = h(w, r, p)
			}
			if e != nil {
				if e.Status >= 400 && e.Status < 500 && r.Method != http.MethodGet && r.Method != http.MethodHead {
					s.refusedWrite(r, p, e)
				}
				if e.Status >= 500 {
					s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", e.Message)
				}
				writeErr(w, e)
			}
		})
	}
	route("POST /v1/apply", s.toLeader(s.handleApply))
	route("POST /v1/plan", func(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
		q := r.URL.Query()
		q.Set("dryRun", "true")
		r.URL.RawQuery = q.Encode()
		return s.handleApply(w, r, p)
	})
	route("GET /v1/objects", s.handleList)
	route("GET /v1/objects/{kind}", s.handleList)
	route("GET /v1/objects/{kind}/{name}", s.handleGet)
	route("DELETE /v1/objects/{kind}/{name}", s.toLeader(s.handleDelete))
	route("POST /v1/delete", s.toLeader(s.handleDeleteMany))
	route("PUT /v1/hosts/{name}/console/{vm}", s.handlePutConsole)
	route("GET /v1/vms/{name}/console", s.handleGetConsole)
	route("GET /v1/hosts/{name}/desired", s.handleDesired)
	route("PUT /v1/hosts/{name}/status", s.handleHostStatus)
	route("GET /v1/hosts/{name}/peer-health", s.handlePeerHealth)
	route("PUT /v1/hosts/{name}/compute-status", s.handleComputeStatus)
	route("GET /v1/status", s.handleStatus)
	route("GET /v1/audit", s.handleAudit)
	route("POST /v1/tokens", s.handleToken)
	route("GET /v1/tokens", func(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
		if p.Role != RoleAdmin {
			return forbidden("%s may not list tokens (needs role admin)", p.who())
		}
		ts, err := s.store.Tokens(r.Context())
		if err != nil {
			return internal(err)
		}
		writeJSON(w, http.StatusOK, ts)
		return nil
	})
	route("DELETE /v1/tokens/{name}", func(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
		return s.handleRevoke(w, r, p, "name", r.PathValue("name"), s.store.RevokeToken)
	})
	route("DELETE /v1/tokens/id/{id}", func(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
		return s.handleRevoke(w, r, p, "id", r.PathValue("id"), s.store.RevokeTokenID)
	})
	for _, x := range s.extra {
		route(x.pattern, func(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
			err := x.h(w, r, Principal{Name: p.Name, Role: p.Role, Department: p.Department, Host: p.Host, TokenID: p.ID, Remote: p.remote})
			if err == nil {
				return nil
			}
			var he *HTTPError
			if errors.As(err, &he) {
				return &apiError{Status: he.Status, Code: he.Code, Message: he.Message, audited: he.Audited}
			}
			return internal(err)
		})
	}
	s.trustRoutes(mux, route)
	route("GET /v1/whoami", func(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
		writeJSON(w, http.StatusOK, p.Token)
		return nil
	})
	return heartbeat(mux)
}

// toLeader forwards a write to the leading controller when another one leads (allocation runs
// on the leader, and only the leader commits). Plans and requests already forwarded are served
// here. A leader that cannot be reached, goes silent (no heartbeat for ForwardIdle) or is
// reachable only over plain HTTP while this API is HTTPS gets the client a 503: nothing was
// done here, and the client tries again (the next leader takes over within the lease TTL).
func (s *Server) toLeader(h handler) handler {
	return func(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
		if s.opt.LeaderURL == nil || boolParam(r, "dryRun") || r.Header.Get("X-Govcloud-Forwarded") != "" {
			return h(w, r, p)
		}
		leader, ok, err := s.opt.LeaderURL(r.Context())
		if err != nil {
			return unavailable("leader_unknown", fmt.Sprintf("controller %s cannot tell who leads: %v; nothing was done, try again", s.opt.ID, err))
		}
		if !ok {
			return h(w, r, p) // this one leads, or none does (the write then answers 503)
		}
		if s.opt.Trust.ForwardTLS != nil && !strings.HasPrefix(leader, "https://") {
			return unavailable("leader_unreachable", fmt.Sprintf("the leader registered %q: not forwarding credentials over plain HTTP", leader))
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, config.MaxInput+1))
		if err != nil {
			return &apiError{Status: http.StatusBadRequest, Code: "bad_request", Message: "read body: " + err.Error()}
		}
		idle, total := s.opt.ForwardIdle, s.opt.ForwardTimeout
		if idle <= 0 {
			idle = time.Second
		}
		if total <= 0 {
			total = 2 * time.Minute
		}
		fctx, cancel := context.WithTimeoutCause(r.Context(), total, errForwardTimeout)
		defer cancel()
		fctx, cancelIdle := context.WithCancelCause(fctx)
		defer cancelIdle(nil)
		dog := time.AfterFunc(idle, func() { cancelIdle(errForwardIdle) })
		defer dog.Stop()
		fctx = httptrace.WithClientTrace(fctx, &httptrace.ClientTrace{
			Got1xxResponse: func(int, textproto.MIMEHeader) error { dog.Reset(idle); return nil },
			WroteRequest:   func(httptrace.WroteRequestInfo) { dog.Reset(idle) },
		})
		req, err := http.NewRequestWithContext(fctx, r.Method, strings.TrimRight(leader, "/")+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			return internal(err)
		}
		for _, k := range []string{"Authorization", "Content-Type", "X-Govcloud-File"} {
			if v := r.Header.Get(k); v != "" {
				req.Header.Set(k, v)
			}
		}
		req.Header.Set("X-Govcloud-Forwarded", s.opt.ID)
		req.Header.Set(heartbeatHeader, "250ms")
		resp, err := s.forwardClient().Do(req)
		var b []byte
		if err == nil {
			dog.Reset(idle)
			b, err = io.ReadAll(io.LimitReader(resp.Body, 64<<20))
			resp.Body.Close()
		}
		if err != nil {
			if c := context.Cause(fctx); c != nil && r.Context().Err() == nil {
				err = c
			}
			s.log.Warn("forward to the leader failed; the client retries", "leader", leader, "err", err)
			return unavailable("leader_unreachable", fmt.Sprintf("leader %s: %v; nothing was done here, try again", leader, err))
		}
		for _, k := range []string{"Content-Type", "X-Govcloud-Controller", "Retry-After"} {
			if v := resp.Header.Get(k); v != "" {
				w.Header().Set(k, v)
			}
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(b)
		return nil
	}
}

var (
	errForwardIdle    = errors.New("the leader sent nothing (not even a heartbeat) in time")
	errForwardTimeout = errors.New("the leader did not answer in time")
)

// unavailable is a 503: nothing was done; the client may send the request again (here or to
// another controller).
func unavailable(code, msg string) *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Code: code, Message: msg}
}

// storeError maps a failed etcd call to an answer: lost quorum, no etcd leader and deadlines
// are 503 (retryable: nothing was committed), anything else 500.
func storeError(err error) *apiError {
	if errors.Is(err, store.ErrNotLeader) {
		return unavailable("not_leader", err.Error())
	}
	return internal(err)
}

// ApplyResult is the answer to apply and plan.
type ApplyResult struct {
	DryRun   bool           `json:"dryRun"`
	Revision int64          `json:"revision"` // state revision after the apply (before, for a plan)
	Changes  []plan.Change  `json:"changes"`
	Counts   map[string]int `json:"counts"`
}

func boolParam(r *http.Request, name string) bool {
	v, _ := strconv.ParseBool(r.URL.Query().Get(name))
	return v
}

func (s *Server) handleApply(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
	if p.Role != RoleAdmin && p.Role != RoleNetwork {
		return forbidden("%s may not apply configuration (needs role admin or network)", p.who())
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, config.MaxInput+1))
	if err != nil {
		return &apiError{Status: http.StatusBadRequest, Code: "bad_request", Message: "read body: " + err.Error()}
	}
	file := r.Header.Get("X-Govcloud-File")
	if file == "" {
		file = "<request>"
	}
	t0 := time.Now()
	objs, err := config.Parse(file, body)
	if err != nil {
		return invalid(err)
	}
	s.log.Debug("parsed", "file", file, "objects", len(objs), "took", time.Since(t0))
	for _, o := range objs {
		if !p.canWrite(o.Kind) {
			return forbidden("%s may not write %s (role %s manages %s)", p.who(), o.Key(), p.Role, "network resources")
		}
	}
	base, _ := strconv.ParseInt(r.URL.Query().Get("baseRevision"), 10, 64)
	req := plan.Request{Objects: objs, Prune: boolParam(r, "prune")}
	if req.Prune && p.Role != RoleAdmin {
		return forbidden("%s may not prune (needs role admin)", p.who())
	}
	res, e := s.change(r.Context(), p, req, base, boolParam(r, "dryRun"), "apply")
	if e != nil {
		return e
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// change plans req and, unless dryRun, commits it. base is the revision the caller planned
// against (0: the revision when the request arrived); an object changed by someone else
// after base is a conflict.
func (s *Server) change(ctx context.Context, p *principal, req plan.Request, base int64, dryRun bool, action string) (*ApplyResult, *apiError) {
	// Fail fast without quorum: an etcd member without a leader refuses at once, and no call
	// waits longer than writeTimeout.
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), writeTimeout)
	defer cancel()
	if base == 0 {
		snap, err := s.store.Snapshot(ctx)
		if err != nil {
			return nil, storeError(err)
		}
		base = snap.Revision
	}
	if !dryRun {
		select {
		case s.applySem <- struct{}{}:
			defer func() { <-s.applySem }()
		case <-ctx.Done():
			return nil, storeError(fmt.Errorf("waiting for the write before this one: %w", ctx.Err()))
		}
	}
	for attempt := 0; ; attempt++ {
		if !dryRun && s.opt.Lease != nil {
			g, ok := s.opt.Lease()
			if !ok {
				return nil, unavailable("not_leader", fmt.Sprintf("controller %s does not hold the leader lease; nothing was changed, try again (another controller leads or will shortly)", s.opt.ID))
			}
			ctx = store.WithGuard(ctx, g)
		}
		snap, err := s.store.Snapshot(ctx)
		if err != nil {
			return nil, storeError(err)
		}
		t0 := time.Now()
		res, err := plan.Compute(snap.State, snap, req, s.opt.Alloc)
		if err != nil {
			return nil, invalid(err)
		}
		s.log.Debug("planned", "objects", len(snap.State.Objects), "changes", len(res.Puts)+len(res.Deletes), "took", time.Since(t0))
		// Objects this request changes must not have been changed by someone else since base.
		mine := map[config.Key]bool{}
		for _, o := range req.Objects {
			mine[o.Key()] = true
		}
		for _, k := range req.Deletes {
			mine[k] = true
		}
		for _, c := range res.Changes {
			k := config.Key{Kind: c.Kind, Name: c.Name}
			if c.Action == plan.Unchanged || !(mine[k] || req.Prune) {
				continue
			}
			if mr := snap.ModRev[k]; mr > base {
				return nil, &apiError{Status: http.StatusConflict, Code: "conflict",
					Message: fmt.Sprintf("%s %q: conflict: changed by another write at revision %d, after revision %d this %s was based on; nothing was changed, re-plan and apply again", k.Kind, k.Name, mr, base, action),
					Errors:  config.Errors{{Kind: k.Kind, Name: k.Name, Msg: "conflict: changed concurrently"}}}
			}
		}
		out := &ApplyResult{DryRun: dryRun, Revision: snap.Revision, Changes: res.Changes, Counts: res.Counts()}
		if out.Changes == nil {
			out.Changes = []plan.Change{}
		}
		if dryRun || (len(res.Puts) == 0 && len(res.Deletes) == 0) {
			return out, nil
		}
		ae := p.audit(action)
		for _, c := range res.Changes {
			if c.Action != plan.Unchanged {
				ae.Changes = append(ae.Changes, store.AuditChange{Kind: c.Kind, Name: c.Name, Action: c.Action})
			}
		}
		t0 = time.Now()
		rev, err := s.store.Commit(ctx, snap, res.Puts, res.Deletes, ae)
		s.log.Debug("committed", "puts", len(res.Puts), "deletes", len(res.Deletes), "took", time.Since(t0), "err", err)
		if errors.Is(err, store.ErrStale) && attempt < maxAttempts {
			continue // another controller wrote in between: recompute on the new state
		}
		if errors.Is(err, store.ErrStale) {
			return nil, unavailable("contention", fmt.Sprintf("%s: the state changed under %d attempts in a row; nothing was changed, try again", action, maxAttempts+1))
		}
		if err != nil {
			e := storeError(err)
			if e.Status == http.StatusServiceUnavailable && e.Code == "no_quorum" {
				// The transaction was sent: etcd may have applied it. Sending the same apply
				// again is safe (it is declarative); a delete sent again answers 404 if it was.
				e.Code, e.Message = "unknown_outcome", "etcd did not confirm the commit in time (no quorum?); it may or may not have been applied: "+err.Error()
			}
			return nil, e
		}
		out.Revision = rev
		s.log.Info("applied", "who", p.Name, "action", action, "counts", out.Counts, "revision", out.Revision)
		return out, nil
	}
}

func (s *Server) kindParam(r *http.Request) (string, *apiError) {
	raw := r.PathValue("kind")
	if raw == "" {
		return "", nil
	}
	k := config.NormalizeKind(raw)
	if k == "" {
		return "", &apiError{Status: http.StatusNotFound, Code: "not_found", Message: fmt.Sprintf("unknown kind %q (want one of %s)", raw, strings.Join(config.Kinds, ", "))}
	}
	return k, nil
}

// View is how objects are shown: the object plus the addresses scripts look for.
type View struct {
	*config.Object
	Name       string   `json:"name"`
	Department string   `json:"department,omitempty"`
	VIP        string   `json:"vip,omitempty"`
	Addresses  []string `json:"addresses,omitempty"`
	VLAN       int      `json:"vlan,omitempty"`
	Revision   int64    `json:"revision"`
}

func view(o *config.Object, rev int64) View {
	v := View{Object: o, Name: o.Metadata.Name, Department: o.Department(), Revision: rev}
	switch o.Kind {
	case config.KindService:
		if a := config.EffectiveVIP(o); a.IsValid() {
			v.VIP = a.String()
			v.Addresses = []string{v.VIP}
		}
	case config.KindVM:
		for _, n := range o.Status.Networks {
			if n.IPv4 != "" {
				v.Addresses = append(v.Addresses, n.IPv4)
			}
			if n.IPv6 != "" {
				v.Addresses = append(v.Addresses, n.IPv6)
			}
		}
	case config.KindSegment:
		v.VLAN = config.EffectiveVLAN(o)
	}
	return v
}

// readPreamble is what object reads share: agents may not read objects (only their host's
// desired state), the kind from the path, and one consistent snapshot of the store.
func (s *Server) readPreamble(r *http.Request, p *principal) (string, *store.Snapshot, *apiError) {
	if p.Role == RoleAgent {
		return "", nil, forbidden("%s may read only its host's desired state", p.who())
	}
	kind, e := s.kindParam(r)
	if e != nil {
		return "", nil, e
	}
	snap, err := s.store.Snapshot(r.Context())
	if err != nil {
		return "", nil, internal(err)
	}
	return kind, snap, nil
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
	kind, snap, e := s.readPreamble(r, p)
	if e != nil {
		return e
	}
	dept := r.URL.Query().Get("department")
	if p.Role == RoleDepartment && dept != "" && dept != p.Department {
		return forbidden("%s may not read department %q", p.who(), dept)
	}
	out := []View{}
	for _, o := range snap.State.List(kind) {
		if !p.canRead(o) || (dept != "" && o.Department() != dept) {
			continue
		}
		out = append(out, view(o, snap.ModRev[o.Key()]))
	}
	w.Header().Set("X-Govcloud-Revision", strconv.FormatInt(snap.Revision, 10))
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
	kind, snap, e := s.readPreamble(r, p)
	if e != nil {
		return e
	}
	name := r.PathValue("name")
	o := snap.State.Get(kind, name)
	if o == nil {
		return &apiError{Status: http.StatusNotFound, Code: "not_found", Message: fmt.Sprintf("%s %q not found", kind, name)}
	}
	if !p.canRead(o) {
		return forbidden("%s may not read %s of department %q", p.who(), o.Key(), o.Department())
	}
	w.Header().Set("X-Govcloud-Revision", strconv.FormatInt(snap.Revision, 10))
	writeJSON(w, http.StatusOK, view(o, snap.ModRev[o.Key()]))
	return nil
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
	kind, e := s.kindParam(r)
	if e != nil {
		return e
	}
	if !p.canWrite(kind) {
		return forbidden("%s may not delete %s objects", p.who(), kind)
	}
	base, _ := strconv.ParseInt(r.URL.Query().Get("baseRevision"), 10, 64)
	k := config.Key{Kind: kind, Name: r.PathValue("name")}
	res, ae := s.change(r.Context(), p, plan.Request{Deletes: []config.Key{k}}, base, boolParam(r, "dryRun"), "delete")
	if ae != nil {
		if len(ae.Errors) == 1 && ae.Errors[0].Msg == "not found" {
			ae.Status, ae.Code = http.StatusNotFound, "not_found"
		}
		return ae
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) handleDesired(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
	host := r.PathValue("name")
	if p.Role == RoleDepartment || (p.Role == RoleAgent && p.Host != host) {
		return forbidden("%s may not read the desired state of host %q", p.who(), host)
	}
	after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	timeout := 30 * time.Second
	if t := r.URL.Query().Get("timeout"); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil || d < 0 || d > 10*time.Minute {
			return &apiError{Status: http.StatusBadRequest, Code: "bad_request", Message: fmt.Sprintf("timeout %q: want a duration up to 10m", t)}
		}
		timeout = d
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		wait := s.waiter()
		snap, err := s.store.Snapshot(r.Context())
		if err != nil {
			return internal(err)
		}
		if snap.Revision > after {
			d := reconcile.ForHost(snap.State, host, snap.Revision)
			if d == nil {
				return &apiError{Status: http.StatusNotFound, Code: "not_found", Message: fmt.Sprintf("Host %q not found", host)}
			}
			writeJSON(w, http.StatusOK, d)
			return nil
		}
		select {
		case <-wait:
		case <-time.After(2 * time.Second): // also poll, in case a watch event was missed
		case <-deadline.C:
			w.Header().Set("X-Govcloud-Revision", strconv.FormatInt(snap.Revision, 10))
			w.WriteHeader(http.StatusNotModified)
			return nil
		case <-r.Context().Done():
			return nil
		}
	}
}

// DeleteRequest is the body of POST /v1/delete: the objects to delete together.
type DeleteRequest struct {
	Objects []config.Key `json:"objects"`
}

// handleDeleteMany deletes every object of the request in one transaction (all or none), as
// apply writes: an object another one still uses is refused unless that one is deleted too.
// A missing object is an error naming it ("not found"), unless ?ignoreNotFound=true.
func (s *Server) handleDeleteMany(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
	var req DeleteRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, config.MaxInput)).Decode(&req); err != nil {
		return &apiError{Status: http.StatusBadRequest, Code: "bad_request", Message: "decode delete request: " + err.Error()}
	}
	if len(req.Objects) == 0 {
		return &apiError{Status: http.StatusBadRequest, Code: "bad_request", Message: "delete request names no object"}
	}
	for i, k := range req.Objects {
		kind := config.NormalizeKind(k.Kind)
		if kind == "" {
			return &apiError{Status: http.StatusBadRequest, Code: "bad_request", Message: fmt.Sprintf("object %d (%q): unknown kind %q", i+1, k.Name, k.Kind)}
		}
		if !p.canWrite(kind) {
			return forbidden("%s may not delete %s objects", p.who(), kind)
		}
		req.Objects[i].Kind = kind
	}
	keys := req.Objects
	if boolParam(r, "ignoreNotFound") {
		snap, err := s.store.Snapshot(r.Context())
		if err != nil {
			return storeError(err)
		}
		keys = nil
		for _, k := range req.Objects {
			if snap.State.Objects[k] != nil {
				keys = append(keys, k)
			}
		}
		if len(keys) == 0 {
			writeJSON(w, http.StatusOK, &ApplyResult{DryRun: boolParam(r, "dryRun"), Revision: snap.Revision, Changes: []plan.Change{}, Counts: map[string]int{}})
			return nil
		}
	}
	base, _ := strconv.ParseInt(r.URL.Query().Get("baseRevision"), 10, 64)
	res, ae := s.change(r.Context(), p, plan.Request{Deletes: keys}, base, boolParam(r, "dryRun"), "delete")
	if ae != nil {
		return ae
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) handleHostStatus(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
	return s.putStatus(w, r, p, "status", s.store.PutHostStatus)
}

func (s *Server) handleComputeStatus(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
	return s.putStatus(w, r, p, "compute status", s.store.PutComputeStatus)
}

// putStatus stores an agent's report about its own host (any JSON object), audited. Of a
// network agent's report, backend health ("backends", hoststatus.Backends) is kept only for
// backends the controller placed on that host: a host cannot take down another host's backends.
func (s *Server) putStatus(w http.ResponseWriter, r *http.Request, p *principal, what string, put func(context.Context, string, json.RawMessage, store.AuditEntry) error) *apiError {
	host := r.PathValue("name")
	if p.Role != RoleAdmin && !(p.Role == RoleAgent && p.Host == host) {
		return forbidden("%s may not write the %s of host %q", p.who(), what, host)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxStatusBytes+1))
	if err == nil && len(body) > MaxStatusBytes {
		return &apiError{Status: http.StatusRequestEntityTooLarge, Code: "too_large", Message: fmt.Sprintf("%s of host %q: more than %d bytes", what, host, MaxStatusBytes)}
	}
	if err != nil || !json.Valid(body) {
		return &apiError{Status: http.StatusBadRequest, Code: "bad_request", Message: fmt.Sprintf("%s of host %q: body must be JSON", what, host)}
	}
	ae := p.audit(strings.ReplaceAll(what, " ", "-"))
	ae.Detail = map[string]any{"host": host, "bytes": len(body)}
	if what == "status" {
		snap, err := s.store.Snapshot(r.Context())
		if err != nil {
			return internal(err)
		}
		var ignored []string
		if body, ignored, err = FilterPeerHealth(body, s.hostState(snap, host)); err != nil {
			return &apiError{Status: http.StatusBadRequest, Code: "bad_request", Message: fmt.Sprintf("%s of host %q: %v", what, host, err)}
		}
		if len(ignored) > 0 {
			if len(ignored) > 20 {
				ignored = append(ignored[:20], fmt.Sprintf("and %d more", len(ignored)-20))
			}
			ae.Detail["ignoredBackends"] = ignored
			s.log.Warn("status names backends not placed on its host; ignored", "host", host, "who", p.Name, "backends", ignored)
		}
	}
	if err := put(r.Context(), host, body, ae); err != nil {
		return internal(err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"host": host, "result": "stored"})
	return nil
}

// handlePeerHealth answers an agent (or an admin) with its peers' health of the backends it
// balances (PeerHealth): a few bytes instead of every host's whole report on every poll.
func (s *Server) handlePeerHealth(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
	host := r.PathValue("name")
	if p.Role != RoleAdmin && p.Role != RoleNetwork && !(p.Role == RoleAgent && p.Host == host) {
		return forbidden("%s may not read the peer health of host %q", p.who(), host)
	}
	snap, err := s.store.Snapshot(r.Context())
	if err != nil {
		return internal(err)
	}
	reports, err := s.store.HostStatus(r.Context())
	if err != nil {
		return internal(err)
	}
	writeJSON(w, http.StatusOK, s.downs.PeerHealth(reports, s.hostState(snap, host)))
	return nil
}

// Status is the controller's summary.
type Status struct {
	ID       string                     `json:"id"`
	Leader   LeaderInfo                 `json:"leader"`
	Revision int64                      `json:"revision"`
	Objects  map[string]int             `json:"objects"`
	Hosts    map[string]json.RawMessage `json:"hosts,omitempty"`
	Compute  map[string]json.RawMessage `json:"compute,omitempty"` // compute agents' reports
	Version  any                        `json:"version,omitempty"` // this controller's build (Options.Version)
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
	snap, err := s.store.Snapshot(r.Context())
	if err != nil {
		return internal(err)
	}
	st := Status{ID: s.opt.ID, Leader: LeaderInfo{IsLeader: true, Leader: s.opt.ID}, Revision: snap.Revision, Objects: map[string]int{}, Version: s.opt.Version}
	if s.opt.Leader != nil {
		st.Leader = s.opt.Leader()
	}
	for _, k := range config.Kinds {
		st.Objects[k] = 0
	}
	for _, o := range snap.State.Objects {
		if p.canRead(o) {
			st.Objects[o.Kind]++
		}
	}
	// Every host's whole report, for operators: agents read their peers' health pruned to
	// what they need (GET /v1/hosts/{name}/peer-health), not this.
	if p.Role == RoleAdmin || p.Role == RoleNetwork || p.Role == roleAnonymous {
		if st.Hosts, err = s.store.HostStatus(r.Context()); err != nil {
			return internal(err)
		}
		if st.Compute, err = s.store.ComputeStatus(r.Context()); err != nil {
			return internal(err)
		}
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
	if p.Role != RoleAdmin && p.Role != RoleNetwork {
		return forbidden("%s may not read the audit log", p.who())
	}
	limit, _ := strconv.ParseInt(r.URL.Query().Get("limit"), 10, 64)
	if limit <= 0 || limit > 10000 {
		limit = 100
	}
	out, err := s.store.Audit(r.Context(), limit)
	if err != nil {
		return internal(err)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
	if p.Role != RoleAdmin {
		return forbidden("%s may not create tokens (needs role admin)", p.who())
	}
	var req TokenRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		return &apiError{Status: http.StatusBadRequest, Code: "bad_request", Message: "token request: " + err.Error()}
	}
	if err := validateTokenRequest(req); err != nil {
		return &apiError{Status: http.StatusUnprocessableEntity, Code: "invalid", Message: err.Error()}
	}
	tok, hash := NewToken()
	now := time.Now().UTC()
	grant := store.Token{ID: store.TokenID(hash), Name: req.Name, Role: req.Role, Department: req.Department, Host: req.Host, Created: now}
	if req.TTL != "" {
		d, _ := time.ParseDuration(req.TTL) // checked by validateTokenRequest
		exp := now.Add(d)
		grant.Expires = &exp
	}
	ae := p.audit("token")
	ae.Detail = map[string]any{"id": grant.ID, "name": req.Name, "role": req.Role, "department": req.Department, "host": req.Host}
	if grant.Expires != nil {
		ae.Detail["expires"] = grant.Expires
	}
	if err := s.store.PutToken(r.Context(), hash, grant, ae); err != nil {
		return internal(err)
	}
	writeJSON(w, http.StatusCreated, TokenResponse{Token: tok, Grant: grant})
	return nil
}

// handleRevoke revokes tokens by name or by id; revoking the last valid admin token is
// refused (409), so no revocation can lock every admin out.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request, p *principal, by, v string, revoke func(context.Context, string, store.AuditEntry) (int, error)) *apiError {
	if p.Role != RoleAdmin {
		return forbidden("%s may not revoke tokens (needs role admin)", p.who())
	}
	ae := p.audit("revoke-token")
	ae.Detail = map[string]any{by: v}
	n, err := revoke(r.Context(), v, ae)
	if errors.Is(err, store.ErrLastAdmin) || errors.Is(err, store.ErrStale) {
		return &apiError{Status: http.StatusConflict, Code: "conflict", Message: err.Error()}
	}
	if err != nil {
		return internal(err)
	}
	if n == 0 {
		what := "token"
		if by == "id" {
			what = "token id"
		}
		return &apiError{Status: http.StatusNotFound, Code: "not_found", Message: fmt.Sprintf("%s %q not found", what, v)}
	}
	s.tokens.mu.Lock()
	s.tokens.m = map[string]cachedToken{} // this controller forgets at once; others within 2s
	s.tokens.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"revoked": v, "by": by, "count": n})
	return nil
}

// refusedWrite logs a refused write and records it in the audit log (with who, token id and
// client address; unauthenticated ones at a bounded rate, so they cannot flood the log).
func (s *Server) refusedWrite(r *http.Request, p *principal, e *apiError) {
	ae := store.AuditEntry{Who: "unauthenticated", Role: "none", Remote: r.RemoteAddr}
	if p != nil {
		ae = p.audit("")
	}
	s.log.Warn("write refused", "who", ae.Who, "role", ae.Role, "token", ae.TokenID, "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "err", e.Message)
	if e.audited || (p == nil && !s.anonAudit.Allow()) {
		return
	}
	ae.Action, ae.Result, ae.Error = r.Method+" "+r.URL.Path, "refused", e.Message
	if len(ae.Action) > 256 {
		ae.Action = ae.Action[:256]
	}
	ae.Detail = map[string]any{"status": e.Status}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	if err := s.store.AppendAudit(ctx, ae); err != nil {
		s.log.Error("audit of a refused write failed", "err", err)
	}
}

// Bootstrap creates the first admin token if the store has none; it returns the token, or ""
// when one was created before.
func Bootstrap(ctx context.Context, st *store.Store) (string, error) {
	tok, hash := NewToken()
	ok, err := st.PutTokenIfNone(ctx, hash, store.Token{ID: store.TokenID(hash), Name: "admin", Role: RoleAdmin, Created: time.Now().UTC()})
	if err != nil || !ok {
		return "", err
	}
	return tok, nil
}

// Sweep fills in allocations still pending (run by the leader). It commits only if something
// changed.
func (s *Server) Sweep(ctx context.Context) error {
	p := &principal{Token: store.Token{Name: "controller", Role: RoleAdmin}}
	if _, e := s.change(ctx, p, plan.Request{}, 0, false, "allocate"); e != nil {
		return e
	}
	return nil
}
