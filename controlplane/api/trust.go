package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/govcloud/govcloud/controlplane/pki"
	"github.com/govcloud/govcloud/controlplane/store"
)

// TrustOptions configure host certificates (docs/DESIGN.md "Trust (contract)").
type TrustOptions struct {
	CA          *pki.CA       // signs host certificates at join and renewal; nil: none issued
	CertTTL     time.Duration // lifetime of a host certificate (default 24h)
	MaxJoinTTL  time.Duration // longest a join token may live (default 24h)
	ForwardTLS  *tls.Config   // how a follower dials the leader's API (nil: plain HTTP)
	DefaultJoin time.Duration // a join token's lifetime when the request names none (default 15m)
}

// Defaults of TrustOptions.
const (
	DefaultCertTTL = 24 * time.Hour
	DefaultJoinTTL = 15 * time.Minute
	MaxJoinTTL     = 24 * time.Hour
	maxTrustBody   = 64 << 10
	certCacheTTL   = 2 * time.Second
)

type trustState struct {
	mu    sync.Mutex
	certs map[string]cachedCert
	fwd   *http.Client
}

type cachedCert struct {
	rec *store.CertRecord // nil: no record
	exp time.Time
}

func (t *TrustOptions) certTTL() time.Duration {
	if t.CertTTL > 0 {
		return t.CertTTL
	}
	return DefaultCertTTL
}

func (s *Server) forwardClient() *http.Client {
	s.trust.mu.Lock()
	defer s.trust.mu.Unlock()
	if s.trust.fwd == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = s.opt.Trust.ForwardTLS
		s.trust.fwd = &http.Client{Timeout: 5 * time.Minute, Transport: tr}
	}
	return s.trust.fwd
}

// certPrincipal maps a verified client certificate to the principal {role agent, host H}:
// the host is the certificate's subject (pki.Identity). A certificate of this controller's CA
// counts only while its issue record exists and is not revoked; one of another client CA
// (--client-ca) only while no revocation record names it. Expiry is checked by TLS.
func (s *Server) certPrincipal(ctx context.Context, r *http.Request) (*principal, *apiError) {
	chain := r.TLS.VerifiedChains[0]
	leaf := chain[0]
	role, host, err := pki.Identity(leaf)
	if err != nil {
		return nil, &apiError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: err.Error()}
	}
	if role != pki.RoleAgent {
		return nil, &apiError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: fmt.Sprintf("certificate %s: role %q: want %s", pki.SerialHex(leaf), role, pki.RoleAgent)}
	}
	serial := pki.SerialHex(leaf)
	rec, e := s.certRecord(ctx, serial)
	if e != nil {
		return nil, e
	}
	ours := s.opt.Trust.CA != nil && bytes.Equal(chain[len(chain)-1].Raw, s.opt.Trust.CA.Cert.Raw)
	switch {
	case rec == nil && ours:
		return nil, &apiError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: fmt.Sprintf("certificate %s of host %q: not issued by this controller", serial, host)}
	case rec != nil && !rec.Revoked.IsZero():
		return nil, &apiError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: fmt.Sprintf("certificate %s of host %q: revoked at %s", serial, host, rec.Revoked.Format(time.RFC3339))}
	case rec != nil && rec.Host != host:
		return nil, &apiError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: fmt.Sprintf("certificate %s: names host %q, issued for %q", serial, host, rec.Host)}
	}
	return &principal{Token: store.Token{Name: "cert:" + serial, ID: "cert:" + serial, Role: RoleAgent, Host: host}}, nil
}

func (s *Server) certRecord(ctx context.Context, serial string) (*store.CertRecord, *apiError) {
	s.trust.mu.Lock()
	c, ok := s.trust.certs[serial]
	s.trust.mu.Unlock()
	if ok && time.Now().Before(c.exp) {
		return c.rec, nil
	}
	rec, err := s.store.GetCert(ctx, serial)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: err.Error()}
	}
	s.trust.mu.Lock()
	if s.trust.certs == nil || len(s.trust.certs) > 10000 {
		s.trust.certs = map[string]cachedCert{}
	}
	s.trust.certs[serial] = cachedCert{rec: rec, exp: time.Now().Add(certCacheTTL)}
	s.trust.mu.Unlock()
	return rec, nil
}

func (s *Server) forgetCerts() {
	s.trust.mu.Lock()
	s.trust.certs = nil // this controller forgets at once; others within certCacheTTL
	s.trust.mu.Unlock()
}

// JoinTokenRequest asks for a join token (POST /v1/join-tokens, admin).
type JoinTokenRequest struct {
	Host string `json:"host"`
	Role string `json:"role"`          // agent
	TTL  string `json:"ttl,omitempty"` // Go duration, default 15m, at most 24h
}

// JoinTokenResponse carries a join token; it is shown once and never stored.
type JoinTokenResponse struct {
	Token   string    `json:"token"`
	Host    string    `json:"host"`
	Role    string    `json:"role"`
	Expires time.Time `json:"expires"`
}

// JoinRequest exchanges a join token for a certificate (POST /v1/join, no other credential);
// a renewal (POST /v1/certs/renew, with the current certificate) sends only the CSR.
type JoinRequest struct {
	Token string `json:"token,omitempty"`
	CSR   string `json:"csr"` // PEM CERTIFICATE REQUEST (RFC 2986); its subject is ignored
}

// CertResponse is a host certificate issued at join or renewal.
type CertResponse struct {
	Certificate string    `json:"certificate"` // PEM
	CA          string    `json:"ca"`          // PEM of the CA that signed it
	Serial      string    `json:"serial"`      // hex
	Host        string    `json:"host"`
	NotAfter    time.Time `json:"notAfter"`
}

// JoinTokenPrefix starts every join token.
const JoinTokenPrefix = "gcj_"

func newJoinToken() (token, hash string) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	token = JoinTokenPrefix + hex.EncodeToString(b)
	return token, HashToken(token)
}

func decodeBody(r *http.Request, v any) *apiError {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxTrustBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &apiError{Status: http.StatusBadRequest, Code: "bad_request", Message: "request body: " + err.Error()}
	}
	return nil
}

func (s *Server) trustRoutes(mux *http.ServeMux, route func(string, handler)) {
	// Joining needs no other credential than the join token in the body.
	mux.HandleFunc("POST /v1/join", func(w http.ResponseWriter, r *http.Request) {
		if e := s.handleJoin(w, r); e != nil {
			s.log.Warn("join refused", "remote", r.RemoteAddr, "err", e.Message)
			writeErr(w, e)
		}
	})
	route("POST /v1/join-tokens", s.handleJoinToken)
	route("POST /v1/certs/renew", s.handleRenew)
	route("GET /v1/certs", func(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
		if p.Role != RoleAdmin {
			return forbidden("%s may not list certificates (needs role admin)", p.who())
		}
		recs, err := s.store.Certs(r.Context())
		if err != nil {
			return internal(err)
		}
		writeJSON(w, http.StatusOK, recs)
		return nil
	})
	route("DELETE /v1/certs/{serial}", func(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
		return s.revokeCerts(w, r, p, strings.ToLower(r.PathValue("serial")), "")
	})
	route("DELETE /v1/hosts/{name}/certs", func(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
		return s.revokeCerts(w, r, p, "", r.PathValue("name"))
	})
}

func (s *Server) handleJoinToken(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
	if p.Role != RoleAdmin {
		return forbidden("%s may not create join tokens (needs role admin)", p.who())
	}
	if s.opt.Trust.CA == nil {
		return &apiError{Status: http.StatusNotImplemented, Code: "not_implemented", Message: "this controller issues no host certificates (it serves plain HTTP: --insecure-http)"}
	}
	var req JoinTokenRequest
	if e := decodeBody(r, &req); e != nil {
		return e
	}
	if req.Role == "" {
		req.Role = pki.RoleAgent
	}
	if req.Role != pki.RoleAgent {
		return &apiError{Status: http.StatusUnprocessableEntity, Code: "invalid", Message: fmt.Sprintf("join token: role %q: want %s", req.Role, pki.RoleAgent)}
	}
	if err := pki.CheckName(req.Host); err != nil {
		return &apiError{Status: http.StatusUnprocessableEntity, Code: "invalid", Message: fmt.Sprintf("join token: host %q: %v", req.Host, err)}
	}
	ttl := s.opt.Trust.DefaultJoin
	if ttl <= 0 {
		ttl = DefaultJoinTTL
	}
	maxTTL := s.opt.Trust.MaxJoinTTL
	if maxTTL <= 0 {
		maxTTL = MaxJoinTTL
	}
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > maxTTL {
			return &apiError{Status: http.StatusUnprocessableEntity, Code: "invalid", Message: fmt.Sprintf("join token for host %q: ttl %q: want a duration above 0 and up to %s", req.Host, req.TTL, maxTTL)}
		}
		ttl = d
	}
	tok, hash := newJoinToken()
	now := time.Now().UTC()
	jt := store.JoinToken{Host: req.Host, Role: req.Role, Created: now, Expires: now.Add(ttl), CreatedBy: p.Name}
	ae := p.audit("join-token")
	// The id the join's own audit entry will carry (join:<id>), so a join traces back to here.
	ae.Detail = map[string]any{"id": "join:" + store.TokenID(hash), "host": req.Host, "role": req.Role, "expires": jt.Expires}
	if err := s.store.PutJoinToken(r.Context(), hash, jt, ae); err != nil {
		return internal(err)
	}
	writeJSON(w, http.StatusCreated, JoinTokenResponse{Token: tok, Host: jt.Host, Role: jt.Role, Expires: jt.Expires})
	return nil
}

func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request) *apiError {
	ca := s.opt.Trust.CA
	if ca == nil {
		return &apiError{Status: http.StatusNotImplemented, Code: "not_implemented", Message: "this controller issues no host certificates (it serves plain HTTP: --insecure-http)"}
	}
	var req JoinRequest
	if e := decodeBody(r, &req); e != nil {
		return e
	}
	tok := strings.TrimSpace(req.Token)
	if !strings.HasPrefix(tok, JoinTokenPrefix) {
		return &apiError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "join: want a join token (" + JoinTokenPrefix + "...)"}
	}
	var out CertResponse
	rec, err := s.store.RedeemJoinToken(r.Context(), HashToken(tok), time.Now(), func(jt store.JoinToken) (store.CertRecord, store.AuditEntry, error) {
		certPEM, cert, err := ca.SignCSR([]byte(req.CSR), jt.Host, jt.Role, s.opt.Trust.certTTL())
		if err != nil {
			return store.CertRecord{}, store.AuditEntry{}, err
		}
		rec := certRecord(cert, jt.Host, jt.Role, "join")
		out = CertResponse{Certificate: string(certPEM), CA: string(ca.CertPEM), Serial: rec.Serial, Host: jt.Host, NotAfter: rec.NotAfter}
		ae := store.AuditEntry{Who: "join:" + jt.Host, Role: jt.Role, TokenID: "join:" + store.TokenID(HashToken(tok)), Remote: r.RemoteAddr, Action: "join",
			Detail: map[string]any{"host": jt.Host, "serial": rec.Serial, "notAfter": rec.NotAfter}}
		return rec, ae, nil
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return &apiError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "join: invalid join token"}
	case errors.Is(err, store.ErrJoinUsed), errors.Is(err, store.ErrJoinExpired):
		_ = s.store.AppendAudit(r.Context(), store.AuditEntry{Who: "join", Role: "anonymous", TokenID: "join:" + store.TokenID(HashToken(tok)), Remote: r.RemoteAddr,
			Action: "join-refused", Result: "refused", Error: err.Error()})
		return &apiError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "join: " + err.Error()}
	case err != nil && strings.HasPrefix(err.Error(), "certificate request"):
		return &apiError{Status: http.StatusBadRequest, Code: "bad_request", Message: "join: " + err.Error()}
	case err != nil:
		return internal(err)
	}
	s.log.Info("host joined", "host", rec.Host, "serial", rec.Serial, "notAfter", rec.NotAfter, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// handleRenew issues a new certificate for the host of the client certificate presented (a
// bearer token cannot renew: the new certificate is bound to the one it replaces).
func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
	ca := s.opt.Trust.CA
	if ca == nil {
		return &apiError{Status: http.StatusNotImplemented, Code: "not_implemented", Message: "this controller issues no host certificates"}
	}
	if r.Header.Get("Authorization") != "" || r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || !strings.HasPrefix(p.Name, "cert:") {
		return forbidden("%s may not renew: present the host certificate to renew, without a bearer token", p.who())
	}
	var req JoinRequest
	if e := decodeBody(r, &req); e != nil {
		return e
	}
	certPEM, cert, err := ca.SignCSR([]byte(req.CSR), p.Host, pki.RoleAgent, s.opt.Trust.certTTL())
	if err != nil {
		return &apiError{Status: http.StatusBadRequest, Code: "bad_request", Message: fmt.Sprintf("renew for host %q: %v", p.Host, err)}
	}
	rec := certRecord(cert, p.Host, pki.RoleAgent, "renew")
	ae := p.audit("renew-cert")
	ae.Detail = map[string]any{"host": p.Host, "serial": rec.Serial, "replaces": strings.TrimPrefix(p.Name, "cert:"), "notAfter": rec.NotAfter}
	if err := s.store.PutCert(r.Context(), rec, ae); err != nil {
		return internal(err)
	}
	s.log.Info("host certificate renewed", "host", p.Host, "serial", rec.Serial, "notAfter", rec.NotAfter)
	writeJSON(w, http.StatusCreated, CertResponse{Certificate: string(certPEM), CA: string(ca.CertPEM), Serial: rec.Serial, Host: p.Host, NotAfter: rec.NotAfter})
	return nil
}

func (s *Server) revokeCerts(w http.ResponseWriter, r *http.Request, p *principal, serial, host string) *apiError {
	if p.Role != RoleAdmin {
		return forbidden("%s may not revoke certificates (needs role admin)", p.who())
	}
	ae := p.audit("revoke-cert")
	ae.Detail = map[string]any{"serial": serial, "host": host}
	revoked, err := s.store.RevokeCerts(r.Context(), serial, host, time.Now(), ae)
	if err != nil {
		return internal(err)
	}
	s.forgetCerts()
	if len(revoked) == 0 {
		what := fmt.Sprintf("certificate %q", serial)
		if host != "" {
			what = fmt.Sprintf("certificates of host %q", host)
		}
		return &apiError{Status: http.StatusNotFound, Code: "not_found", Message: what + ": none unrevoked found"}
	}
	writeJSON(w, http.StatusOK, map[string]any{"revoked": revoked})
	return nil
}

func certRecord(cert *x509.Certificate, host, role, via string) store.CertRecord {
	return store.CertRecord{Serial: pki.SerialHex(cert), Host: host, Role: role, NotBefore: cert.NotBefore.UTC(),
		NotAfter: cert.NotAfter.UTC(), Issued: time.Now().UTC(), Via: via}
}
