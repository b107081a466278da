package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Keys of the trust records, under the store's prefix:
//
//	pki/ca             the controllers' shared CA (certificate and key PEM): every controller of
//	                   one etcd serves and verifies with the same CA
//	jointokens/SHA256  JoinToken JSON (the join token itself is never stored)
//	certs/SERIAL       CertRecord JSON: every host certificate issued, revocation included
func (s *Store) keyCA() string         { return s.prefix + "pki/ca" }
func (s *Store) keyJoinTokens() string { return s.prefix + "jointokens/" }
func (s *Store) keyCerts() string      { return s.prefix + "certs/" }

// Errors of join tokens.
var (
	ErrJoinUsed    = errors.New("join token already used")
	ErrJoinExpired = errors.New("join token expired")
)

// StoredCA is the controllers' CA as PEM.
type StoredCA struct {
	CertPEM []byte `json:"cert"`
	KeyPEM  []byte `json:"key"`
}

// PutCAIfNone stores ca unless a CA is stored already; it returns the CA in effect (the one
// stored before, or ca) and whether ca was stored.
func (s *Store) PutCAIfNone(ctx context.Context, ca StoredCA) (StoredCA, bool, error) {
	b, _ := json.Marshal(ca)
	tr, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(s.keyCA()), "=", 0)).
		Then(clientv3.OpPut(s.keyCA(), string(b))).Else(clientv3.OpGet(s.keyCA())).Commit()
	if err != nil {
		return StoredCA{}, false, fmt.Errorf("store CA: %w", err)
	}
	if tr.Succeeded {
		return ca, true, nil
	}
	kvs := tr.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return StoredCA{}, false, fmt.Errorf("store CA: %s vanished", s.keyCA())
	}
	var got StoredCA
	if err := json.Unmarshal(kvs[0].Value, &got); err != nil {
		return StoredCA{}, false, fmt.Errorf("stored CA %s: %w", s.keyCA(), err)
	}
	return got, false, nil
}

// GetCA returns the stored CA, or ErrNotFound.
func (s *Store) GetCA(ctx context.Context) (StoredCA, error) {
	r, err := s.cli.Get(ctx, s.keyCA())
	if err != nil {
		return StoredCA{}, fmt.Errorf("read CA: %w", err)
	}
	if len(r.Kvs) == 0 {
		return StoredCA{}, ErrNotFound
	}
	var ca StoredCA
	if err := json.Unmarshal(r.Kvs[0].Value, &ca); err != nil {
		return StoredCA{}, fmt.Errorf("stored CA %s: %w", s.keyCA(), err)
	}
	return ca, nil
}

// JoinToken is a single-use grant to obtain one host certificate.
type JoinToken struct {
	Host      string    `json:"host"`
	Role      string    `json:"role"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires"`
	CreatedBy string    `json:"createdBy"`
	Used      time.Time `json:"used,omitzero"`
	Serial    string    `json:"serial,omitempty"` // the certificate it was exchanged for
}

// PutJoinToken stores a join token's grant under its hash, with its audit entry.
func (s *Store) PutJoinToken(ctx context.Context, hash string, t JoinToken, audit AuditEntry) error {
	b, _ := json.Marshal(t)
	if _, err := s.cli.Txn(ctx).Then(clientv3.OpPut(s.keyJoinTokens()+hash, string(b)), s.auditPut(audit)).Commit(); err != nil {
		return fmt.Errorf("store join token for host %q: %w", t.Host, err)
	}
	return nil
}

// RedeemJoinToken exchanges a join token for a certificate exactly once: issue is called with
// the grant and returns the record of the certificate it made; the token is marked used and
// the record and audit entry stored in one transaction that fails if anyone redeemed the token
// in between. Errors: ErrNotFound, ErrJoinExpired, ErrJoinUsed, or issue's.
func (s *Store) RedeemJoinToken(ctx context.Context, hash string, now time.Time, issue func(JoinToken) (CertRecord, AuditEntry, error)) (CertRecord, error) {
	key := s.keyJoinTokens() + hash
	r, err := s.cli.Get(ctx, key)
	if err != nil {
		return CertRecord{}, fmt.Errorf("read join token: %w", err)
	}
	if len(r.Kvs) == 0 {
		return CertRecord{}, ErrNotFound
	}
	var t JoinToken
	if err := json.Unmarshal(r.Kvs[0].Value, &t); err != nil {
		return CertRecord{}, fmt.Errorf("stored join token: %w", err)
	}
	if !t.Used.IsZero() {
		return CertRecord{}, fmt.Errorf("%w (host %q, at %s, certificate %s)", ErrJoinUsed, t.Host, t.Used.Format(time.RFC3339), t.Serial)
	}
	if !now.Before(t.Expires) {
		return CertRecord{}, fmt.Errorf("%w (host %q, at %s)", ErrJoinExpired, t.Host, t.Expires.Format(time.RFC3339))
	}
	rec, audit, err := issue(t)
	if err != nil {
		return CertRecord{}, err
	}
	t.Used, t.Serial = now.UTC(), rec.Serial
	tb, _ := json.Marshal(t)
	cb, _ := json.Marshal(rec)
	tr, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", r.Kvs[0].ModRevision)).
		Then(clientv3.OpPut(key, string(tb)), clientv3.OpPut(s.keyCerts()+rec.Serial, string(cb)), s.auditPut(audit)).Commit()
	if err != nil {
		return CertRecord{}, fmt.Errorf("redeem join token for host %q: %w", t.Host, err)
	}
	if !tr.Succeeded {
		return CertRecord{}, fmt.Errorf("%w (host %q, concurrently)", ErrJoinUsed, t.Host)
	}
	return rec, nil
}

// CertRecord is a host certificate the controller issued (or revoked).
type CertRecord struct {
	Serial    string    `json:"serial"` // lower-case hex
	Host      string    `json:"host"`
	Role      string    `json:"role"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	Issued    time.Time `json:"issued"`
	Via       string    `json:"via"` // join, renew
	Revoked   time.Time `json:"revoked,omitzero"`
}

// PutCert stores the record of a certificate issued, with its audit entry.
func (s *Store) PutCert(ctx context.Context, rec CertRecord, audit AuditEntry) error {
	b, _ := json.Marshal(rec)
	if _, err := s.cli.Txn(ctx).Then(clientv3.OpPut(s.keyCerts()+rec.Serial, string(b)), s.auditPut(audit)).Commit(); err != nil {
		return fmt.Errorf("store certificate %s of host %q: %w", rec.Serial, rec.Host, err)
	}
	return nil
}

// GetCert returns the record of the certificate with serial (hex), or ErrNotFound.
func (s *Store) GetCert(ctx context.Context, serial string) (*CertRecord, error) {
	r, err := s.cli.Get(ctx, s.keyCerts()+serial)
	if err != nil {
		return nil, fmt.Errorf("read certificate %s: %w", serial, err)
	}
	if len(r.Kvs) == 0 {
		return nil, ErrNotFound
	}
	var rec CertRecord
	if err := json.Unmarshal(r.Kvs[0].Value, &rec); err != nil {
		return nil, fmt.Errorf("stored certificate %s: %w", serial, err)
	}
	return &rec, nil
}

// Certs lists every certificate record.
func (s *Store) Certs(ctx context.Context) ([]CertRecord, error) {
	r, err := s.cli.Get(ctx, s.keyCerts(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read certificates: %w", err)
	}
	out := make([]CertRecord, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		var rec CertRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return nil, fmt.Errorf("stored certificate %s: %w", kv.Key, err)
		}
		out = append(out, rec)
	}
	return out, nil
}

// RevokeCerts marks revoked every certificate whose serial is serial or whose host is host
// (either may be empty, not both) and not revoked yet, with one audit entry; it returns the
// serials revoked.
func (s *Store) RevokeCerts(ctx context.Context, serial, host string, now time.Time, audit AuditEntry) ([]string, error) {
	if serial == "" && host == "" {
		return nil, errors.New("revoke certificates: name a serial or a host")
	}
	recs, err := s.Certs(ctx)
	if err != nil {
		return nil, err
	}
	var ops []clientv3.Op
	var out []string
	for _, rec := range recs {
		if !rec.Revoked.IsZero() || (serial != "" && rec.Serial != serial) || (host != "" && rec.Host != host) {
			continue
		}
		rec.Revoked = now.UTC()
		b, _ := json.Marshal(rec)
		ops = append(ops, clientv3.OpPut(s.keyCerts()+rec.Serial, string(b)))
		out = append(out, rec.Serial)
	}
	if len(ops) == 0 {
		return nil, nil
	}
	if audit.Detail == nil {
		audit.Detail = map[string]any{}
	}
	audit.Detail["serials"] = out
	ops = append(ops, s.auditPut(audit))
	if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return nil, fmt.Errorf("revoke certificates (serial %q, host %q): %w", serial, host, err)
	}
	return out, nil
}

// EtcdTLS is the TLS configuration of a client of an external etcd: caFile verifies etcd's
// server certificate (empty: the system's roots), certFile and keyFile are the client
// certificate etcd's --client-cert-auth requires (both or neither). It returns nil when all
// three are empty.
func EtcdTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--etcd-cacert %s: no PEM certificate", caFile)
		}
		tc.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("--etcd-cert %q and --etcd-key %q: give both or neither", certFile, keyFile)
	}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cert %s / --etcd-key %s: %w", certFile, keyFile, err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, nil
}
