package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"
)

// DefaultCAFiles are where a controller on this machine keeps its CA certificate: the default
// --data-dir, then the lab's. Every one readable is trusted when GOVCLOUD_CA is unset.
var DefaultCAFiles = []string{"/var/lib/govcloud/ca.crt", "/var/lib/govcloud-lab/controller/ca.crt"}

// TLSConfig is the TLS configuration clients verify the controller with: the CA certificates
// (PEM) in caFile, else in GOVCLOUD_CA, else those of DefaultCAFiles that are readable, else
// the system's roots. TLS 1.2 at least.
func TLSConfig(caFile string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		caFile = os.Getenv("GOVCLOUD_CA")
	}
	if caFile != "" {
		pool, err := readPool(caFile)
		if err != nil {
			return nil, fmt.Errorf("CA file %s (GOVCLOUD_CA or --ca): %w", caFile, err)
		}
		tc.RootCAs = pool
		return tc, nil
	}
	var pool *x509.CertPool
	for _, f := range DefaultCAFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if pool == nil {
			pool = x509.NewCertPool()
		}
		pool.AppendCertsFromPEM(b)
	}
	tc.RootCAs = pool // nil: the system's roots
	return tc, nil
}

func readPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, errors.New("no PEM certificate in it")
	}
	return pool, nil
}

// NewTransport is an HTTP transport with tc (nil: Go's defaults) for https:// URLs.
func NewTransport(tc *tls.Config) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	// HTTP/1.1 over TLS, as over plain HTTP: parallel requests on parallel connections rather
	// than multiplexed on one HTTP/2 connection (which raised read p99 by about a third).
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	tr.MaxIdleConnsPerHost = 16
	tr.TLSHandshakeTimeout = 10 * time.Second // the attempt's idle watchdog cuts it shorter
	tr.DialContext = (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 15 * time.Second}).DialContext
	return tr
}

// SetCAFile makes the client verify controllers with the CA certificates in file only.
func (c *Client) SetCAFile(file string) error {
	tc, err := TLSConfig(file)
	if err != nil {
		return err
	}
	c.err = nil
	c.HTTP = &http.Client{Transport: NewTransport(tc), Timeout: c.HTTP.Timeout}
	c.mu.Lock()
	c.pinned = nil
	c.mu.Unlock()
	return nil
}

// failoverError says whether err means the controller could not be reached, went silent or
// dropped the connection, so the request may go to another controller. A request that
// reached a controller before it went away may have been done there: applies are declarative
// (sending one again changes nothing more), and commits are guarded by the leader's lease, so
// a controller that was cut off does not commit it later.
func failoverError(err error) bool {
	var op *net.OpError
	var ne net.Error
	switch {
	case errors.Is(err, errIdle), errors.As(err, &op) && op.Op == "dial":
		return true
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ETIMEDOUT):
		return true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	case errors.As(err, &ne) && ne.Timeout():
		return true
	}
	return false
}

// explain adds what to do to TLS verification failures.
func explain(err error) error {
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	switch {
	case errors.As(err, &ua):
		return fmt.Errorf("%w (the controller's certificate is not signed by a CA this client trusts: set GOVCLOUD_CA to the controller's DATA-DIR/ca.crt)", err)
	case errors.As(err, &hn):
		return fmt.Errorf("%w (add the name to the controller's certificate with --tls-san)", err)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("%w (the controller serves plain HTTP: use an http:// URL)", err)
	}
	return err
}
