package gobgp

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/govcloud/govcloud/controlplane/bgp"
	"github.com/govcloud/govcloud/controlplane/bgp/frrtest"
	"github.com/govcloud/govcloud/dataplane/netnstest"
)

// TestGracefulRestartRepeated: the speaker restarts 20 times (graceful Close, and kill -9, as
// an agent crash or upgrade), each new one with Options.Restarting; the ToR's kernel route to
// the VIP must be there in every 20 ms poll, and FRR must see End-of-RIB each time.
func TestGracefulRestartRepeated(t *testing.T) {
	netnstest.RequirePrivileged(t)
	frrtest.Require(t)
	for _, tc := range []struct {
		name string
		kill bool
	}{{"graceful Close", false}, {"kill -9", true}} {
		t.Run(tc.name, func(t *testing.T) {
			tor, h := netnstest.New(t, "gct-grt"), netnstest.New(t, "gct-grh")
			must(t, netnstest.Veth(tor, "t", h, "up"))
			must(t, tor.AddrAdd("t", "198.18.18.0/31"))
			must(t, h.AddrAdd("up", "198.18.18.1/31"))
			logf := filepath.Join(t.TempDir(), "bgpd.log")
			must(t, os.WriteFile(logf, nil, 0o666))
			conf := "log file " + logf + " debugging\ndebug bgp neighbor-events\ndebug bgp graceful-restart\ndebug bgp zebra\n" +
				frrConf(65000, "198.18.18.0", nil, torNeighbor{addr: "198.18.18.1", asn: 65119})
			frr := frrtest.Start(t, tor, conf, true)
			t.Cleanup(func() {
				if t.Failed() {
					b, _ := os.ReadFile(logf)
					t.Logf("bgpd log:\n%s", tail(string(b), 12000))
				}
			})
			cfg := bgp.Config{RouterID: netip.MustParseAddr("198.18.18.1"), ASN: 65119, Peers: []bgp.Peer{{Address: netip.MustParseAddr("198.18.18.0"),
				ASN: 65000, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second, GracefulRestart: true, RestartTime: 30 * time.Second}}}
			vip := netip.MustParsePrefix("198.18.119.1/32")
			ads := []bgp.Advertisement{deptAdvert(vip, 65119)}
			sp := startSpeaker(t, h)
			sp.MustSet(cfg, ads)
			frrtest.WaitFor(t, "the ToR's kernel route", 20*time.Second, func() (bool, error) {
				rs, err := tor.Netlink().RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: netipNet(vip)}, netlink.RT_FILTER_DST)
				return len(rs) == 1, err
			})
			// Besides polling, watch the ToR's kernel for any deletion of the route, however
			// short the gap (a 20 ms poll can miss one of a few ms).
			updates, quit := make(chan netlink.RouteUpdate, 256), make(chan struct{})
			defer close(quit)
			nsh := tor.Handle()
			must(t, netlink.RouteSubscribeWithOptions(updates, quit, netlink.RouteSubscribeOptions{Namespace: &nsh}))
			var deletes atomic.Int64
			go func() {
				for u := range updates {
					if u.Type == unix.RTM_DELROUTE && u.Dst != nil && u.Dst.String() == vip.String() {
						deletes.Add(1)
						t.Logf("%s: the ToR's kernel deleted the route", time.Now().UTC().Format("15:04:05.000"))
					}
				}
			}()
			var polls, missing atomic.Int64
			stop, done := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(done)
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					rs, err := tor.Netlink().RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: netipNet(vip)}, netlink.RT_FILTER_DST)
					polls.Add(1)
					if err == nil && len(rs) == 0 {
						missing.Add(1)
					}
				}
			}()
			established := func() int {
				n, err := frr.Neighbor("198.18.18.1")
				must(t, err)
				return n.MessageStats.NotificationsRecv
			}
			t0 := time.Now()
			for i := 0; i < 20; i++ {
				if tc.kill {
					must(t, sp.cmd.Process.Kill())
					_ = sp.cmd.Wait()
					sp = startSpeaker(t, h, "GOVCLOUD_BGP_RESTARTING=1")
				} else {
					sp.Close(true)
					sp.Renew(true)
				}
				sp.MustSet(cfg, ads)
				frrtest.WaitFor(t, fmt.Sprintf("restart %d: FRR to get End-of-RIB and no stale path", i+1), 20*time.Second, func() (bool, error) {
					n, err := frr.Neighbor("198.18.18.1")
					if err != nil || n.State != "Established" || !n.GracefulRestart.EndOfRIBRecv["ipv4Unicast"] {
						return false, err
					}
					p, err := frr.Paths(vip.String())
					return len(p) == 1 && !p[0].Stale, err
				})
			}
			close(stop)
			<-done
			t.Logf("20 restarts (%s) in %s: kernel route missing in %d of %d polls at 20 ms", tc.name, time.Since(t0).Round(time.Millisecond), missing.Load(), polls.Load())
			if deletes.Load() != 0 {
				t.Errorf("the ToR's kernel deleted the route %d times during the restarts", deletes.Load())
			}
			// Positive control: a withdrawal is seen by the same watch.
			sp.MustSet(cfg, nil)
			frrtest.WaitFor(t, "the watch to see the withdrawn route deleted", 5*time.Second, func() (bool, error) {
				return deletes.Load() >= 1, nil
			})
			if missing.Load() != 0 {
				t.Errorf("the ToR's kernel route was missing in %d of %d polls", missing.Load(), polls.Load())
			}
			if n := established(); n != 0 {
				t.Errorf("FRR received %d NOTIFICATIONs across the restarts, want 0", n)
			}
		})
	}
}
