// Package httpserve is how every govcloud HTTP listener is served: with timeouts on every
// phase of a request and a cap on connections per client address and in total, so idle
// keep-alive connections or a slow client cannot exhaust a daemon's file descriptors and
// lock its operators out.
package httpserve

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// Limits bound one server. The zero value of a field takes its default.
type Limits struct {
	ReadHeader time.Duration // default 10s
	Read       time.Duration // whole request, body included; default 60s
	Write      time.Duration // default 60s: longer than the agents' 25s long-poll
	Idle       time.Duration // keep-alive; default 60s
	PerClient  int           // concurrent connections from one address; default 64
	Total      int           // concurrent connections; default 1024
	HeaderSize int           // default 64 KiB
}

func (l Limits) withDefaults() Limits {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&l.ReadHeader, 10*time.Second)
	def(&l.Read, 60*time.Second)
	def(&l.Write, 60*time.Second)
	def(&l.Idle, 60*time.Second)
	if l.PerClient <= 0 {
		l.PerClient = 64
	}
	if l.Total <= 0 {
		l.Total = 1024
	}
	if l.HeaderSize <= 0 {
		l.HeaderSize = 64 << 10
	}
	return l
}

// Server returns an http.Server for h with lim's timeouts.
func Server(h http.Handler, lim Limits) *http.Server {
	lim = lim.withDefaults()
	return &http.Server{Handler: h, ReadHeaderTimeout: lim.ReadHeader, ReadTimeout: lim.Read,
		WriteTimeout: lim.Write, IdleTimeout: lim.Idle, MaxHeaderBytes: lim.HeaderSize}
}

// Listen listens on addr (TCP) with lim's connection caps.
func Listen(addr string, lim Limits) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return Limit(ln, lim), nil
}

// Limit wraps ln so that at most lim.PerClient connections from one remote address and
// lim.Total in all are open at once; a connection beyond either is closed at once (the client
// sees a reset, not a hang).
func Limit(ln net.Listener, lim Limits) net.Listener {
	lim = lim.withDefaults()
	return &limited{Listener: ln, lim: lim, per: map[netip.Addr]int{}}
}

type limited struct {
	net.Listener
	lim   Limits
	mu    sync.Mutex
	per   map[netip.Addr]int
	total int
}

func (l *limited) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		a := remoteAddr(c)
		l.mu.Lock()
		ok := l.total < l.lim.Total && l.per[a] < l.lim.PerClient
		if ok {
			l.total++
			l.per[a]++
		}
		l.mu.Unlock()
		if !ok {
			c.Close()
			continue
		}
		return &counted{Conn: c, l: l, a: a}, nil
	}
}

func remoteAddr(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{} // unix sockets and the like share one budget
}

type counted struct {
	net.Conn
	l    *limited
	a    netip.Addr
	once sync.Once
}

func (c *counted) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.total--
		if c.l.per[c.a]--; c.l.per[c.a] == 0 {
			delete(c.l.per, c.a)
		}
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
