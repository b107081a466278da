// Package client is the Go client of the controller's REST API, used by the CLI verbs and the
// agents. It depends on neither etcd nor the server.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/govcloud/govcloud/controlplane/config"
	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/controlplane/plan"
)

// DefaultAPI is where the controller listens unless GOVCLOUD_API says otherwise.
const DefaultAPI = "https://127.0.0.1:8480"

// Failover defaults (Client.AttemptIdle, Client.RetryFor).
const (
	// DefaultAttemptIdle is how long one attempt may go without a byte from the controller
	// (heartbeat, header or body) before it is abandoned and the next controller is tried.
	// Controllers send a heartbeat every HeartbeatInterval while they work on a request.
	DefaultAttemptIdle = time.Second
	// DefaultRetryFor bounds how long a request is retried across controllers (connection
	// failures, silent controllers, HTTP 503) unless the context ends sooner.
	DefaultRetryFor = 30 * time.Second
)

// HeartbeatHeader asks the controller for "102 Processing" interim responses every
// HeartbeatInterval until the final answer, so a client can tell a slow controller from a
// paused or partitioned one.
const (
	HeartbeatHeader   = "X-Govcloud-Heartbeat"
	HeartbeatInterval = 250 * time.Millisecond
)

// Client talks to one of several controllers. A request goes to the controller that answered
// last; a connection failure, a controller silent for AttemptIdle, or an HTTP 503 (not ready,
// no quorum, no leader, contention: nothing was done) moves it on to the next URL, round
// robin, until RetryFor has passed. A host name with several addresses counts as one URL per
// address.
type Client struct {
	Base  string   // the URL in use (one of Bases)
	Bases []string // every controller URL, in order of preference
	Token string   // bearer token; empty with a client certificate (Identity) or anonymous reads
	HTTP  *http.Client
	// AttemptIdle and RetryFor: see DefaultAttemptIdle and DefaultRetryFor (zero: those).
	AttemptIdle time.Duration
	RetryFor    time.Duration
	err         error // a configuration error (an unreadable GOVCLOUD_CA) every request reports
	// baseErr is a controller URL that cannot be one (no scheme, e.g. GOVCLOUD_API=127.0.0.1:8480),
	// reported by every request instead of net/url's "first path segment cannot contain colon".
	baseErr error

	mu     sync.Mutex
	cur    int // index into targets of the one that answered last
	pinned map[pinKey]*http.Transport
	down   map[target]time.Time // suspect until
}

// New returns a client for base — one URL or several comma-separated, e.g.
// https://198.51.100.5:8480,https://198.51.100.6:8480 — with a bearer token. Servers are
// verified with the CA of GOVCLOUD_CA, else the local controller's (DefaultCAFiles), else the
// system's roots.
func New(base, token string) *Client {
	c := &Client{Token: token}
	c.SetBase(base)
	tc, err := TLSConfig("")
	c.err = err
	c.HTTP = &http.Client{Transport: NewTransport(tc)}
	return c
}

// SetBase sets the controller URLs (comma-separated).
func (c *Client) SetBase(base string) {
	c.Bases = c.Bases[:0]
	for _, b := range strings.Split(base, ",") {
		if b = strings.TrimRight(strings.TrimSpace(b), "/"); b != "" {
			c.Bases = append(c.Bases, b)
		}
	}
	if len(c.Bases) == 0 {
		c.Bases = []string{DefaultAPI}
	}
	c.Base, c.cur = c.Bases[0], 0
	c.baseErr = nil
	for _, b := range c.Bases {
		if err := CheckURL(b); err != nil {
			c.baseErr = err
			break
		}
	}
}

// CheckURL refuses a controller URL that is not an absolute http(s) URL with a host, naming the
// fix: "127.0.0.1:8480" wants "https://127.0.0.1:8480".
func CheckURL(base string) error {
	u, err := url.Parse(base)
	switch {
	case !strings.Contains(base, "://"):
		return fmt.Errorf("controller URL %q (GOVCLOUD_API or --controller): no scheme; write https://%s", base, base)
	case err != nil:
		return fmt.Errorf("controller URL %q (GOVCLOUD_API or --controller): %w", base, err)
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("controller URL %q (GOVCLOUD_API or --controller): scheme %q: want https (or http with a controller started with --insecure-http)", base, u.Scheme)
	case u.Host == "":
		return fmt.Errorf("controller URL %q (GOVCLOUD_API or --controller): no host; want e.g. %s", base, DefaultAPI)
	}
	return nil
}

// Repoint replaces the controller URLs (comma-separated, as New takes them) of a client in
// use, safely against requests under way: an attempt in flight finishes against the URL it
// started with, and a request that retries makes its next attempt to the new URLs.
func (c *Client) Repoint(base string) {
	n := &Client{}
	n.SetBase(base)
	c.mu.Lock()
	c.Bases, c.Base, c.cur = n.Bases, n.Base, 0
	c.mu.Unlock()
}

// repointed returns the client's controller URLs and the index in use when they are no
// longer bases (a Repoint since bases was read).
func (c *Client) repointed(bases []string) ([]string, int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.Bases) == 0 || slices.Equal(bases, c.Bases) {
		return nil, 0, false
	}
	return slices.Clone(c.Bases), c.cur, true
}

// CurrentBase is the URL in use (the one that answered last), safe against Repoint.
func (c *Client) CurrentBase() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Base
}

// FromEnv uses GOVCLOUD_API (comma-separated URLs), GOVCLOUD_TOKEN and GOVCLOUD_CA.
func FromEnv() *Client {
	base := os.Getenv("GOVCLOUD_API")
	if base == "" {
		base = DefaultAPI
	}
	return New(base, strings.TrimSpace(os.Getenv("GOVCLOUD_TOKEN")))
}

// NoTokenHint ends a refusal of a request sent without a token (an anonymous read the
// controller allows, then a verb that needs a role): where the token goes and where one is.
const NoTokenHint = "; no token was sent: set GOVCLOUD_TOKEN to a token with that role " +
	"(the admin token is in the controller's DATA_DIR/admin-token; in the lab: " +
	"export GOVCLOUD_TOKEN=$(sudo cat /var/lib/govcloud-lab/controller/admin-token))"

// Error is a failure reported by the controller.
type Error struct {
	Status  int           `json:"-"`
	Code    string        `json:"code"`
	Message string        `json:"error"`
	Errors  config.Errors `json:"errors,omitempty"`
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("controller answered HTTP %d", e.Status)
	}
	return e.Message
}

// Retryable says whether err is a controller's answer that nothing was done and the request
// may be sent again, to it or another controller (HTTP 503).
func Retryable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusServiceUnavailable
}

// target is one place a request can go: a controller URL, and for a host name with several
// addresses, one of them (dialled instead of resolving the name; TLS still verifies the name).
type target struct {
	base string
	addr string // "" = dial the URL's host as usual
}

func (t target) String() string {
	if t.addr == "" {
		return t.base
	}
	return t.base + " (" + t.addr + ")"
}

type pinKey struct {
	tr   *http.Transport
	addr string
}

// targets expands Bases: a URL whose host is a name with several addresses becomes one
// target per address. A name that does not resolve stays as it is (the dial reports it).
func (c *Client) targets(ctx context.Context, bases []string) []target {
	var out []target
	for _, b := range bases {
		u, err := url.Parse(b)
		if err != nil || u.Hostname() == "" {
			out = append(out, target{base: b})
			continue
		}
		if _, err := netip.ParseAddr(u.Hostname()); err == nil || u.Hostname() == "localhost" {
			out = append(out, target{base: b})
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ips, err := net.DefaultResolver.LookupNetIP(rctx, "ip", u.Hostname())
		cancel()
		if err != nil || len(ips) < 2 {
			out = append(out, target{base: b})
			continue
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		for _, ip := range ips {
			out = append(out, target{base: b, addr: net.JoinHostPort(ip.Unmap().String(), port)})
		}
	}
	return out
}

// httpFor is the HTTP client of a target: c.HTTP, or for an address of a name, a copy of its
// transport that dials that address (its own connection pool).
func (c *Client) httpFor(t target) *http.Client {
	tr, ok := c.HTTP.Transport.(*http.Transport)
	if t.addr == "" || !ok {
		return c.HTTP
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k := pinKey{tr, t.addr}
	p := c.pinned[k]
	if p == nil {
		p = tr.Clone()
		addr, dial := t.addr, tr.DialContext
		if dial == nil {
			dial = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		}
		p.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) { return dial(ctx, network, addr) }
		if c.pinned == nil {
			c.pinned = map[pinKey]*http.Transport{}
		}
		c.pinned[k] = p
	}
	return &http.Client{Transport: p, Timeout: c.HTTP.Timeout, CheckRedirect: c.HTTP.CheckRedirect, Jar: c.HTTP.Jar}
}

// SuspectFor is how long a controller that went silent or refused the connection is tried
// only after the others (or when all are suspect), so a paused controller costs one idle
// timeout per client, not one per request round.
const SuspectFor = 5 * time.Second

// suspect says whether t failed within SuspectFor while some other target did not.
func (c *Client) suspect(t target, all []target) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if !now.Before(c.down[t]) {
		return false
	}
	for _, o := range all {
		if !now.Before(c.down[o]) {
			return true
		}
	}
	return false // every one is suspect: try them all
}

func (c *Client) markSuspect(t target, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down == nil {
		c.down = map[target]time.Time{}
	}
	c.down[t] = time.Now().Add(d)
}

// errIdle ends an attempt whose controller went silent.
var errIdle = errors.New("no answer (not even a heartbeat)")

// send sends one request, retrying as the Client doc says. It returns the first answer that is
// not a 503 (or the last 503 when time is up). The answer's body must be read within
// AttemptIdle of each chunk and closed.
func (c *Client) send(ctx context.Context, method, path string, hdr map[string]string, body []byte) (*http.Response, string, error) {
	if c.err != nil {
		return nil, "", c.err
	}
	if c.baseErr != nil {
		return nil, "", c.baseErr
	}
	idle, retryFor := c.AttemptIdle, c.RetryFor
	if idle <= 0 {
		idle = DefaultAttemptIdle
	}
	if retryFor <= 0 {
		retryFor = DefaultRetryFor
	}
	c.mu.Lock()
	if len(c.Bases) == 0 {
		c.Bases = []string{c.Base}
	}
	if !slices.Contains(c.Bases, c.Base) { // Base set by hand
		c.Bases = []string{c.Base}
	}
	bases := slices.Clone(c.Bases)
	start := c.cur
	c.mu.Unlock()
	targets := c.targets(ctx, bases)
	start %= len(targets)
	deadline := time.Now().Add(retryFor)
	var errs []error
	var last503 *http.Response
	for i := 0; ; i++ {
		if nb, ncur, moved := c.repointed(bases); moved {
			// Repointed while this request was retrying (its controllers may all be gone):
			// the next attempt goes to the new ones, with a fresh retry window.
			bases, start, i = nb, ncur, 0
			targets = c.targets(ctx, bases)
			start %= len(targets)
			deadline = time.Now().Add(retryFor)
		}
		t := targets[(start+i)%len(targets)]
		if i > 0 && i%len(targets) == 0 {
			// Every controller failed once: wait a little before the next round. The cap is
			// what a failover may overshoot by (a new leader answers within a round's wait);
			// 1 s made a 2.2 s election a 5 s failover under load.
			wait := min(time.Duration(i/len(targets))*100*time.Millisecond, 300*time.Millisecond)
			if time.Now().Add(wait).After(deadline) {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			break
		}
		if c.suspect(t, targets) {
			continue // went silent or refused lately: the others first
		}
		resp, err := c.attempt(ctx, t, method, path, hdr, body, idle)
		if err == nil && resp.StatusCode != http.StatusServiceUnavailable {
			if last503 != nil {
				last503.Body.Close()
			}
			c.mu.Lock()
			if slices.Equal(bases, c.Bases) { // not repointed meanwhile
				c.cur, c.Base = (start+i)%len(targets), t.base
			}
			delete(c.down, t)
			c.mu.Unlock()
			return resp, t.base, nil
		}
		if err == nil {
			// 503: this controller did nothing (not ready, no quorum, no leader, busy).
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			resp.Body = io.NopCloser(bytes.NewReader(b))
			last503 = resp
			errs = append(errs, fmt.Errorf("controller %s: HTTP 503: %s", t, strings.TrimSpace(string(b))))
			continue
		}
		errs = append(errs, fmt.Errorf("controller %s: %w", t, explain(err)))
		if ctx.Err() != nil || !failoverError(err) {
			return nil, "", errors.Join(errs...)
		}
		c.markSuspect(t, SuspectFor)
	}
	if last503 != nil {
		return last503, last503.Request.URL.Scheme + "://" + last503.Request.URL.Host, nil
	}
	if len(errs) > 6 {
		errs = append(errs[:3], fmt.Errorf("(%d more attempts)", len(errs)-6), errs[len(errs)-3], errs[len(errs)-2], errs[len(errs)-1])
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	} else {
		errs = append(errs, fmt.Errorf("gave up after %v", retryFor))
	}
	return nil, "", errors.Join(errs...)
}

// attempt sends the request to one target, abandoning it when the controller sends nothing
// (no heartbeat, header or body bytes) for idle.
func (c *Client) attempt(ctx context.Context, t target, method, path string, hdr map[string]string, body []byte, idle time.Duration) (*http.Response, error) {
	actx, cancel := context.WithCancelCause(ctx)
	dog := time.AfterFunc(idle, func() { cancel(errIdle) })
	kick := func() { dog.Reset(idle) }
	actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{
		Got1xxResponse: func(int, textproto.MIMEHeader) error { kick(); return nil },
		WroteRequest:   func(httptrace.WroteRequestInfo) { kick() },
	})
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(actx, method, t.base+path, rd)
	if err != nil {
		dog.Stop()
		cancel(nil)
		return nil, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	req.Header.Set(HeartbeatHeader, HeartbeatInterval.String())
	resp, err := c.httpFor(t).Do(req)
	if err != nil {
		dog.Stop()
		if cause := context.Cause(actx); errors.Is(cause, errIdle) {
			err = fmt.Errorf("%w within %v", errIdle, idle)
		}
		cancel(nil)
		return nil, err
	}
	kick()
	resp.Body = &watchedBody{rc: resp.Body, kick: kick, done: func() { dog.Stop(); cancel(nil) }, ctx: actx, idle: idle}
	return resp, nil
}

// watchedBody keeps an attempt's watchdog running while its body is read.
type watchedBody struct {
	rc   io.ReadCloser
	kick func()
	done func()
	ctx  context.Context
	idle time.Duration
	once sync.Once
}

func (w *watchedBody) Read(p []byte) (int, error) {
	n, err := w.rc.Read(p)
	if n > 0 {
		w.kick()
	}
	if err != nil && err != io.EOF && errors.Is(context.Cause(w.ctx), errIdle) {
		err = fmt.Errorf("read answer: %w within %v", errIdle, w.idle)
	}
	return n, err
}

func (w *watchedBody) Close() error {
	err := w.rc.Close()
	w.once.Do(w.done)
	return err
}

func (c *Client) do(ctx context.Context, method, path string, hdr map[string]string, body io.Reader, out any) (*http.Response, error) {
	var b []byte
	if body != nil {
		var err error
		if b, err = io.ReadAll(body); err != nil {
			return nil, err
		}
	}
	resp, base, err := c.send(ctx, method, path, hdr, b)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err = io.ReadAll(resp.Body)
	if err != nil {
		return resp, fmt.Errorf("controller %s: read answer: %w", base, err)
	}
	if resp.StatusCode >= 400 {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(b, e) != nil || e.Message == "" {
			e.Message = fmt.Sprintf("controller answered HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
		}
		if resp.StatusCode == http.StatusForbidden && c.Token == "" && strings.HasPrefix(e.Message, "anonymous") {
			e.Message += NoTokenHint
		}
		return resp, e
	}
	if out != nil && resp.StatusCode != http.StatusNotModified && len(b) > 0 {
		if raw, ok := out.(*json.RawMessage); ok {
			*raw = append((*raw)[:0], b...)
			return resp, nil
		}
		if err := json.Unmarshal(b, out); err != nil {
			return resp, fmt.Errorf("controller %s%s: decode answer: %w", base, path, err)
		}
	}
	return resp, nil
}

// ApplyResult is the answer to apply, plan and delete.
type ApplyResult struct {
	DryRun   bool           `json:"dryRun"`
	Revision int64          `json:"revision"`
	Changes  []plan.Change  `json:"changes"`
	Counts   map[string]int `json:"counts"`
}

// ApplyOptions modify an apply.
type ApplyOptions struct {
	DryRun       bool
	Prune        bool
	BaseRevision int64
}

// Apply sends a YAML file; file names it in error messages.
func (c *Client) Apply(ctx context.Context, file string, data []byte, opt ApplyOptions) (*ApplyResult, error) {
	q := url.Values{}
	if opt.DryRun {
		q.Set("dryRun", "true")
	}
	if opt.Prune {
		q.Set("prune", "true")
	}
	if opt.BaseRevision > 0 {
		q.Set("baseRevision", strconv.FormatInt(opt.BaseRevision, 10))
	}
	var out ApplyResult
	_, err := c.do(ctx, http.MethodPost, "/v1/apply?"+q.Encode(), map[string]string{"Content-Type": "application/yaml", "X-Govcloud-File": file}, bytes.NewReader(data), &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Delete removes one object.
func (c *Client) Delete(ctx context.Context, kind, name string, dryRun bool) (*ApplyResult, error) {
	var out ApplyResult
	p := "/v1/objects/" + url.PathEscape(kind) + "/" + url.PathEscape(name)
	if dryRun {
		p += "?dryRun=true"
	}
	if _, err := c.do(ctx, http.MethodDelete, p, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Object is an object as the API shows it.
type Object struct {
	config.Object
	Name       string   `json:"name"`
	Department string   `json:"department,omitempty"`
	VIP        string   `json:"vip,omitempty"`
	Addresses  []string `json:"addresses,omitempty"`
	VLAN       int      `json:"vlan,omitempty"`
	Revision   int64    `json:"revision"`
}

// UnmarshalJSON decodes both the object and the convenience fields.
func (o *Object) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &o.Object); err != nil {
		return err
	}
	var extra struct {
		Name       string   `json:"name"`
		Department string   `json:"department"`
		VIP        string   `json:"vip"`
		Addresses  []string `json:"addresses"`
		VLAN       int      `json:"vlan"`
		Revision   int64    `json:"revision"`
	}
	if err := json.Unmarshal(b, &extra); err != nil {
		return err
	}
	o.Name, o.Department, o.VIP, o.Addresses, o.VLAN, o.Revision = extra.Name, extra.Department, extra.VIP, extra.Addresses, extra.VLAN, extra.Revision
	return nil
}

// ListRaw returns the JSON list of objects of kind ("" = all kinds).
func (c *Client) ListRaw(ctx context.Context, kind string) (json.RawMessage, error) {
	return c.ListDepartmentRaw(ctx, kind, "")
}

// ListDepartmentRaw is ListRaw restricted to one department's objects ("" = all).
func (c *Client) ListDepartmentRaw(ctx context.Context, kind, department string) (json.RawMessage, error) {
	var out json.RawMessage
	p := "/v1/objects"
	if kind != "" {
		p += "/" + url.PathEscape(kind)
	}
	if department != "" {
		p += "?department=" + url.QueryEscape(department)
	}
	_, err := c.do(ctx, http.MethodGet, p, nil, nil, &out)
	return out, err
}

// GetRaw returns one object as JSON.
func (c *Client) GetRaw(ctx context.Context, kind, name string) (json.RawMessage, error) {
	var out json.RawMessage
	_, err := c.do(ctx, http.MethodGet, "/v1/objects/"+url.PathEscape(kind)+"/"+url.PathEscape(name), nil, nil, &out)
	return out, err
}

// List returns the objects of kind.
func (c *Client) List(ctx context.Context, kind string) ([]Object, error) {
	raw, err := c.ListRaw(ctx, kind)
	if err != nil {
		return nil, err
	}
	var out []Object
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("decode %s list: %w", kind, err)
	}
	return out, nil
}

// Get returns one object.
func (c *Client) Get(ctx context.Context, kind, name string) (*Object, error) {
	raw, err := c.GetRaw(ctx, kind, name)
	if err != nil {
		return nil, err
	}
	var o Object
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, fmt.Errorf("decode %s %q: %w", kind, name, err)
	}
	return &o, nil
}

// Desired returns host's desired state once the state revision exceeds after, waiting up to
// timeout; it returns nil (and no error) when nothing changed in that time.
func (c *Client) Desired(ctx context.Context, host string, after int64, timeout time.Duration) (*desired.State, error) {
	var raw json.RawMessage
	p := fmt.Sprintf("/v1/hosts/%s/desired?after=%d&timeout=%s", url.PathEscape(host), after, timeout)
	resp, err := c.do(ctx, http.MethodGet, p, nil, nil, &raw)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNotModified {
		return nil, nil
	}
	st, err := desired.Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("host %q: %w", host, err)
	}
	return st, nil
}

// PutHostStatus reports an agent's status (any JSON-encodable value).
func (c *Client) PutHostStatus(ctx context.Context, host string, status any) error {
	return c.putStatus(ctx, host, "status", status)
}

// PutComputeStatus reports a compute agent's status, kept apart from the network agent's.
func (c *Client) PutComputeStatus(ctx context.Context, host string, status any) error {
	return c.putStatus(ctx, host, "compute-status", status)
}

func (c *Client) putStatus(ctx context.Context, host, kind string, status any) error {
	b, err := json.Marshal(status)
	if err != nil {
		return fmt.Errorf("encode %s of host %q: %w", kind, host, err)
	}
	_, err = c.do(ctx, http.MethodPut, "/v1/hosts/"+url.PathEscape(host)+"/"+kind, map[string]string{"Content-Type": "application/json"}, bytes.NewReader(b), nil)
	return err
}

// Status is the controller's summary.
type Status struct {
	ID     string `json:"id"`
	Leader struct {
		IsLeader bool   `json:"isLeader"`
		Leader   string `json:"leader"`
	} `json:"leader"`
	Revision int64                      `json:"revision"`
	Objects  map[string]int             `json:"objects"`
	Hosts    map[string]json.RawMessage `json:"hosts,omitempty"`
	Compute  map[string]json.RawMessage `json:"compute,omitempty"`
	Version  json.RawMessage            `json:"version,omitempty"` // the controller's build (internal/buildinfo.Info)
}

// Status returns the controller's summary.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var out Status
	if _, err := c.do(ctx, http.MethodGet, "/v1/status", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// TokenRequest asks for a token. TTL is a Go duration ("24h"); "" never expires.
type TokenRequest struct {
	Name       string `json:"name"`
	Role       string `json:"role"`
	Department string `json:"department,omitempty"`
	Host       string `json:"host,omitempty"`
	TTL        string `json:"ttl,omitempty"`
}

// CreateToken creates a token (admin only) and returns it.
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (string, error) {
	b, _ := json.Marshal(req)
	var out struct {
		Token string `json:"token"`
	}
	if _, err := c.do(ctx, http.MethodPost, "/v1/tokens", map[string]string{"Content-Type": "application/json"}, bytes.NewReader(b), &out); err != nil {
		return "", err
	}
	return out.Token, nil
}

// Audit returns the newest audit entries as JSON.
func (c *Client) Audit(ctx context.Context, limit int) (json.RawMessage, error) {
	var out json.RawMessage
	_, err := c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/audit?limit=%d", limit), nil, nil, &out)
	return out, err
}

// RevokeToken revokes every token named name (admin only).
func (c *Client) RevokeToken(ctx context.Context, name string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(name), nil, nil, nil)
	return err
}

// RevokeTokenID revokes the token with id ("tok_…", see `govcloud token list`; admin only).
func (c *Client) RevokeTokenID(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/tokens/id/"+url.PathEscape(id), nil, nil, nil)
	return err
}

// TokensRaw lists the grants as JSON (admin only).
func (c *Client) TokensRaw(ctx context.Context) (json.RawMessage, error) {
	var out json.RawMessage
	_, err := c.do(ctx, http.MethodGet, "/v1/tokens", nil, nil, &out)
	return out, err
}

// FailoverHTTP returns an HTTP client for code that builds its own requests to the
// controller (the usage reporters): whatever scheme and host a request names, it goes to
// c's controllers with c's credentials, failover and retries; only its path, query, method,
// headers and body are used.
func (c *Client) FailoverHTTP() *http.Client {
	return &http.Client{Transport: failoverTransport{c}}
}

type failoverTransport struct{ c *Client }

func (f failoverTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
	}
	hdr := map[string]string{}
	for k, v := range req.Header {
		if len(v) > 0 && k != "Authorization" {
			hdr[k] = v[0]
		}
	}
	resp, _, err := f.c.send(req.Context(), req.Method, req.URL.RequestURI(), hdr, body)
	return resp, err
}
