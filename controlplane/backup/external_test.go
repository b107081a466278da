package backup

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/store"
)

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestExternalEtcd: the same Create works against an external etcd (Debian's etcd-server, a
// separate process and an older etcd), and its backup restores into an embedded data dir.
func TestExternalEtcd(t *testing.T) {
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatal("etcd not installed (Debian package etcd-server): run 'make deps'")
	}
	dir := t.TempDir()
	curl := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	purl := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	var out bytes.Buffer
	cmd := exec.Command(etcdBin, "--name", "gc-ext", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", curl, "--advertise-client-urls", curl,
		"--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl, "--initial-cluster", "gc-ext="+purl, "--log-level", "error")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var st *store.Store
	for deadline := time.Now().Add(30 * time.Second); ; {
		if st, err = store.Connect([]string{curl}, log); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("external etcd not up after 30s: %v\n%s", err, out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer st.Close()
	kv := seed(t, st.Client())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	path, m, err := Create(ctx, st.Client(), "/govcloud/", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if m.Counts["Segment"] != 2 || m.Counts["metering"] != 1 || m.TotalKeys != len(kv) {
		t.Fatalf("manifest of the external etcd's backup: %+v", m)
	}
	data := filepath.Join(t.TempDir(), "restored")
	if _, err := Restore(path, data); err != nil {
		t.Fatal(err)
	}
	st2 := startEtcd(t, data)
	for k, v := range kv {
		r, err := st2.Client().Get(ctx, k)
		if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != v {
			t.Errorf("restored %s: %v %v, want %q", k, r, err, v)
		}
	}
}
