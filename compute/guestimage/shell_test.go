package guestimage

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// shellSocket serves a real /bin/sh on a unix socket, one client at a time, as qemu serves the
// guest's serial port; stale is written to each client first (what an earlier command left).
func shellSocket(t *testing.T, stale string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "ttyS1.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f, _ := c.(*net.UnixConn).File()
			c.Close()
			f.WriteString(stale)
			cmd := exec.Command("/bin/sh")
			cmd.Stdin, cmd.Stdout, cmd.Stderr = f, f, f
			_ = cmd.Run()
			f.Close()
		}
	}()
	return sock
}

func TestRun(t *testing.T) {
	sock := shellSocket(t, "old output\n__gc_end_x_0\n")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		script string
		out    string
		rc     int
	}{
		{"echo hello; echo world", "hello\nworld\n", 0},
		{"echo oops >&2; false", "oops\n", 1},
		{"exit_code() { return 7; }; exit_code", "", 7},
	} {
		out, rc, err := Run(ctx, sock, tc.script)
		if err != nil {
			t.Fatalf("%q: %v", tc.script, err)
		}
		if out != tc.out || rc != tc.rc {
			t.Errorf("%q: got (%q, %d), want (%q, %d)", tc.script, out, rc, tc.out, tc.rc)
		}
	}
}

func TestRunTimesOut(t *testing.T) {
	sock := shellSocket(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, _, err := Run(ctx, sock, "sleep 5"); err == nil {
		t.Fatal("a command outliving the context returned no error")
	}
	if _, _, err := Run(context.Background(), filepath.Join(os.TempDir(), "no-such-gc.sock"), "true"); err == nil {
		t.Fatal("a missing socket returned no error")
	}
}
