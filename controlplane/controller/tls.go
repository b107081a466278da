package controller

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/govcloud/govcloud/controlplane/pki"
	"github.com/govcloud/govcloud/controlplane/store"
)

// Lifetimes of what the controller makes on first start.
const (
	caValidity     = 10 * 365 * 24 * time.Hour
	serverValidity = 365 * 24 * time.Hour
)

// TLSOptions configure the API's HTTPS (docs/DESIGN.md "Trust (contract)").
type TLSOptions struct {
	InsecureHTTP bool          // serve plain HTTP (no certificates at all); logged as a warning
	CertFile     string        // --tls-cert: the API's certificate (default: DATA-DIR/server.crt, made and renewed from the CA)
	KeyFile      string        // --tls-key
	ClientCAFile string        // --client-ca: more CAs whose client certificates are accepted (the controller's own CA always is)
	SANs         []string      // --tls-san: more names for the made server certificate
	CertTTL      time.Duration // lifetime of host certificates issued at join and renewal (default 24h)
}

// trust is what serving HTTPS needs.
type trust struct {
	ca      *pki.CA
	server  *tls.Config
	forward *tls.Config
}

// setupTrust loads the controllers' CA (from etcd, where the first controller of a store puts
// it, and mirrored to DATA-DIR/ca.crt and ca.key), makes or loads the server certificate and
// builds the server's and the leader-forwarding client's TLS configurations.
func setupTrust(ctx context.Context, log *slog.Logger, st *store.Store, dataDir, listen string, opt TLSOptions) (*trust, error) {
	ca, err := loadCA(ctx, log, st, dataDir)
	if err != nil {
		return nil, err
	}
	var cert tls.Certificate
	if opt.CertFile != "" || opt.KeyFile != "" {
		if opt.CertFile == "" || opt.KeyFile == "" {
			return nil, fmt.Errorf("--tls-cert %q and --tls-key %q: give both or neither", opt.CertFile, opt.KeyFile)
		}
		if cert, err = tls.LoadX509KeyPair(opt.CertFile, opt.KeyFile); err != nil {
			return nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %w", opt.CertFile, opt.KeyFile, err)
		}
	} else {
		sans := pki.DefaultSANs(listen, opt.SANs)
		if cert, err = pki.EnsureServerCert(dataDir, ca, sans, serverValidity); err != nil {
			return nil, fmt.Errorf("server certificate in %s: %w", dataDir, err)
		}
		log.Info("API server certificate", "file", filepath.Join(dataDir, pki.ServerCertFile), "sans", sans, "notAfter", cert.Leaf.NotAfter.Format(time.RFC3339))
	}
	clientCAs := ca.Pool()
	if opt.ClientCAFile != "" {
		b, err := os.ReadFile(opt.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("--client-ca: %w", err)
		}
		if !clientCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--client-ca %s: no PEM certificate", opt.ClientCAFile)
		}
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	roots.AddCert(ca.Cert)
	return &trust{
		ca:      ca,
		server:  pki.ServerTLS(cert, clientCAs),
		forward: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots},
	}, nil
}

// loadCA returns the CA every controller of this store shares: the one in etcd; else the one
// in dataDir (published to etcd); else a new one. A CA in dataDir that differs from etcd's is
// replaced by etcd's, with a warning. It is written to dataDir/ca.crt (0644) and ca.key (0600).
func loadCA(ctx context.Context, log *slog.Logger, st *store.Store, dataDir string) (*pki.CA, error) {
	stored, err := st.GetCA(ctx)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	local, lerr := pki.LoadCA(dataDir)
	if lerr != nil && !errors.Is(lerr, os.ErrNotExist) {
		return nil, fmt.Errorf("CA in %s: %w", dataDir, lerr)
	}
	onDisk := local != nil
	if errors.Is(err, store.ErrNotFound) {
		if local == nil {
			if local, err = pki.NewCA("govcloud controller CA", caValidity); err != nil {
				return nil, err
			}
			log.Info("made a new CA", "file", filepath.Join(dataDir, pki.CACertFile))
		}
		stored, _, err = st.PutCAIfNone(ctx, store.StoredCA{CertPEM: local.CertPEM, KeyPEM: local.KeyPEM})
		if err != nil {
			return nil, err
		}
	}
	ca, err := pki.ParseCA(stored.CertPEM, stored.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA stored in etcd: %w", err)
	}
	if onDisk && !bytes.Equal(local.Cert.Raw, ca.Cert.Raw) {
		log.Warn("the CA in the data dir differs from the one the controllers share in etcd; using etcd's", "dir", dataDir)
	}
	if !onDisk || !bytes.Equal(local.Cert.Raw, ca.Cert.Raw) {
		if err := ca.Save(dataDir); err != nil {
			return nil, err
		}
	}
	return ca, nil
}
