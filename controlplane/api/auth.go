package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/govcloud/govcloud/controlplane/config"
	"github.com/govcloud/govcloud/controlplane/store"
)

// Roles.
const (
	RoleAdmin      = "admin"      // everything
	RoleNetwork    = "network"    // network resources: departments, pools, segments, services, hosts, security policies
	RoleDepartment = "department" // read-only, its own department's resources and usage
	RoleAgent      = "agent"      // its own host's desired state and status
	roleAnonymous  = "anonymous"  // reads without a token when the controller allows it (lab)
)

// networkKinds are what the network role may write.
var networkKinds = map[string]bool{config.KindDepartment: true, config.KindAddressPool: true, config.KindSegment: true,
	config.KindService: true, config.KindHost: true, config.KindSecurityPolicy: true}

// NewToken returns a fresh random token and the hash stored for it.
func NewToken() (token, hash string) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	token = "gc_" + hex.EncodeToString(b)
	return token, HashToken(token)
}

// HashToken is how tokens are looked up: only the SHA-256 is stored.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

type principal struct {
	store.Token
	remote string // the client's address (audit)
}

// audit is an audit entry of p's write.
func (p *principal) audit(action string) store.AuditEntry {
	return store.AuditEntry{Who: p.Name, Role: p.Role, TokenID: p.ID, Remote: p.remote, Action: action}
}

func (p *principal) who() string { return p.Name + " (" + p.Role + ")" }

// canRead says whether p may read o.
func (p *principal) canRead(o *config.Object) bool {
	switch p.Role {
	case RoleAdmin, RoleNetwork, roleAnonymous:
		return true
	case RoleDepartment:
		if ap, ok := o.Spec.(*config.AddressPool); ok {
			return ap.Allows(p.Department)
		}
		return o.Department() == p.Department
	}
	return false
}

// canWrite says whether p may create, change or delete objects of kind.
func (p *principal) canWrite(kind string) bool {
	return p.Role == RoleAdmin || (p.Role == RoleNetwork && networkKinds[kind])
}

type tokenCache struct {
	mu sync.Mutex
	m  map[string]cachedToken
}

type cachedToken struct {
	t   *store.Token
	exp time.Time
}

func (s *Server) authenticate(ctx context.Context, r *http.Request) (*principal, *apiError) {
	p, e := s.authenticateToken(ctx, r)
	if p != nil {
		p.remote = r.RemoteAddr
	}
	return p, e
}

func (s *Server) authenticateToken(ctx context.Context, r *http.Request) (*principal, *apiError) {
	h := r.Header.Get("Authorization")
	if h == "" && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return s.certPrincipal(ctx, r) // a host's client certificate (trust.go)
	}
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if h == "" || !ok || tok == "" {
		if s.opt.AnonymousRead && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			return &principal{Token: store.Token{Name: "anonymous", Role: roleAnonymous}}, nil
		}
		if h == "" {
			return nil, &apiError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "missing bearer token (set GOVCLOUD_TOKEN)"}
		}
		return nil, &apiError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "malformed Authorization header: want 'Bearer TOKEN'"}
	}
	hash := HashToken(strings.TrimSpace(tok))
	s.tokens.mu.Lock()
	c, ok := s.tokens.m[hash]
	s.tokens.mu.Unlock()
	if ok && time.Now().Before(c.exp) {
		if c.t == nil {
			return nil, &apiError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "invalid token"}
		}
		if c.t.Expired(time.Now()) {
			return nil, expiredToken(c.t)
		}
		return &principal{Token: *c.t}, nil
	}
	t, err := s.store.GetToken(ctx, hash)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		if e := internal(err); e.Status == http.StatusServiceUnavailable {
			e.Message = "token lookup: " + e.Message
			return nil, e
		}
		return nil, &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "token lookup: " + err.Error() + "; nothing was done"}
	}
	s.tokens.mu.Lock()
	if len(s.tokens.m) > 10000 {
		s.tokens.m = map[string]cachedToken{}
	}
	s.tokens.m[hash] = cachedToken{t: t, exp: time.Now().Add(2 * time.Second)}
	s.tokens.mu.Unlock()
	if t == nil {
		return nil, &apiError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "invalid token"}
	}
	if t.Expired(time.Now()) {
		return nil, expiredToken(t)
	}
	return &principal{Token: *t}, nil
}

func expiredToken(t *store.Token) *apiError {
	return &apiError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: fmt.Sprintf("token %s expired at %s", t.ID, t.Expires.UTC().Format(time.RFC3339))}
}

// TokenRequest asks for a new token. TTL is a Go duration ("24h"); "" never expires.
type TokenRequest struct {
	Name       string `json:"name"`
	Role       string `json:"role"`
	Department string `json:"department,omitempty"`
	Host       string `json:"host,omitempty"`
	TTL        string `json:"ttl,omitempty"`
}

// MaxTokenTTL bounds a token's lifetime when one is asked for.
const MaxTokenTTL = 5 * 366 * 24 * time.Hour

// checkLabel refuses a token's name, department or host that is empty when required, longer
// than 128 bytes, not UTF-8, or holds a control character or an invisible or reordering one
// (format characters such as U+202E, U+200B; line and paragraph separators): names reach the
// audit log, logs and terminals, where such characters forge or hide text.
func checkLabel(field, v string) error {
	switch {
	case len(v) > 128:
		return fmt.Errorf("token %s %q: longer than 128 bytes", field, v[:128]+"...")
	case !utf8.ValidString(v):
		return fmt.Errorf("token %s %q: not UTF-8", field, v)
	case strings.ContainsFunc(v, unicode.IsControl):
		return fmt.Errorf("token %s %q: control characters are not allowed", field, v)
	case strings.ContainsFunc(v, invisible):
		return fmt.Errorf("token %s %q: invisible or reordering characters (format, line or paragraph separators) are not allowed", field, v)
	}
	return nil
}

// TokenResponse carries a new token; it is shown once and never stored.
type TokenResponse struct {
	Token string      `json:"token"`
	Grant store.Token `json:"grant"`
}

func validateTokenRequest(req TokenRequest) error {
	for _, f := range []struct{ name, v string }{{"name", req.Name}, {"department", req.Department}, {"host", req.Host}} {
		if err := checkLabel(f.name, f.v); err != nil {
			return err
		}
	}
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > MaxTokenTTL {
			return fmt.Errorf("token %q: ttl %q: want a positive duration up to %s, e.g. 24h", req.Name, req.TTL, MaxTokenTTL)
		}
	}
	switch req.Role {
	case RoleAdmin, RoleNetwork:
		if req.Department != "" || req.Host != "" {
			return fmt.Errorf("token %q: role %s takes no department or host", req.Name, req.Role)
		}
	case RoleDepartment:
		if req.Department == "" {
			return fmt.Errorf("token %q: role department needs a department", req.Name)
		}
	case RoleAgent:
		if req.Host == "" {
			return fmt.Errorf("token %q: role agent needs a host", req.Name)
		}
	default:
		return fmt.Errorf("token %q: role %q: want admin, network, department or agent", req.Name, req.Role)
	}
	if req.Name == "" {
		return errors.New("token: name required")
	}
	return nil
}

// invisible reports a character that shows nothing or reorders text: format characters (U+200B,
// U+202E...), line and paragraph separators, and the other default-ignorable ones (Hangul
// fillers U+115F, U+3164...).
func invisible(r rune) bool {
	return unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp, unicode.Other_Default_Ignorable_Code_Point)
}
