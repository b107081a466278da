// Package pki is govcloud's certificate authority: the controller's CA, its server
// certificates, host client certificates issued from a certificate signing request, and the
// TLS configurations built on them. Everything is crypto/x509 and crypto/tls from the standard
// library; keys are ECDSA P-256, files PEM (RFC 7468), certificates X.509 v3 (RFC 5280).
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Roles a client certificate can carry (in its subject's OrganizationalUnit and its URI SAN).
const (
	RoleAgent = "agent" // a host's network or compute agent; the host is the subject's CommonName
)

// URIScheme names govcloud identities in URI SANs: govcloud://ROLE/HOST.
const URIScheme = "govcloud"

// Files under a controller's data directory.
const (
	CACertFile     = "ca.crt"     // the CA certificate, PEM, 0644 (public: clients verify with it)
	CAKeyFile      = "ca.key"     // the CA private key, PEM, 0600
	ServerCertFile = "server.crt" // the API's certificate, PEM, 0644
	ServerKeyFile  = "server.key" // its key, PEM, 0600
)

// CA is a certificate authority that can sign.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA makes a self-signed CA named cn, valid for validity from now.
func NewCA(cn string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("CA %q: generate key: %w", cn, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"govcloud"}},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("CA %q: self-sign: %w", cn, err)
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: keyPEM}, nil
}

// ParseCA reads a CA from PEM: a certificate with IsCA and the private key matching it.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("CA certificate %q: not a CA (basicConstraints CA:FALSE)", cert.Subject.CommonName)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	if !publicKeyEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("CA %q: key does not match the certificate", cert.Subject.CommonName)
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// LoadCA reads dir/ca.crt and dir/ca.key.
func LoadCA(dir string) (*CA, error) {
	c, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, err
	}
	k, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, err
	}
	ca, err := ParseCA(c, k)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return ca, nil
}

// Save writes dir/ca.crt (0644) and dir/ca.key (0600).
func (ca *CA) Save(dir string) error {
	if err := WriteFile(filepath.Join(dir, CAKeyFile), ca.KeyPEM, 0o600); err != nil {
		return err
	}
	return WriteFile(filepath.Join(dir, CACertFile), ca.CertPEM, 0o644)
}

// Pool is a cert pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// ServerCert issues a TLS server certificate for sans (IP addresses or DNS names; the first
// is also the CommonName), valid for validity.
func (ca *CA) ServerCert(sans []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	return ca.servingCert(sans, validity, x509.ExtKeyUsageServerAuth)
}

// PeerCert is ServerCert for both ends of a connection (server and client authentication):
// etcd peers and etcd's own client certificates.
func (ca *CA) PeerCert(sans []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	return ca.servingCert(sans, validity, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
}

func (ca *CA) servingCert(sans []string, validity time.Duration, usage ...x509.ExtKeyUsage) (certPEM, keyPEM []byte, err error) {
	if len(sans) == 0 {
		return nil, nil, errors.New("server certificate: no subject alternative names")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("server certificate: generate key: %w", err)
	}
	tmpl, err := ca.template(sans[0], validity)
	if err != nil {
		return nil, nil, err
	}
	tmpl.ExtKeyUsage = usage
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if s != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	return ca.sign(tmpl, &key.PublicKey, key)
}

// ClientCert issues a client certificate for host in role with a fresh key (tests and
// external etcd's client certificates; agents use SignCSR so their key never leaves them).
func (ca *CA) ClientCert(host, role string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("client certificate %s/%s: generate key: %w", role, host, err)
	}
	tmpl, err := ca.clientTemplate(host, role, validity)
	if err != nil {
		return nil, nil, err
	}
	return ca.sign(tmpl, &key.PublicKey, key)
}

// SignCSR issues a client certificate for host in role to the key of csrPEM (PEM
// "CERTIFICATE REQUEST", RFC 2986). The subject and SANs come from host and role only, never
// from the request. It returns the certificate as PEM and parsed.
func (ca *CA) SignCSR(csrPEM []byte, host, role string, validity time.Duration) ([]byte, *x509.Certificate, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, nil, errors.New("certificate request: want PEM \"CERTIFICATE REQUEST\"")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, fmt.Errorf("certificate request: signature: %w", err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, nil, fmt.Errorf("certificate request: ECDSA curve %s: want P-256 or P-384", k.Curve.Params().Name)
		}
	default:
		return nil, nil, fmt.Errorf("certificate request: key type %T: want ECDSA P-256", csr.PublicKey)
	}
	tmpl, err := ca.clientTemplate(host, role, validity)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate for %s/%s: %w", role, host, err)
	}
	cert, _ := x509.ParseCertificate(der)
	return pemBlock("CERTIFICATE", der), cert, nil
}

func (ca *CA) clientTemplate(host, role string, validity time.Duration) (*x509.Certificate, error) {
	if err := CheckName(host); err != nil {
		return nil, fmt.Errorf("client certificate: host %q: %w", host, err)
	}
	if err := CheckName(role); err != nil {
		return nil, fmt.Errorf("client certificate: role %q: %w", role, err)
	}
	tmpl, err := ca.template(host, validity)
	if err != nil {
		return nil, err
	}
	tmpl.Subject.OrganizationalUnit = []string{role}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	tmpl.DNSNames = []string{host}
	tmpl.URIs = []*url.URL{IdentityURI(role, host)}
	return tmpl, nil
}

// IdentityURI is the URI SAN of a client certificate: govcloud://ROLE/HOST.
func IdentityURI(role, host string) *url.URL {
	return &url.URL{Scheme: URIScheme, Host: role, Path: "/" + host}
}

// Identity reads the role and host a client certificate was issued for: the URI SAN
// govcloud://ROLE/HOST, which must agree with the subject (CN = HOST, OU = ROLE).
func Identity(cert *x509.Certificate) (role, host string, err error) {
	for _, u := range cert.URIs {
		if u.Scheme != URIScheme {
			continue
		}
		role, host = u.Host, strings.TrimPrefix(u.Path, "/")
		if host == "" || role == "" || host != cert.Subject.CommonName || !slices.Contains(cert.Subject.OrganizationalUnit, role) {
			return "", "", fmt.Errorf("certificate %s: identity %s does not match its subject %q", SerialHex(cert), u, cert.Subject.String())
		}
		return role, host, nil
	}
	return "", "", fmt.Errorf("certificate %s (%q): no %s:// identity", SerialHex(cert), cert.Subject.String(), URIScheme)
}

// CheckName accepts what host names and roles are made of: letters, digits, '-', '.', '_'.
func CheckName(s string) error {
	if s == "" || len(s) > 253 {
		return errors.New("want 1 to 253 characters")
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_') {
			return fmt.Errorf("character %q not allowed (want letters, digits, '-', '.', '_')", r)
		}
	}
	return nil
}

func (ca *CA) template(cn string, validity time.Duration) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	// Backdated a little for clocks slightly behind, by at most a tenth of the lifetime so
	// that renewal at 2/3 of it stays ahead of now.
	backdate := min(time.Minute, max(validity/10, 0))
	return &x509.Certificate{
		SerialNumber:   serial,
		Subject:        pkix.Name{CommonName: cn, Organization: []string{"govcloud"}},
		NotBefore:      now.Add(-backdate),
		NotAfter:       notAfter,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		AuthorityKeyId: ca.Cert.SubjectKeyId,
	}, nil
}

func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) ([]byte, []byte, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), keyPEM, nil
}

// NewCSR makes a private key and a certificate signing request for host (the controller sets
// the subject it signs; the request only proves possession of the key).
func NewCSR(host string) (csrPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate request for %q: generate key: %w", host, err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: host}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate request for %q: %w", host, err)
	}
	keyPEM, err = EncodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE REQUEST", der), keyPEM, nil
}

// ParseCert reads the first PEM certificate.
func ParseCert(certPEM []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, certPEM = pem.Decode(certPEM)
		if b == nil {
			return nil, errors.New("no PEM CERTIFICATE block")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

// ParseKey reads a PEM private key (PKCS #8, EC or PKCS #1).
func ParseKey(keyPEM []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, keyPEM = pem.Decode(keyPEM)
		if b == nil {
			return nil, errors.New("no PEM private key block")
		}
		var k any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("private key: %w", err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("private key of type %T cannot sign", k)
		}
		return s, nil
	}
}

// EncodeKey writes a private key as PEM PKCS #8.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pemBlock("PRIVATE KEY", der), nil
}

// SerialHex is a certificate's serial number in lower-case hex: how certificates are named in
// the API, the audit log and revocation.
func SerialHex(c *x509.Certificate) string { return hex.EncodeToString(c.SerialNumber.Bytes()) }

// WriteFile writes data to path with mode perm atomically (a temporary file renamed over it),
// so a reader never sees half a key.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil // positive, at most 16 bytes (RFC 5280 §4.1.2.2)
}

func keyID(pub *ecdsa.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	h := sha256.Sum256(der)
	return h[:20]
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	da, err1 := x509.MarshalPKIXPublicKey(a)
	db, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(da, db)
}
