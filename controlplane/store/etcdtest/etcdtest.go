// Package etcdtest runs a real external etcd (Debian's etcd-server) for tests: on free loopback
// ports, killed when the test ends. It imports only the standard library.
package etcdtest

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
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
// installs it.
func Start(t testing.TB, dir, scheme string, extra ...string) (string, *bytes.Buffer) {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatal("etcd not installed (Debian package etcd-server): run 'make deps'")
	}
	curl := fmt.Sprintf("%s://127.0.0.1:%d", scheme, FreePort(t))
	purl := fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))
	args := append([]string{"--name", "gc-test", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", curl, "--advertise-client-urls", curl,
		"--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl, "--initial-cluster", "gc-test=" + purl,
		"--log-level", "error"}, extra...)
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return curl, &out
}
