package etcdtest

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Link is a TCP proxy in front of an etcd client endpoint (tcp or unix://) that can go silent:
// while Cut is set it holds every byte in both directions and closes nothing, as a client
// whose etcd packets are dropped (nftables) or whose etcd is paused (SIGSTOP) sees it.
type Link struct {
	URL string // http://127.0.0.1:PORT
	Cut atomic.Bool
}

// NewLink starts a Link to endpoint, closed when the test ends.
func NewLink(t testing.TB, endpoint string) *Link {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	link := &Link{URL: "http://" + l.Addr().String()}
	network, addr := "tcp", endpoint[strings.Index(endpoint, "://")+3:]
	if strings.HasPrefix(endpoint, "unix://") {
		network = "unix"
	}
	var conns sync.WaitGroup
	t.Cleanup(func() { l.Close(); link.Cut.Store(false); conns.Wait() })
	pipe := func(dst, src net.Conn) {
		defer dst.Close()
		defer src.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			for link.Cut.Load() {
				time.Sleep(5 * time.Millisecond)
			}
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial(network, addr)
			if err != nil {
				c.Close()
				continue
			}
			conns.Add(2)
			go func() { defer conns.Done(); pipe(u, c) }()
			go func() { defer conns.Done(); pipe(c, u) }()
		}
	}()
	return link
}
