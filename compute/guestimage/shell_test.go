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

// TestRunBoundsOutput: a guest printing without end (many lines, or one endless line) gets an
// error and at most MaxShellOutput bytes, not the host's memory.
func TestRunBoundsOutput(t *testing.T) {
	for _, script := range []string{
		"yes govcloud-guest-output",                              // endless lines
		"tr '\\0' x < /dev/zero",                                 // one endless line
		"head -c 3000000 /dev/zero | tr '\\0' 'y' | fold -w 100", // 3 MB, then it ends
	} {
		sock := shellSocket(t, "")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, _, err := Run(ctx, sock, script)
		late := ctx.Err() != nil
		cancel()
		if err == nil || len(out) > MaxShellOutput {
			t.Errorf("%q: %d bytes kept, err %v; want an error and at most %d bytes", script, len(out), err, MaxShellOutput)
		}
		if late {
			t.Errorf("%q: ran into the deadline instead of stopping at the bound", script)
		}
	}
}
