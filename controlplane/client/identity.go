package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/govcloud/govcloud/controlplane/pki"
)

// Files of a host's identity under its state directory (0700).
const (
	HostCertFile = "host.crt" // the host's client certificate, PEM (0600)
	HostKeyFile  = "host.key" // its private key, PEM (0600); it never leaves the host
)

// Identity is a host's client certificate (docs/DESIGN.md "Trust (contract)"): obtained once
// with a join token, kept in Dir, renewed before it expires. Its GetClientCertificate always
// presents the newest one, so a renewal needs no restart.
type Identity struct {
	Dir  string
	Host string

	mu   sync.Mutex
	cert *tls.Certificate
}

// CertResponse is what the controller answers at join and renewal.
type CertResponse struct {
	Certificate string    `json:"certificate"`
	CA          string    `json:"ca"`
	Serial      string    `json:"serial"`
	Host        string    `json:"host"`
	NotAfter    time.Time `json:"notAfter"`
}

// LoadIdentity reads host's certificate from dir. It fails with os.ErrNotExist when there is
// none, and when the one there is expired or names another host.
func LoadIdentity(dir, host string) (*Identity, error) {
	kp, err := tls.LoadX509KeyPair(filepath.Join(dir, HostCertFile), filepath.Join(dir, HostKeyFile))
	if err != nil {
		return nil, err
	}
	role, h, err := pki.Identity(kp.Leaf)
	if err != nil {
		return nil, err
	}
	if h != host || role != pki.RoleAgent {
		return nil, fmt.Errorf("certificate in %s is for %s %q, not agent %q: %w", dir, role, h, host, os.ErrNotExist)
	}
	if time.Now().After(kp.Leaf.NotAfter) {
		return nil, fmt.Errorf("certificate in %s expired at %s: %w", dir, kp.Leaf.NotAfter.Format(time.RFC3339), os.ErrNotExist)
	}
	return &Identity{Dir: dir, Host: host, cert: &kp}, nil
}

// Join exchanges a join token for host's certificate at the controller c names (POST
// /v1/join; c needs no other credential), stores it in dir and returns it.
func Join(ctx context.Context, c *Client, dir, host, token string) (*Identity, error) {
	id := &Identity{Dir: dir, Host: host}
	if err := id.obtain(ctx, c, "/v1/join", token); err != nil {
		return nil, fmt.Errorf("join host %q: %w", host, err)
	}
	return id, nil
}

// Leaf is the current certificate.
func (id *Identity) Leaf() *x509.Certificate {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.cert.Leaf
}

// GetClientCertificate is tls.Config's: the current certificate.
func (id *Identity) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.cert, nil
}

// Use makes c authenticate with this identity (and no bearer token).
func (id *Identity) Use(c *Client) {
	tr, ok := c.HTTP.Transport.(*http.Transport)
	if !ok || tr == nil {
		tr = NewTransport(nil)
	} else {
		tr = tr.Clone()
	}
	tc := tr.TLSClientConfig
	if tc == nil {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
	} else {
		tc = tc.Clone()
	}
	tc.GetClientCertificate = id.GetClientCertificate
	tr.TLSClientConfig = tc
	c.HTTP = &http.Client{Transport: tr, Timeout: c.HTTP.Timeout}
	c.Token = ""
}

// Renew replaces the certificate with a new one for a new key (POST /v1/certs/renew, c
// presenting the current certificate through Use).
func (id *Identity) Renew(ctx context.Context, c *Client) error {
	if err := id.obtain(ctx, c, "/v1/certs/renew", ""); err != nil {
		return fmt.Errorf("renew certificate of host %q: %w", id.Host, err)
	}
	if tr, ok := c.HTTP.Transport.(*http.Transport); ok {
		tr.CloseIdleConnections() // new connections present the new certificate
	}
	return nil
}

// RenewAt is when a certificate is renewed: at two thirds of its lifetime.
func RenewAt(cert *x509.Certificate) time.Time {
	return cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore) * 2 / 3)
}

// RunRenewal renews the certificate at RenewAt until ctx ends, retrying a failed renewal
// every retry (default 30 s) while the certificate lasts.
func (id *Identity) RunRenewal(ctx context.Context, c *Client, log *slog.Logger, retry time.Duration) {
	if retry <= 0 {
		retry = 30 * time.Second
	}
	for {
		wait := max(time.Until(RenewAt(id.Leaf())), time.Second) // never a tight loop, whatever the clock says
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if err := id.Renew(ctx, c); err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn("certificate renewal failed; retrying", "host", id.Host, "notAfter", id.Leaf().NotAfter, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
			continue
		}
		log.Info("certificate renewed", "host", id.Host, "serial", pki.SerialHex(id.Leaf()), "notAfter", id.Leaf().NotAfter)
	}
}

func (id *Identity) obtain(ctx context.Context, c *Client, path, token string) error {
	csr, key, err := pki.NewCSR(id.Host)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]string{"token": token, "csr": string(csr)})
	if token == "" {
		body, _ = json.Marshal(map[string]string{"csr": string(csr)})
	}
	var out CertResponse
	if _, err := c.do(ctx, http.MethodPost, path, map[string]string{"Content-Type": "application/json"}, bytes.NewReader(body), &out); err != nil {
		return err
	}
	kp, err := tls.X509KeyPair([]byte(out.Certificate), key)
	if err != nil {
		return fmt.Errorf("certificate from the controller: %w", err)
	}
	role, h, err := pki.Identity(kp.Leaf)
	if err != nil {
		return err
	}
	if h != id.Host || role != pki.RoleAgent {
		return fmt.Errorf("controller issued a certificate for %s %q, not agent %q (was the join token made for another host?)", role, h, id.Host)
	}
	if err := os.MkdirAll(id.Dir, 0o700); err != nil {
		return fmt.Errorf("state dir %s: %w", id.Dir, err)
	}
	if err := pki.WriteFile(filepath.Join(id.Dir, HostKeyFile), key, 0o600); err != nil {
		return err
	}
	if err := pki.WriteFile(filepath.Join(id.Dir, HostCertFile), []byte(out.Certificate), 0o600); err != nil {
		return err
	}
	id.mu.Lock()
	id.cert = &kp
	id.mu.Unlock()
	return nil
}

// JoinTokenRequest asks for a join token (admin).
type JoinTokenRequest struct {
	Host string `json:"host"`
	Role string `json:"role,omitempty"` // agent
	TTL  string `json:"ttl,omitempty"`  // Go duration; default 15m
}

// JoinTokenResponse is a new join token (shown once).
type JoinTokenResponse struct {
	Token   string    `json:"token"`
	Host    string    `json:"host"`
	Role    string    `json:"role"`
	Expires time.Time `json:"expires"`
}

// CreateJoinToken makes a single-use join token for a host (admin only).
func (c *Client) CreateJoinToken(ctx context.Context, req JoinTokenRequest) (*JoinTokenResponse, error) {
	b, _ := json.Marshal(req)
	var out JoinTokenResponse
	if _, err := c.do(ctx, http.MethodPost, "/v1/join-tokens", map[string]string{"Content-Type": "application/json"}, bytes.NewReader(b), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CertsRaw lists the host certificates issued, as JSON (admin only).
func (c *Client) CertsRaw(ctx context.Context) (json.RawMessage, error) {
	var out json.RawMessage
	_, err := c.do(ctx, http.MethodGet, "/v1/certs", nil, nil, &out)
	return out, err
}

// RevokeCert revokes the certificate with serial (hex), or with host set every certificate of
// that host (admin only); it returns the serials revoked.
func (c *Client) RevokeCert(ctx context.Context, serial, host string) ([]string, error) {
	p := "/v1/certs/" + url.PathEscape(serial)
	if host != "" {
		p = "/v1/hosts/" + url.PathEscape(host) + "/certs"
	} else if serial == "" {
		return nil, errors.New("revoke: name a serial or a host")
	}
	var out struct {
		Revoked []string `json:"revoked"`
	}
	_, err := c.do(ctx, http.MethodDelete, p, nil, nil, &out)
	return out.Revoked, err
}

// Whoami returns the principal the controller sees, as JSON (name, role, department, host).
func (c *Client) Whoami(ctx context.Context) (json.RawMessage, error) {
	var out json.RawMessage
	_, err := c.do(ctx, http.MethodGet, "/v1/whoami", nil, nil, &out)
	return out, err
}
