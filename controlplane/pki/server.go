package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// DefaultSANs are the names a controller's server certificate carries for listen
// (host:port): the listen address unless it is a wildcard, then every address of this machine's
// interfaces; 127.0.0.1, ::1, localhost, the hostname, and extra (--tls-san).
func DefaultSANs(listen string, extra []string) []string {
	var out []string
	add := func(s string) {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		host = listen
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() || host == "" {
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && !n.IP.IsLinkLocalUnicast() {
					add(n.IP.String())
				}
			}
		}
	} else {
		add(host)
	}
	add("127.0.0.1")
	add("::1")
	add("localhost")
	if h, err := os.Hostname(); err == nil {
		add(h)
	}
	for _, s := range extra {
		add(s)
	}
	return out
}

// EnsureServerCert returns the server certificate in dir (server.crt, server.key), making a
// new one signed by ca when there is none, it was signed by another CA, it lacks one of sans,
// or less than a third of its lifetime is left.
func EnsureServerCert(dir string, ca *CA, sans []string, validity time.Duration) (tls.Certificate, error) {
	cf, kf := filepath.Join(dir, ServerCertFile), filepath.Join(dir, ServerKeyFile)
	if kp, err := tls.LoadX509KeyPair(cf, kf); err == nil && serverCertFits(kp, ca, sans) {
		return kp, nil
	}
	certPEM, keyPEM, err := ca.ServerCert(sans, validity)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := WriteFile(kf, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := WriteFile(cf, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

func serverCertFits(kp tls.Certificate, ca *CA, sans []string) bool {
	leaf := kp.Leaf
	if leaf == nil || leaf.CheckSignatureFrom(ca.Cert) != nil || !bytes.Equal(leaf.RawIssuer, ca.Cert.RawSubject) {
		return false
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	if time.Until(leaf.NotAfter) < life/3 {
		return false
	}
	for _, s := range sans {
		if leaf.VerifyHostname(s) != nil {
			return false
		}
	}
	return true
}

// ServerTLS is the API's TLS configuration: cert serves, and a client certificate, when one
// is presented, must chain to clientCAs (bearer tokens still authenticate clients without one).
// TLS 1.2 is the minimum.
func ServerTLS(cert tls.Certificate, clientCAs *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    clientCAs,
		NextProtos:   []string{"h2", "http/1.1"},
	}
}

// ReadPool reads every PEM certificate of the files into one pool.
func ReadPool(files ...string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s: no PEM certificate", f)
		}
	}
	return pool, nil
}
