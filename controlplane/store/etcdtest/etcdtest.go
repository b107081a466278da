// Package etcdtest runs a real external etcd (Debian's etcd-server) for tests: on free loopback
// ports, killed when the test ends. It imports only the standard library.
package etcdtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 nothing listens on (at the time of the call).
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start runs etcd with its data under dir, its client URL on scheme ("http" or "https") and a
// plain-HTTP peer URL, with extra flags (TLS files, limits). It returns the client URL and the
// process's output (for failure messages). A missing etcd binary fails the test: 'make deps'
// installs it. FreePort's port can be taken by another test before etcd binds it; etcd then
// exits at once ("address already in use") and Start tries again on new ports, up to 5 times.
func Start(t testing.TB, dir, scheme string, extra ...string) (string, *bytes.Buffer) {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatal("etcd not installed (Debian package etcd-server): run 'make deps'")
	}
	for attempt := 1; ; attempt++ {
		curl := fmt.Sprintf("%s://127.0.0.1:%d", scheme, FreePort(t))
		purl := fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))
		data := filepath.Join(dir, "etcd")
		args := append([]string{"--name", "gc-test", "--data-dir", data,
			"--listen-client-urls", curl, "--advertise-client-urls", curl,
			"--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl, "--initial-cluster", "gc-test=" + purl,
			"--log-level", "error"}, extra...)
		out := &syncBuffer{}
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		// Bound: etcd binds its listeners within a second or two of starting.
		if lost := waitBind(exited, curl, 10*time.Second); lost && strings.Contains(out.String(), "address already in use") && attempt < 5 {
			t.Logf("etcdtest: a port was taken before etcd bound it (attempt %d); trying new ports", attempt)
			_ = os.RemoveAll(data)
			continue
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
		return curl, &out.Buffer
	}
}

// waitBind waits until the client URL's port accepts a connection (false) or the process
// exited (true), at most d.
func waitBind(exited <-chan struct{}, curl string, d time.Duration) bool {
	hostport := curl[strings.Index(curl, "://")+3:]
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		select {
		case <-exited:
			return true
		default:
		}
		if c, err := net.DialTimeout("tcp", hostport, 200*time.Millisecond); err == nil {
			c.Close()
			return false
		}
	}
	return false
}

// syncBuffer is a bytes.Buffer the etcd process writes to while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.String()
}
