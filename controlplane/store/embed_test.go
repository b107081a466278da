package store

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestEmbeddedNeedsCredentials: the embedded etcd's clients connect only through a unix socket
// in the 0700 data directory, so another local user cannot read or write, while its owner can
// (the same request, run as root, is the control). Its peer port answers only TLS with a
// client certificate of its own CA.
func TestEmbeddedNeedsCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (runs a client as user nobody)")
	}
	for _, tool := range []string{"setpriv", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed: run 'make deps'", tool)
		}
	}
	// The parent is open to everyone, as /var/lib is: only the data dir itself protects etcd.
	parent, err := os.MkdirTemp("", "gc-etcd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(parent, "data")
	if err := os.Mkdir(dir, 0o755); err != nil { // made open on purpose: StartEmbedded closes it
		t.Fatal(err)
	}
	e, err := StartEmbedded(dir, testLog, EmbeddedOptions{NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if !strings.HasPrefix(e.Endpoint, "unix://") {
		t.Fatalf("client endpoint %s: want a unix socket", e.Endpoint)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %v, want 0700", fi.Mode().Perm())
	}
	sock := filepath.Join(dir, SocketFile)
	// etcd's JSON gateway: put key "secret" (c2VjcmV0) = "x" (eA==), then range over it.
	put := []string{"-sS", "--fail", "--max-time", "5", "--unix-socket", sock, "-X", "POST", "http://localhost/v3/kv/put", "-d", `{"key":"c2VjcmV0","value":"eA=="}`}
	get := []string{"-sS", "--fail", "--max-time", "5", "--unix-socket", sock, "-X", "POST", "http://localhost/v3/kv/range", "-d", `{"key":"c2VjcmV0"}`}
	asNobody := func(args ...string) ([]byte, error) {
		return exec.Command("setpriv", append([]string{"--reuid", "65534", "--regid", "65534", "--clear-groups", "curl"}, args...)...).CombinedOutput()
	}
	if out, err := exec.Command("curl", put...).CombinedOutput(); err != nil {
		t.Fatalf("control: root cannot write through the socket: %v %s", err, out)
	}
	if out, err := exec.Command("curl", get...).CombinedOutput(); err != nil || !strings.Contains(string(out), "eA==") {
		t.Fatalf("control: root cannot read through the socket: %v %s", err, out)
	}
	if out, err := asNobody(get...); err == nil || strings.Contains(string(out), "eA==") {
		t.Errorf("user nobody read etcd: %s", out)
	} else {
		t.Logf("user nobody: %v %s", err, strings.TrimSpace(string(out)))
	}
	if out, err := asNobody(put...); err == nil {
		t.Errorf("user nobody wrote etcd: %s", out)
	}
	// Without a socket path: nothing listens for etcd clients on loopback TCP. The peer port
	// refuses a TLS client without a certificate of the peer CA.
	var p ports
	b, _ := os.ReadFile(filepath.Join(dir, "etcd-ports.json"))
	if err := json.Unmarshal(b, &p); err != nil || p.Peer == 0 {
		t.Fatalf("etcd-ports.json: %s %v", b, err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if resp, err := hc.Get("https://127.0.0.1:" + strconv.Itoa(p.Peer) + "/members"); err == nil {
		resp.Body.Close()
		t.Errorf("peer port answered a client without a certificate: HTTP %d", resp.StatusCode)
	}
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://127.0.0.1:" + strconv.Itoa(p.Peer) + "/members"); err == nil && resp.StatusCode == http.StatusOK {
		resp.Body.Close()
		t.Error("peer port answered plain HTTP")
	}
	// The store works through the socket (the controller's own path).
	st, err := Connect([]string{e.Endpoint}, testLog)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := st.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
}

var testLog = slog.New(slog.NewTextHandler(io.Discard, nil))
