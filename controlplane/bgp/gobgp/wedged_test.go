package gobgp

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bgppkt "github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"golang.org/x/sys/unix"

	"github.com/govcloud/govcloud/controlplane/bgp"
	"github.com/govcloud/govcloud/controlplane/bgp/frrtest"
	"github.com/govcloud/govcloud/dataplane/netnstest"
)

// deafPeer is a BGP peer that opens a session, then never reads again while it keeps
// sending KEEPALIVEs: the session stays established and the speaker's writes to it block
// once the socket buffers are full (a wedged ToR).
type deafPeer struct {
	ln   net.Listener
	quit chan struct{}
	done chan struct{}
}

// startDeafPeer listens on addr:179 in ns with a tiny receive buffer.
func startDeafPeer(t *testing.T, ns *netnstest.NS, addr netip.Addr, asn uint32) *deafPeer {
	t.Helper()
	d := &deafPeer{quit: make(chan struct{}), done: make(chan struct{})}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 2048) })
		if err != nil {
			return err
		}
		return serr
	}}
	must(t, ns.Do(func() (err error) {
		d.ln, err = lc.Listen(context.Background(), "tcp", netip.AddrPortFrom(addr, 179).String())
		return err
	}))
	go d.serve(asn, addr)
	t.Cleanup(func() { close(d.quit); d.ln.Close(); <-d.done })
	return d
}

func (d *deafPeer) serve(asn uint32, id netip.Addr) {
	defer close(d.done)
	for {
		c, err := d.ln.Accept()
		if err != nil {
			return
		}
		go d.session(c, asn, id)
	}
}

// session answers one connection: OPEN, KEEPALIVE, reads the speaker's OPEN and KEEPALIVE,
// then only sends KEEPALIVEs, once a second.
func (d *deafPeer) session(c net.Conn, asn uint32, id netip.Addr) {
	defer c.Close()
	open := bgppkt.NewBGPOpenMessage(uint16(min(asn, 23456)), 90, id.String(), []bgppkt.OptionParameterInterface{
		bgppkt.NewOptionParameterCapability([]bgppkt.ParameterCapabilityInterface{
			bgppkt.NewCapMultiProtocol(bgppkt.RF_IPv4_UC), bgppkt.NewCapFourOctetASNumber(asn)}),
	})
	ka := bgppkt.NewBGPKeepAliveMessage()
	ob, _ := open.Serialize()
	kb, _ := ka.Serialize()
	if _, err := c.Write(append(ob, kb...)); err != nil {
		return
	}
	for seen := 0; seen < 2; seen++ {
		var hdr [19]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint16(hdr[16:18]))-19); err != nil {
			return
		}
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-d.quit:
			return
		case <-tick.C:
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.Write(kb); err != nil {
				return
			}
		}
	}
}

// TestWedgedToR: one of four ToRs stops reading (a TCP peer that never reads; an FRR bgpd
// stopped with SIGSTOP). Set calls that restart or stop the speaker (ASN, router ID, port
// change, zero config), route changes and Status each return within 1 s, and the healthy
// ToRs get route changes at once.
func TestWedgedToR(t *testing.T) {
	netnstest.RequirePrivileged(t)
	frrtest.Require(t)
	for _, tc := range []struct {
		name string
		// start starts the wedged ToR in ns at 198.18.15.4 for the host at 198.18.15.5;
		// rewedge makes its session (re)established and blocked, given the speaker's
		// desired state and two sets of routes to alternate (new UPDATEs).
		start func(t *testing.T, ns *netnstest.NS) (rewedge func(t *testing.T, sp *remote, cfg bgp.Config, ads, ads2 []bgp.Advertisement))
	}{
		{"TCP peer that never reads", func(t *testing.T, ns *netnstest.NS) func(*testing.T, *remote, bgp.Config, []bgp.Advertisement, []bgp.Advertisement) {
			startDeafPeer(t, ns, netip.MustParseAddr("198.18.15.4"), 65004)
			return func(t *testing.T, sp *remote, cfg bgp.Config, ads, _ []bgp.Advertisement) {
				sp.MustSet(cfg, ads)
				waitEstablished(t, sp, "198.18.15.4") // every new session gets all routes and blocks
			}
		}},
		{"FRR bgpd stopped with SIGSTOP", func(t *testing.T, ns *netnstest.NS) func(*testing.T, *remote, bgp.Config, []bgp.Advertisement, []bgp.Advertisement) {
			frr := frrtest.Start(t, ns, frrConf(65004, "198.18.15.4", nil, torNeighbor{addr: "198.18.15.5", asn: 65115}), false)
			b, err := os.ReadFile(filepath.Join(frr.Dir, "bgpd.pid"))
			must(t, err)
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			must(t, err)
			t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
			return func(t *testing.T, sp *remote, cfg bgp.Config, ads, ads2 []bgp.Advertisement) {
				must(t, syscall.Kill(pid, syscall.SIGCONT))
				sp.MustSet(cfg, ads)
				waitEstablished(t, sp, "198.18.15.4")
				must(t, syscall.Kill(pid, syscall.SIGSTOP))
				sp.MustSet(cfg, ads2) // 4000 changed routes FRR no longer reads
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := netnstest.New(t, "gct-wh")
			tors := netnstest.New(t, "gct-wt")
			wedged := netnstest.New(t, "gct-ww")
			// Small socket buffers, so a few thousand routes fill them.
			h.MustRun(t, "sysctl", "-qw", "net.ipv4.tcp_wmem=4096 4096 4096")
			wedged.MustRun(t, "sysctl", "-qw", "net.ipv4.tcp_rmem=4096 4096 4096")
			var neigh []torNeighbor
			base := bgp.Config{RouterID: netip.MustParseAddr("198.18.15.5"), ASN: 65115}
			for i := 1; i <= 3; i++ {
				torA, hostA := fmt.Sprintf("198.18.15.%d", 8*i), fmt.Sprintf("198.18.15.%d", 8*i+1)
				must(t, netnstest.Veth(tors, fmt.Sprintf("d%d", i), h, fmt.Sprintf("u%d", i)))
				must(t, tors.AddrAdd(fmt.Sprintf("d%d", i), torA+"/31"))
				must(t, h.AddrAdd(fmt.Sprintf("u%d", i), hostA+"/31"))
				neigh = append(neigh, torNeighbor{addr: hostA, asn: 65115})
				base.Peers = append(base.Peers, bgp.Peer{Address: netip.MustParseAddr(torA), ASN: 65000, HoldTime: 30 * time.Second, Keepalive: 3 * time.Second})
			}
			must(t, netnstest.Veth(wedged, "d4", h, "u4"))
			must(t, wedged.AddrAdd("d4", "198.18.15.4/31"))
			must(t, h.AddrAdd("u4", "198.18.15.5/31"))
			base.Peers = append(base.Peers, bgp.Peer{Address: netip.MustParseAddr("198.18.15.4"), ASN: 65004, HoldTime: 30 * time.Second, Keepalive: 3 * time.Second})
			frr := frrtest.Start(t, tors, frrConf(65000, "198.18.15.8", nil, neigh...), false)
			rewedge := tc.start(t, wedged)
			sp := startSpeaker(t, h)

			var ads, ads2 []bgp.Advertisement
			for i := 0; i < 4000; i++ {
				a := deptAdvert(netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}), 32), 65115)
				ads = append(ads, a)
				a.MED = &med50
				ads2 = append(ads2, a)
			}
			// Blocked on the wedged ToR, a call would take its 30 s hold time; 3 s leaves room
			// for a loaded 2-core runner (a re-created peer took 1.114 s there once, 0.2-0.8 s
			// usually) while still telling the two apart.
			timed := func(what string, f func()) {
				t.Helper()
				t0 := time.Now()
				f()
				if d := time.Since(t0); d > 3*time.Second {
					t.Errorf("%s took %s with a wedged ToR, want < 3s (its hold time is 30s)", what, d.Round(time.Millisecond))
				} else {
					t.Logf("%s: %s", what, d.Round(time.Millisecond))
				}
			}
			wedge := func() {
				t.Helper()
				rewedge(t, sp, base, ads, ads2)
				frrtest.WaitFor(t, "the speaker's socket to the wedged ToR to hold unsent data", 10*time.Second, func() (bool, error) {
					out, err := h.Run("ss", "-tnH", "state", "established", "dst", "198.18.15.4")
					f := strings.Fields(out)
					return len(f) >= 2 && f[1] != "0" && f[1] == fieldAfter(h, "198.18.15.4"), fmt.Errorf("%v: %q", err, out)
				})
			}
			wedge()
			waitEstablished(t, sp, "198.18.15.8", "198.18.15.16", "198.18.15.24")
			// A route change reaches the healthy ToRs at once.
			extra := deptAdvert(netip.MustParsePrefix("198.18.115.1/32"), 65115)
			frrtest.WaitFor(t, "the healthy ToRs to hold the 4000 VIPs", 30*time.Second, func() (bool, error) {
				n, err := frr.Count("ipv4")
				return n == 3*4000, err
			})
			cur := ads
			if tc.name != "TCP peer that never reads" {
				cur = ads2
			}
			timed("Set of one more VIP", func() { sp.MustSet(base, append(slices.Clone(cur), extra)) })
			frrtest.WaitFor(t, "the healthy ToRs to get the extra VIP", time.Second, func() (bool, error) {
				p, err := frr.Paths(extra.Prefix.String())
				return len(p) == 3, err
			})
			timed("Status", func() { sp.Status() })
			for _, c := range []struct {
				what   string
				mutate func(*bgp.Config)
			}{
				{"Set that re-creates the wedged peer (new hold time)", func(c *bgp.Config) { c.Peers[3].HoldTime = 27 * time.Second }},
				{"Set with a new ASN (restart)", func(c *bgp.Config) { c.ASN = 65116 }},
				{"Set with a new router ID (restart)", func(c *bgp.Config) { c.RouterID = netip.MustParseAddr("198.18.15.9") }},
				{"Set with a new listen port (restart)", func(c *bgp.Config) { c.ListenPort = 1179 }},
				{"Set of the zero config (stop)", func(c *bgp.Config) { *c = bgp.Config{} }},
			} {
				wedge()
				cfg := base
				cfg.Peers = slices.Clone(base.Peers)
				c.mutate(&cfg)
				var ads3 []bgp.Advertisement
				if !cfg.IsZero() {
					ads3 = ads
				}
				timed(c.what, func() { sp.MustSet(cfg, ads3) })
				timed("Status after "+c.what, func() { sp.Status() })
			}
			// And the speaker comes back for the healthy ToRs.
			timed("Set after the stop", func() { sp.MustSet(base, ads[:10]) })
			waitEstablished(t, sp, "198.18.15.8", "198.18.15.16", "198.18.15.24")
			frrtest.WaitFor(t, "the healthy ToRs to hold the 10 VIPs", 20*time.Second, func() (bool, error) {
				n, err := frr.Count("ipv4")
				return n == 30, err
			})
		})
	}
}

// fieldAfter returns the Send-Q of the established socket to dst, read a second time 200 ms
// later: equal to the first reading only if nothing drained meanwhile.
func fieldAfter(ns *netnstest.NS, dst string) string {
	time.Sleep(200 * time.Millisecond)
	out, _ := ns.Run("ss", "-tnH", "state", "established", "dst", dst)
	if f := strings.Fields(out); len(f) >= 2 {
		return f[1]
	}
	return ""
}
