package controller_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/apitest"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/controller"
	"github.com/govcloud/govcloud/controlplane/pki"
	"github.com/govcloud/govcloud/internal/httpserve"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type ctrl struct {
	dir, addr, url, token string
	out                   *bytes.Buffer
}

// startTLS runs a controller in this process (embedded etcd, HTTPS by default) until the
// test ends.
func startTLS(t *testing.T, opt controller.Options) *ctrl {
	t.Helper()
	if opt.DataDir == "" {
		opt.DataDir = t.TempDir()
	}
	opt.Listen, opt.NoFsync = "127.0.0.1:0", true
	ready := make(chan string, 1)
	opt.Ready = func(a string) { ready <- a }
	var out bytes.Buffer
	opt.Out = &out
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- controller.Run(ctx, quiet, opt) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("controller did not stop within 20s")
		}
	})
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("controller: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("controller not ready after 60s")
	}
	tok, err := os.ReadFile(filepath.Join(opt.DataDir, controller.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	scheme := "https://"
	if opt.TLS.InsecureHTTP {
		scheme = "http://"
	}
	return &ctrl{dir: opt.DataDir, addr: addr, url: scheme + addr, token: strings.TrimSpace(string(tok)), out: &out}
}

func (c *ctrl) client(t *testing.T, token string) *client.Client {
	t.Helper()
	cl := client.New(c.url, token)
	if err := cl.SetCAFile(filepath.Join(c.dir, pki.CACertFile)); err != nil {
		t.Fatal(err)
	}
	return cl
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestHTTPSByDefault: the first start makes a CA and a server certificate, the API answers
// only TLS, verified with that CA and no other, and the admin token is never printed.
func TestHTTPSByDefault(t *testing.T) {
	c := startTLS(t, controller.Options{TLS: controller.TLSOptions{SANs: []string{"api.govcloud.test"}}})
	for f, want := range map[string]os.FileMode{pki.CACertFile: 0o644, pki.CAKeyFile: 0o600, pki.ServerCertFile: 0o644, pki.ServerKeyFile: 0o600, controller.TokenFile: 0o600} {
		if got := mode(t, filepath.Join(c.dir, f)); got != want {
			t.Errorf("%s: mode %v, want %v", f, got, want)
		}
	}
	if mode(t, c.dir) != 0o700 {
		t.Errorf("data dir mode %v, want 0700", mode(t, c.dir))
	}
	if strings.Contains(c.out.String(), c.token) || !strings.Contains(c.out.String(), filepath.Join(c.dir, controller.TokenFile)) {
		t.Errorf("start printed the admin token, or not its file: %q", c.out)
	}
	scert, _ := os.ReadFile(filepath.Join(c.dir, pki.ServerCertFile))
	leaf, err := pki.ParseCert(scert)
	if err != nil {
		t.Fatal(err)
	}
	for _, san := range []string{"127.0.0.1", "::1", "localhost", "api.govcloud.test"} {
		if err := leaf.VerifyHostname(san); err != nil {
			t.Errorf("server certificate lacks SAN %s: %v", san, err)
		}
	}
	ctx := context.Background()

	// Plain HTTP reaches no handler: Go's TLS server answers 400 and nothing else.
	req, _ := http.NewRequest(http.MethodGet, "http://"+c.addr+"/v1/status", nil)
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTPS server") || strings.Contains(string(body), "revision") {
		t.Errorf("plain HTTP: HTTP %d %q, want 400 and no API answer", resp.StatusCode, body)
	}
	if curl, err := exec.LookPath("curl"); err == nil {
		out, err := exec.Command(curl, "-sS", "--fail", "--max-time", "5", "http://"+c.addr+"/v1/status").CombinedOutput()
		if err == nil {
			t.Errorf("curl http:// succeeded: %s", out)
		}
		out, err = exec.Command(curl, "-sS", "--fail", "--max-time", "5", "--cacert", filepath.Join(c.dir, pki.CACertFile),
			"-H", "Authorization: Bearer "+c.token, "https://"+c.addr+"/v1/status").CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"revision"`) {
			t.Errorf("curl https:// with the CA: %v %s", err, out)
		}
	} else {
		t.Error("curl not installed: run 'make deps'")
	}

	// HTTPS with the CA: bearer tokens work.
	if _, err := c.client(t, c.token).Status(ctx); err != nil {
		t.Fatalf("HTTPS with the controller's CA: %v", err)
	}
	// Several URLs: the first refuses connections, the next answers.
	multi := c.client(t, c.token)
	multi.SetBase("https://127.0.0.1:1," + c.url)
	if _, err := multi.Status(ctx); err != nil || multi.Base != c.url {
		t.Errorf("failover to the second URL: %v (base %s)", err, multi.Base)
	}
	// A wrong CA, and the system's roots, refuse the server.
	other, err := pki.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wrong := filepath.Join(t.TempDir(), "wrong-ca.crt")
	_ = os.WriteFile(wrong, other.CertPEM, 0o644)
	wc := client.New(c.url, c.token)
	if err := wc.SetCAFile(wrong); err != nil {
		t.Fatal(err)
	}
	var ua x509.UnknownAuthorityError
	if _, err := wc.Status(ctx); !errors.As(err, &ua) {
		t.Errorf("wrong CA: %v, want unknown authority", err)
	}
	sys := &http.Client{Timeout: 5 * time.Second}
	if _, err := sys.Get(c.url + "/healthz"); err == nil {
		t.Error("system roots accepted the controller's private CA")
	}
	// GOVCLOUD_CA is how the CLI finds the CA.
	t.Setenv("GOVCLOUD_CA", filepath.Join(c.dir, pki.CACertFile))
	if _, err := client.New(c.url, c.token).Status(ctx); err != nil {
		t.Errorf("GOVCLOUD_CA: %v", err)
	}
	t.Setenv("GOVCLOUD_CA", wrong)
	if _, err := client.New(c.url, c.token).Status(ctx); !errors.As(err, &ua) {
		t.Errorf("GOVCLOUD_CA naming a wrong CA: %v, want unknown authority", err)
	}
}

// TestInsecureHTTP: --insecure-http serves plain HTTP and issues no certificates.
func TestInsecureHTTP(t *testing.T) {
	c := startTLS(t, controller.Options{TLS: controller.TLSOptions{InsecureHTTP: true}})
	cl := client.New(c.url, c.token)
	if _, err := cl.Status(context.Background()); err != nil {
		t.Fatalf("plain HTTP with --insecure-http: %v", err)
	}
	if _, err := os.Stat(filepath.Join(c.dir, pki.CAKeyFile)); err == nil {
		t.Error("--insecure-http made a CA")
	}
	if _, err := cl.CreateJoinToken(context.Background(), client.JoinTokenRequest{Host: "host1"}); err == nil || !strings.Contains(err.Error(), "no host certificates") {
		t.Errorf("join token without TLS: %v", err)
	}
}

type auditEntry struct {
	Who    string         `json:"who"`
	Action string         `json:"action"`
	Detail map[string]any `json:"detail"`
}

func audit(t *testing.T, admin *client.Client) []auditEntry {
	t.Helper()
	raw, err := admin.Audit(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []auditEntry
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func countAction(es []auditEntry, action string) int {
	n := 0
	for _, e := range es {
		if e.Action == action {
			n++
		}
	}
	return n
}

// TestHostJoinRenewRevoke: a host joins once with a single-use join token, acts only as
// itself, renews its certificate before expiry, and a revoked, expired or unrecorded
// certificate is refused.
func TestHostJoinRenewRevoke(t *testing.T) {
	const ttl = 6 * time.Second // X.509 times have whole seconds: room for the steps before renewal starts
	c := startTLS(t, controller.Options{TLS: controller.TLSOptions{CertTTL: ttl}})
	ctx := context.Background()
	admin := c.client(t, c.token)
	if _, err := admin.Apply(ctx, "base.yaml", []byte(apitest.Base), client.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	jt, err := admin.CreateJoinToken(ctx, client.JoinTokenRequest{Host: "host1", TTL: "1m"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(jt.Token, "gcj_") || time.Until(jt.Expires) > time.Minute+time.Second {
		t.Errorf("join token %q expires %v", jt.Token, jt.Expires)
	}
	// Refused join tokens: made by a non-admin, with a TTL above the bound, for a bad host name.
	for name, tc := range map[string]struct {
		cl  *client.Client
		req client.JoinTokenRequest
	}{
		"anonymous":     {c.client(t, ""), client.JoinTokenRequest{Host: "host1"}},
		"ttl above 24h": {admin, client.JoinTokenRequest{Host: "host1", TTL: "25h"}},
		"host name":     {admin, client.JoinTokenRequest{Host: "host1/../x"}},
		"role":          {admin, client.JoinTokenRequest{Host: "host1", Role: "admin"}},
	} {
		if _, err := tc.cl.CreateJoinToken(ctx, tc.req); err == nil {
			t.Errorf("join token %s: accepted", name)
		}
	}

	dir1 := t.TempDir()
	id, err := client.Join(ctx, c.client(t, ""), dir1, "host1", jt.Token)
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	for _, f := range []string{client.HostCertFile, client.HostKeyFile} {
		if m := mode(t, filepath.Join(dir1, f)); m != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, m)
		}
	}
	if _, err := client.Join(ctx, c.client(t, ""), t.TempDir(), "host1", jt.Token); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("second use of a join token: %v, want refused (already used)", err)
	}
	short, err := admin.CreateJoinToken(ctx, client.JoinTokenRequest{Host: "host2", TTL: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if _, err := client.Join(ctx, c.client(t, ""), t.TempDir(), "host2", short.Token); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired join token: %v, want refused (expired)", err)
	}
	if _, err := client.Join(ctx, c.client(t, ""), t.TempDir(), "host2", "gcj_00"); err == nil || !strings.Contains(err.Error(), "invalid join token") {
		t.Errorf("unknown join token: %v", err)
	}
	// A join token for host2 cannot make a host1 certificate: the controller names the host.
	jt2, _ := admin.CreateJoinToken(ctx, client.JoinTokenRequest{Host: "host2"})
	if _, err := client.Join(ctx, c.client(t, ""), t.TempDir(), "host1", jt2.Token); err == nil || !strings.Contains(err.Error(), `not agent "host1"`) {
		t.Errorf("host1 joining with host2's token: %v", err)
	}
	if a := audit(t, admin); countAction(a, "join") != 2 || countAction(a, "join-refused") != 2 || countAction(a, "join-token") != 3 {
		t.Errorf("audit: %d join, %d join-refused, %d join-token entries; want 2, 2, 3", countAction(a, "join"), countAction(a, "join-refused"), countAction(a, "join-token"))
	}

	// The certificate is the principal {agent, host1}: its own host, nothing else.
	h1 := c.client(t, "")
	id.Use(h1)
	var who struct{ Name, Role, Host string }
	raw, err := h1.Whoami(ctx)
	if err != nil || json.Unmarshal(raw, &who) != nil || who.Role != "agent" || who.Host != "host1" || !strings.HasPrefix(who.Name, "cert:") {
		t.Fatalf("whoami with host1's certificate: %v %s", err, raw)
	}
	if d, err := h1.Desired(ctx, "host1", 0, time.Second); err != nil || d == nil {
		t.Errorf("host1 reads its desired state: %v", err)
	}
	if err := h1.PutHostStatus(ctx, "host1", map[string]any{"ready": true}); err != nil {
		t.Errorf("host1 writes its status: %v", err)
	}
	var ce *client.Error
	if _, err := h1.Desired(ctx, "host2", 0, time.Second); !errors.As(err, &ce) || ce.Status != http.StatusForbidden {
		t.Errorf("host1's certificate reading host2's desired state: %v, want 403", err)
	}
	if err := h1.PutHostStatus(ctx, "host2", map[string]any{"ready": false}); !errors.As(err, &ce) || ce.Status != http.StatusForbidden {
		t.Errorf("host1's certificate writing host2's status: %v, want 403", err)
	}
	if _, err := h1.Apply(ctx, "x.yaml", []byte(apitest.Base), client.ApplyOptions{}); !errors.As(err, &ce) || ce.Status != http.StatusForbidden {
		t.Errorf("host1's certificate applying: %v, want 403", err)
	}

	// Renewal at 2/3 of the lifetime: a new certificate, on disk and presented, before expiry.
	first := id.Leaf()
	rctx, stop := context.WithCancel(ctx)
	renewed := make(chan struct{})
	go func() { id.RunRenewal(rctx, h1, quiet, 200*time.Millisecond); close(renewed) }()
	deadline := time.Now().Add(ttl + 2*time.Second)
	for pki.SerialHex(id.Leaf()) == pki.SerialHex(first) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	second := id.Leaf()
	if pki.SerialHex(second) == pki.SerialHex(first) {
		t.Fatal("certificate not renewed within its lifetime")
	}
	if now := time.Now(); now.After(first.NotAfter) {
		t.Errorf("renewed only after expiry (%v > %v)", now, first.NotAfter)
	}
	onDisk, _ := os.ReadFile(filepath.Join(dir1, client.HostCertFile))
	if l, err := pki.ParseCert(onDisk); err != nil || pki.SerialHex(l) != pki.SerialHex(second) {
		t.Errorf("renewed certificate not stored in %s", dir1)
	}
	// Past the first certificate's expiry the host still works, with the renewed one.
	time.Sleep(time.Until(first.NotAfter) + 200*time.Millisecond)
	if _, err := h1.Desired(ctx, "host1", 0, time.Second); err != nil {
		t.Errorf("host1 after its first certificate expired: %v", err)
	}
	stop()
	<-renewed
	if a := audit(t, admin); countAction(a, "renew-cert") < 1 {
		t.Error("renewal not audited")
	}

	// An expired certificate is refused by TLS, whatever the records say.
	ca, err := pki.LoadCA(c.dir)
	if err != nil {
		t.Fatal(err)
	}
	present := func(certPEM, keyPEM []byte) *client.Client {
		kp, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		cl := c.client(t, "")
		cl.HTTP.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{kp}
		return cl
	}
	cp, kp, err := ca.ClientCert("host1", pki.RoleAgent, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Signed by the CA but never issued through join or renewal: no record, refused.
	if _, err := present(cp, kp).Desired(ctx, "host1", 0, time.Second); !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized || !strings.Contains(ce.Message, "not issued") {
		t.Errorf("unrecorded certificate: %v, want 401 not issued", err)
	}
	time.Sleep(1200 * time.Millisecond)
	if _, err := present(cp, kp).Desired(ctx, "host1", 0, time.Second); err == nil || errors.As(err, &ce) {
		t.Errorf("expired certificate: %v, want a TLS failure", err)
	}

	// Revocation: every certificate of host1, at once on this controller.
	revoked, err := admin.RevokeCert(ctx, "", "host1")
	if err != nil || len(revoked) < 2 {
		t.Fatalf("revoke host1: %v %v", revoked, err)
	}
	h1.HTTP.Transport.(*http.Transport).CloseIdleConnections()
	if _, err := h1.Desired(ctx, "host1", 0, time.Second); !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized || !strings.Contains(ce.Message, "revoked") {
		t.Errorf("revoked certificate: %v, want 401 revoked", err)
	}
	if err := id.Renew(ctx, h1); err == nil {
		t.Error("a revoked certificate renewed itself")
	}
	// Bearer tokens cannot renew (a renewal is bound to the certificate it replaces).
	agentTok, err := admin.CreateToken(ctx, client.TokenRequest{Name: "a1", Role: "agent", Host: "host1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := id.Renew(ctx, c.client(t, agentTok)); err == nil {
		t.Error("a bearer token renewed a certificate")
	}
}

// TestConnectionBounds: idle connections from one address cannot use up the API (issue 14
// §4): past the per-client cap they are refused at once, the rest are cut after the header
// timeout, and a client at another address gets in all along.
func TestConnectionBounds(t *testing.T) {
	c := startTLS(t, controller.Options{Limits: httpserve.Limits{PerClient: 8, Total: 100, ReadHeader: 500 * time.Millisecond}})
	var idle []net.Conn
	for range 8 {
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		idle = append(idle, conn)
	}
	time.Sleep(100 * time.Millisecond)
	// The ninth from 127.0.0.1 is closed at once.
	extra, err := net.Dial("tcp", c.addr)
	if err == nil {
		extra.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := extra.Read(make([]byte, 1)); err == nil {
			t.Error("a ninth idle connection from one address was kept open")
		}
		extra.Close()
	}
	// Another address (127.0.0.2 is loopback too) is served meanwhile.
	cl := c.client(t, c.token)
	cl.HTTP.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
		return d.DialContext(ctx, network, addr)
	}
	if _, err := cl.Status(context.Background()); err != nil {
		t.Fatalf("a client at another address while one holds its cap: %v", err)
	}
	// The idle ones are cut after the header timeout; then 127.0.0.1 gets in again.
	for _, conn := range idle {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == nil {
			t.Fatal("an idle connection got data")
		}
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := c.client(t, c.token).Status(context.Background()); err != nil {
		t.Fatalf("after the idle connections were cut: %v", err)
	}
}
