package gobgp

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/bgp"
	"github.com/govcloud/govcloud/controlplane/bgp/frrtest"
	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/vishvananda/netlink"
)

const torConf = `frr defaults datacenter
hostname tor
!
router bgp 65000
 bgp router-id 198.18.1.1
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 no bgp network import-check
 bgp bestpath as-path multipath-relax
 neighbor 198.18.1.2 remote-as 65101
 neighbor 198.18.1.2 password h1-md5-secret
 neighbor 198.18.1.2 timers connect 1
 neighbor 198.18.2.2 remote-as 65102
 neighbor 198.18.2.2 timers connect 1
 neighbor 2001:db8:1::2 remote-as 65101
 neighbor 2001:db8:1::2 timers connect 1
 address-family ipv4 unicast
  network 203.0.113.0/24
  neighbor 198.18.1.2 activate
  neighbor 198.18.2.2 activate
  maximum-paths 8
 exit-address-family
 address-family ipv6 unicast
  network 2001:db8:ffff::/48
  neighbor 2001:db8:1::2 activate
  maximum-paths 8
 exit-address-family
!
`

type fabric struct {
	tor, h1, h2 *netnstest.NS
	frr         *frrtest.Router
}

// newFabric builds tor (FRR with zebra, AS 65000) and two hosts h1 (AS 65101, v4 session
// with MD5 + v6 session) and h2 (AS 65102), each on its own veth link to tor.
func newFabric(t *testing.T) *fabric {
	t.Helper()
	netnstest.RequirePrivileged(t)
	frrtest.Require(t)
	f := &fabric{tor: netnstest.New(t, "gct-tor"), h1: netnstest.New(t, "gct-h1"), h2: netnstest.New(t, "gct-h2")}
	links := []struct {
		h             *netnstest.NS
		torIf, v4, v6 string
		torV4, torV6  string
	}{
		{f.h1, "t1", "198.18.1.2/30", "2001:db8:1::2/64", "198.18.1.1/30", "2001:db8:1::1/64"},
		{f.h2, "t2", "198.18.2.2/30", "2001:db8:2::2/64", "198.18.2.1/30", "2001:db8:2::1/64"},
	}
	for _, l := range links {
		must(t, netnstest.Veth(f.tor, l.torIf, l.h, "up"))
		must(t, f.tor.AddrAdd(l.torIf, l.torV4))
		must(t, f.tor.AddrAdd(l.torIf, l.torV6))
		must(t, l.h.AddrAdd("up", l.v4))
		must(t, l.h.AddrAdd("up", l.v6))
	}
	f.frr = frrtest.Start(t, f.tor, torConf, true)
	return f
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var (
	vip1  = netip.MustParsePrefix("198.18.100.1/32")
	vip2  = netip.MustParsePrefix("198.18.100.2/32")
	vip6  = netip.MustParsePrefix("2001:db8:100::1/128")
	med50 = uint32(50)
)

const deptID = 7

func h1Config(password string) bgp.Config {
	return bgp.Config{
		RouterID: netip.MustParseAddr("198.18.1.2"), ASN: 65101,
		Peers: []bgp.Peer{
			{Address: netip.MustParseAddr("198.18.1.1"), ASN: 65000, Password: bgp.Secret(password),
				HoldTime: 9 * time.Second, Keepalive: 3 * time.Second, GracefulRestart: true, RestartTime: 60 * time.Second},
			{Address: netip.MustParseAddr("2001:db8:1::1"), ASN: 65000, HoldTime: 9 * time.Second},
		},
	}
}

func h2Config() bgp.Config {
	return bgp.Config{
		RouterID: netip.MustParseAddr("198.18.2.2"), ASN: 65102,
		Peers: []bgp.Peer{{Address: netip.MustParseAddr("198.18.2.1"), ASN: 65000, HoldTime: 9 * time.Second, GracefulRestart: true}},
	}
}

func deptAdvert(p netip.Prefix, localASN uint32) bgp.Advertisement {
	cs, lc := bgp.DepartmentCommunities(65000, localASN, deptID)
	return bgp.Advertisement{Prefix: p, Communities: cs, LargeCommunities: []bgp.LargeCommunity{lc}}
}

func h1Adverts(withVIP2 bool) []bgp.Advertisement {
	a := []bgp.Advertisement{deptAdvert(vip1, 65101), deptAdvert(vip6, 65101)}
	if withVIP2 {
		v := deptAdvert(vip2, 65101)
		v.MED = &med50
		a = append(a, v)
	}
	return a
}

func waitEstablished(t *testing.T, r *remote, peers ...string) {
	t.Helper()
	frrtest.WaitFor(t, "sessions of "+r.ns.Name+" established", 30*time.Second, func() (bool, error) {
		for _, p := range peers {
			if st := r.Peer(p); !st.Established {
				return false, fmt.Errorf("%s: %s (%s)", p, st.State, st.Reason)
			}
		}
		return true, nil
	})
}

func hasPathFrom(f *fabric, prefix, peer string) (bool, error) {
	paths, err := f.frr.Paths(prefix)
	if err != nil {
		return false, err
	}
	for _, p := range paths {
		if p.Peer.PeerID == peer && p.Valid {
			return true, nil
		}
	}
	return false, nil
}

func TestFabric(t *testing.T) {
	f := newFabric(t)
	s1, s2 := startSpeaker(t, f.h1), startSpeaker(t, f.h2)
	s1.MustSet(h1Config("h1-md5-secret"), h1Adverts(true))
	s2.MustSet(h2Config(), []bgp.Advertisement{deptAdvert(vip1, 65102)})
	waitEstablished(t, s1, "198.18.1.1", "2001:db8:1::1")
	waitEstablished(t, s2, "198.18.2.1")
	frrtest.WaitFor(t, "FRR's side of all three sessions established", 20*time.Second, func() (bool, error) {
		for _, a := range []string{"198.18.1.2", "2001:db8:1::2", "198.18.2.2"} {
			if n, err := f.frr.Neighbor(a); err != nil || n.State != "Established" {
				return false, fmt.Errorf("%s: %q %v", a, n.State, err)
			}
		}
		return true, nil
	})

	t.Run("sockets in the host namespace", func(t *testing.T) {
		// Polled: a connection collision at start-up can replace a session once.
		frrtest.WaitFor(t, "both of h1's BGP sessions in its namespace", 10*time.Second, func() (bool, error) {
			out, err := f.h1.Run("ss", "-tnH", "state", "established", "( sport = :179 or dport = :179 )")
			return strings.Contains(out, "198.18.1.1") && strings.Contains(out, "2001:db8:1::1"), fmt.Errorf("%v: %s", err, out)
		})
		out := f.h1.MustRun(t, "ss", "-tlnH", "sport = :179")
		if !strings.Contains(out, ":179") {
			t.Fatalf("speaker does not listen on 179 in %s:\n%s", f.h1.Name, out)
		}
	})

	t.Run("ECMP from two hosts with department communities", func(t *testing.T) {
		frrtest.WaitFor(t, "FRR to hold vip1 from both hosts", 10*time.Second, func() (bool, error) {
			p, err := f.frr.Paths(vip1.String())
			return len(p) == 2, err
		})
		paths, _ := f.frr.Paths(vip1.String())
		best, multi := 0, 0
		for _, p := range paths {
			if p.Bestpath != nil && p.Bestpath.Overall {
				best++
			} else if p.Multipath {
				multi++
			}
			want := map[string]string{"198.18.1.2": "65101:1:7", "198.18.2.2": "65102:1:7"}[p.Peer.PeerID]
			if p.Community == nil || p.Community.String != "65000:7" {
				t.Errorf("path from %s: community %+v, want 65000:7", p.Peer.PeerID, p.Community)
			}
			if p.LargeCommunity == nil || p.LargeCommunity.String != want {
				t.Errorf("path from %s: large community %+v, want %s", p.Peer.PeerID, p.LargeCommunity, want)
			}
		}
		if best != 1 || multi != 1 {
			t.Errorf("vip1 paths: %d best, %d multipath; want 1 and 1 (ECMP)", best, multi)
		}
		frrtest.WaitFor(t, "kernel route with two next hops", 10*time.Second, func() (bool, error) {
			out, err := f.tor.Run("ip", "route", "show", vip1.Addr().String())
			return strings.Count(out, "nexthop via") == 2 && strings.Contains(out, "198.18.1.2") && strings.Contains(out, "198.18.2.2"), err
		})
		p2, err := f.frr.Paths(vip2.String())
		must(t, err)
		if len(p2) != 1 || p2[0].Metric == nil || *p2[0].Metric != 50 {
			t.Errorf("vip2 at FRR: %+v, want one path with MED 50", p2)
		}
	})

	t.Run("Set again changes nothing and does not reset the session", func(t *testing.T) {
		before := neighborStats(t, f, "198.18.1.2")
		s1.MustSet(h1Config("h1-md5-secret"), h1Adverts(true))
		s1.MustSet(h1Config("h1-md5-secret"), h1Adverts(true))
		time.Sleep(300 * time.Millisecond)
		after := neighborStats(t, f, "198.18.1.2")
		if after.updates != before.updates || after.established != before.established {
			t.Errorf("repeated Set: updates %d->%d, established %d->%d; want unchanged", before.updates, after.updates, before.established, after.established)
		}
	})

	t.Run("withdraw and re-advertise", func(t *testing.T) {
		before := neighborStats(t, f, "198.18.1.2")
		s1.MustSet(h1Config("h1-md5-secret"), h1Adverts(false))
		frrtest.WaitFor(t, "FRR to lose vip2", 5*time.Second, func() (bool, error) {
			p, err := f.frr.Paths(vip2.String())
			return len(p) == 0, err
		})
		if ok, _ := hasPathFrom(f, vip1.String(), "198.18.1.2"); !ok {
			t.Fatal("withdrawing vip2 also lost vip1")
		}
		s1.MustSet(h1Config("h1-md5-secret"), h1Adverts(true))
		frrtest.WaitFor(t, "FRR to learn vip2 again", 5*time.Second, func() (bool, error) {
			return hasPathFrom(f, vip2.String(), "198.18.1.2")
		})
		if after := neighborStats(t, f, "198.18.1.2"); after.established != before.established {
			t.Errorf("route changes reset the session: established %d -> %d", before.established, after.established)
		}
	})

	t.Run("IPv6 VIP over the IPv6 session", func(t *testing.T) {
		frrtest.WaitFor(t, "FRR to hold the /128", 10*time.Second, func() (bool, error) {
			return hasPathFrom(f, vip6.String(), "2001:db8:1::2")
		})
		paths, _ := f.frr.Paths(vip6.String())
		if len(paths[0].Nexthops) == 0 || paths[0].Nexthops[0].IP != "2001:db8:1::2" {
			t.Errorf("v6 next hop %+v, want 2001:db8:1::2", paths[0].Nexthops)
		}
		out := f.tor.MustRun(t, "ip", "-6", "route", "show", vip6.Addr().String())
		if !strings.Contains(out, "via 2001:db8:1::2") {
			t.Errorf("kernel v6 route at tor: %q", out)
		}
	})

	t.Run("import policy rejects the peer's routes", func(t *testing.T) {
		frrtest.WaitFor(t, "h1 to receive FRR's prefixes", 10*time.Second, func() (bool, error) {
			st := s1.Peer("198.18.1.1")
			st6 := s1.Peer("2001:db8:1::1")
			return st.Received >= 1 && st6.Received >= 1, nil
		})
		for _, a := range []string{"198.18.1.1", "2001:db8:1::1"} {
			if st := s1.Peer(a); st.Accepted != 0 {
				t.Errorf("peer %s: accepted %d of %d received routes, want 0", a, st.Accepted, st.Received)
			}
		}
		if st := s1.Peer("198.18.1.1"); st.Advertised != 2 {
			t.Errorf("v4 peer advertised %d, want 2 (vip1, vip2)", st.Advertised)
		}
	})

	t.Run("changing one peer resets only that peer", func(t *testing.T) {
		v4, v6 := neighborStats(t, f, "198.18.1.2"), neighborStats(t, f, "2001:db8:1::2")
		cfg := h1Config("h1-md5-secret")
		cfg.Peers[1].HoldTime = 12 * time.Second
		s1.MustSet(cfg, h1Adverts(true))
		frrtest.WaitFor(t, "the v6 session to come back with the new hold time", 20*time.Second, func() (bool, error) {
			n, err := f.frr.Neighbor("2001:db8:1::2")
			return n.State == "Established" && neighborStats(t, f, "2001:db8:1::2").established > v6.established, err
		})
		if got := neighborStats(t, f, "198.18.1.2"); got.established != v4.established {
			t.Errorf("changing the v6 peer reset the v4 session (established %d -> %d)", v4.established, got.established)
		}
		s1.MustSet(h1Config("h1-md5-secret"), h1Adverts(true))
		waitEstablished(t, s1, "198.18.1.1", "2001:db8:1::1")
	})

	t.Run("graceful restart keeps the routes at FRR", func(t *testing.T) {
		var polls, missing, kernelMissing atomic.Int64
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				ok, err := hasPathFrom(f, vip1.String(), "198.18.1.2")
				polls.Add(1)
				if err == nil && !ok {
					missing.Add(1)
				}
				// vip2 is h1's alone: its kernel route at tor must stay too.
				if rs, err := f.tor.Netlink().RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: netipNet(vip2)}, netlink.RT_FILTER_DST); err == nil && len(rs) == 0 {
					kernelMissing.Add(1)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		stream := startStream(t, f.tor, f.h1, vip2.Addr())
		time.Sleep(200 * time.Millisecond)
		s1.Close(true)
		if l := s1.Log(); !strings.Contains(l, "sessions closed without NOTIFICATION") || strings.Contains(l, "sockets=0") {
			t.Errorf("graceful Close did not shut the BGP sockets itself:\n%s", tail(l, 2000))
		}
		frrtest.WaitFor(t, "FRR to see the session drop", 10*time.Second, func() (bool, error) {
			n, err := f.frr.Neighbor("198.18.1.2")
			return n.State != "Established", err
		})
		time.Sleep(500 * time.Millisecond) // routes held as stale meanwhile
		stale := false
		if paths, err := f.frr.Paths(vip1.String()); err == nil {
			for _, p := range paths {
				stale = stale || (p.Peer.PeerID == "198.18.1.2" && p.Stale)
			}
		}
		s1.Renew(true)
		s1.MustSet(h1Config("h1-md5-secret"), h1Adverts(true))
		waitEstablished(t, s1, "198.18.1.1")
		t.Cleanup(func() {
			if t.Failed() {
				out, _ := f.frr.Vtysh("show bgp neighbors 198.18.1.2 json")
				t.Logf("FRR neighbour:\n%s", out)
			}
		})
		frrtest.WaitFor(t, "FRR to receive End-of-RIB from the restarted speaker", 10*time.Second, func() (bool, error) {
			n, err := f.frr.Neighbor("198.18.1.2")
			return n.GracefulRestart.EndOfRIBRecv["ipv4Unicast"], err
		})
		time.Sleep(300 * time.Millisecond)
		close(stop)
		<-done
		n, _ := f.frr.Neighbor("198.18.1.2")
		t.Logf("FRR: %d polls, vip1 from h1 missing in %d; stale while down: %v; last reset: %q", polls.Load(), missing.Load(), stale, n.LastResetDueTo)
		if missing.Load() != 0 || kernelMissing.Load() != 0 {
			t.Errorf("during the restart FRR lost vip1 from h1 in %d of %d polls, tor's kernel lost vip2 in %d", missing.Load(), polls.Load(), kernelMissing.Load())
		}
		if n, gap, err := stream.stop(); err != nil || n == 0 || gap > time.Second {
			t.Errorf("TCP stream to vip2 through tor across the restart: %d bytes, longest gap %s, error %v", n, gap, err)
		} else {
			t.Logf("TCP stream to vip2 across the restart: %d bytes, longest gap %s, no reset", n, gap.Round(time.Millisecond))
		}
		if !stale {
			t.Error("FRR did not mark h1's route stale while the speaker was down (graceful restart not used)")
		}
		if n.MessageStats.NotificationsRecv != 0 || strings.Contains(strings.ToLower(n.LastResetDueTo), "notification") {
			t.Errorf("FRR saw a NOTIFICATION on a planned restart: %q", n.LastResetDueTo)
		}
		if ok, _ := hasPathFrom(f, vip2.String(), "198.18.1.2"); !ok {
			t.Error("vip2 not re-advertised after the restart")
		}
	})
}

func netipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

type stream struct {
	conn, srv net.Conn
	quit      chan struct{}
	done      chan struct{}
	bytes     atomic.Int64
	maxGap    atomic.Int64 // ns
	err       error
}

// startStream serves TCP on vip (added to h's loopback) in h and streams to it from client
// through the client's routing table (the route FRR installed), 1 KiB every 10 ms.
func startStream(t *testing.T, client, h *netnstest.NS, vip netip.Addr) *stream {
	t.Helper()
	must(t, h.AddrAdd("lo", vip.String()+"/32"))
	var ln net.Listener
	must(t, h.Do(func() (err error) { ln, err = net.Listen("tcp", netip.AddrPortFrom(vip, 8080).String()); return err }))
	t.Cleanup(func() { ln.Close() })
	s := &stream{quit: make(chan struct{}), done: make(chan struct{})}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	must(t, client.Do(func() (err error) {
		s.conn, err = net.DialTimeout("tcp", netip.AddrPortFrom(vip, 8080).String(), 3*time.Second)
		return err
	}))
	s.srv = <-accepted
	go func() { // reader: counts bytes and the longest silence
		buf := make([]byte, 4096)
		last := time.Now()
		for {
			n, err := s.srv.Read(buf)
			if n > 0 {
				if g := int64(time.Since(last)); g > s.maxGap.Load() {
					s.maxGap.Store(g)
				}
				last = time.Now()
				s.bytes.Add(int64(n))
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		defer close(s.done)
		buf := make([]byte, 1024)
		for {
			select {
			case <-s.quit:
				return
			case <-time.After(10 * time.Millisecond):
			}
			s.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
			if _, err := s.conn.Write(buf); err != nil {
				s.err = err
				return
			}
		}
	}()
	return s
}

func (s *stream) stop() (int64, time.Duration, error) {
	close(s.quit)
	<-s.done
	time.Sleep(100 * time.Millisecond)
	s.conn.Close()
	s.srv.Close()
	return s.bytes.Load(), time.Duration(s.maxGap.Load()), s.err
}

type nstats struct{ updates, established int }

func neighborStats(t *testing.T, f *fabric, addr string) nstats {
	t.Helper()
	var m map[string]struct {
		Established int `json:"connectionsEstablished"`
		Stats       struct {
			UpdatesRecv int `json:"updatesRecv"`
		} `json:"messageStats"`
	}
	must(t, f.frr.JSON("show bgp neighbors "+addr+" json", &m))
	return nstats{updates: m[addr].Stats.UpdatesRecv, established: m[addr].Established}
}
