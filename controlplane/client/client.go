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
	"net/http"
	"net/url"
	"os"
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

// Client talks to a controller: the first of Bases that answers (a connection that fails
// moves on to the next URL).
type Client struct {
	Base  string   // the URL in use (one of Bases)
	Bases []string // every controller URL, in order of preference
	Token string   // bearer token; empty with a client certificate (Identity) or anonymous reads
	HTTP  *http.Client
	err   error // a configuration error (an unreadable GOVCLOUD_CA) every request reports
	// baseErr is a controller URL that cannot be one (no scheme, e.g. GOVCLOUD_API=127.0.0.1:8480),
	// reported by every request instead of net/url's "first path segment cannot contain colon".
	baseErr error

	mu  sync.Mutex
	cur int // index into Bases of the URL that answered last
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
	c.HTTP = &http.Client{Transport: NewTransport(tc), Timeout: 5 * time.Minute}
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

// send sends one request to the first controller URL that takes a connection, starting with
// the one that answered last; only a failure to connect (no answer at all) moves on.
func (c *Client) send(ctx context.Context, method, path string, hdr map[string]string, body []byte) (*http.Response, string, error) {
	if c.err != nil {
		return nil, "", c.err
	}
	if c.baseErr != nil {
		return nil, "", c.baseErr
	}
	c.mu.Lock()
	if len(c.Bases) == 0 {
		c.Bases = []string{c.Base}
	}
	start := c.cur % len(c.Bases)
	if c.Base != c.Bases[start] { // Base set by hand
		c.Bases, start = []string{c.Base}, 0
	}
	c.mu.Unlock()
	var errs []error
	for i := range c.Bases {
		base := c.Bases[(start+i)%len(c.Bases)]
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
		if err != nil {
			return nil, base, err
		}
		if c.Token != "" {
			req.Header.Set("Authorization", "Bearer "+c.Token)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.HTTP.Do(req)
		if err == nil {
			c.mu.Lock()
			c.cur, c.Base = (start+i)%len(c.Bases), base
			c.mu.Unlock()
			return resp, base, nil
		}
		errs = append(errs, fmt.Errorf("controller %s: %w", base, explain(err)))
		if ctx.Err() != nil || !connectFailure(err) {
			break
		}
	}
	return nil, "", errors.Join(errs...)
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
