package httpserve

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func serve(t *testing.T, lim Limits) string {
	t.Helper()
	ln, err := Listen("127.0.0.1:0", lim)
	if err != nil {
		t.Fatal(err)
	}
	srv := Server(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }), lim)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func get(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	b, err := io.ReadAll(c)
	return string(b), err
}

// TestIdleConnectionsCannotLockOut: idle keep-alive connections from one client use up only
// that client's budget, and are closed after the idle timeout.
func TestIdleConnectionsCannotLockOut(t *testing.T) {
	addr := serve(t, Limits{PerClient: 4, Total: 100, Idle: 300 * time.Millisecond, ReadHeader: 300 * time.Millisecond})
	var idle []net.Conn
	for range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	time.Sleep(50 * time.Millisecond)
	// The fifth connection from the same address is refused at once.
	if out, _ := get(addr); strings.Contains(out, "200 OK") {
		t.Fatal("a fifth connection from one client was served beyond PerClient=4")
	}
	// The idle ones are closed by the server after the header timeout...
	for _, c := range idle {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := bufio.NewReader(c).ReadByte(); err == nil {
			t.Fatal("idle connection got data")
		}
	}
	// ... and the client can get in again.
	time.Sleep(50 * time.Millisecond)
	if out, err := get(addr); !strings.Contains(out, "200 OK") {
		t.Fatalf("after the idle ones were closed: %q %v", out, err)
	}
}

// TestTotalCap: past Total, connections are refused whoever opens them.
func TestTotalCap(t *testing.T) {
	addr := serve(t, Limits{PerClient: 100, Total: 3})
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	time.Sleep(50 * time.Millisecond)
	if out, _ := get(addr); strings.Contains(out, "200 OK") {
		t.Fatal("served beyond Total=3")
	}
}

// TestSlowHeaderIsCut: a client that never finishes its request header is cut off.
func TestSlowHeaderIsCut(t *testing.T) {
	addr := serve(t, Limits{ReadHeader: 200 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n") // no end of header
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	t0 := time.Now()
	_, err = io.ReadAll(c)
	if err != nil || time.Since(t0) > 2*time.Second {
		t.Fatalf("slow header: connection not closed by the server (%v after %v)", err, time.Since(t0))
	}
}
