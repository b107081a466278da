package gobgp

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/bgp"
	"github.com/govcloud/govcloud/controlplane/bgp/frrtest"
	"github.com/govcloud/govcloud/dataplane/netnstest"
)

const scaleConf = `frr defaults datacenter
hostname scaletor
!
router bgp 65000
 bgp router-id 198.18.6.1
 no bgp ebgp-requires-policy
 bgp bestpath as-path multipath-relax
 neighbor 198.18.6.2 remote-as 65101
 neighbor 198.18.6.2 timers connect 1
 neighbor 198.18.6.6 remote-as 65102
 neighbor 198.18.6.6 timers connect 1
 address-family ipv4 unicast
  maximum-paths 8
 exit-address-family
!
`

// BenchmarkSpeakerScale is the scale lab's BGP (issue 21) without the lab: two hosts' speakers
// each advertise the same 1200 VIPs to one FRR ToR (which hands each host the other's paths
// back), while each host's agent asks its speaker for Status every 20 ms, as reconcile passes
// and /status do. It prints the time from Set until FRR holds every VIP from both hosts, the
// Status round trips meanwhile, and the time until a withdrawal of one VIP reaches FRR.
func BenchmarkSpeakerScale(b *testing.B) {
	netnstest.RequirePrivileged(b)
	frrtest.Require(b)
	if b.N > 1 {
		b.Skip("run with -benchtime 1x")
	}
	tor := netnstest.New(b, "gct-st")
	hosts := []*netnstest.NS{netnstest.New(b, "gct-sh1"), netnstest.New(b, "gct-sh2")}
	for i, h := range hosts {
		must(b, netnstest.Veth(tor, fmt.Sprintf("s%d", i+1), h, "up"))
		must(b, tor.AddrAdd(fmt.Sprintf("s%d", i+1), fmt.Sprintf("198.18.6.%d/30", 1+4*i)))
		must(b, h.AddrAdd("up", fmt.Sprintf("198.18.6.%d/30", 2+4*i)))
	}
	frr := frrtest.Start(b, tor, scaleConf, false)
	const n = 1200
	cs, lc := bgp.DepartmentCommunities(65000, 65101, deptID)
	var adverts []bgp.Advertisement
	a := netip.MustParseAddr("198.19.0.1")
	for range n {
		adverts = append(adverts, bgp.Advertisement{Prefix: netip.PrefixFrom(a, 32), Communities: cs, LargeCommunities: []bgp.LargeCommunity{lc}})
		a = a.Next()
	}
	var sps []*remote
	var cfgs []bgp.Config
	for i, h := range hosts {
		var env []string
		if dir := os.Getenv("GOVCLOUD_BGP_PROFILE_DIR"); dir != "" {
			env = append(env, "GOVCLOUD_BGP_CPUPROFILE="+filepath.Join(dir, fmt.Sprintf("speaker%d.cpu", i+1)))
		}
		sp := startSpeaker(b, h, env...)
		cfg := bgp.Config{RouterID: netip.MustParseAddr(fmt.Sprintf("198.18.6.%d", 2+4*i)), ASN: uint32(65101 + i), Peers: []bgp.Peer{
			{Address: netip.MustParseAddr(fmt.Sprintf("198.18.6.%d", 1+4*i)), ASN: 65000, HoldTime: 9 * time.Second, GracefulRestart: true}}}
		sp.MustSet(cfg, nil)
		sps, cfgs = append(sps, sp), append(cfgs, cfg)
	}
	for i, sp := range sps {
		peer := cfgs[i].Peers[0].Address.String()
		frrtest.WaitFor(b, "session", 30*time.Second, func() (bool, error) { return sp.Peer(peer).Established, nil })
	}

	// The agents' Status calls, every 20 ms per host, from now on (in each speaker's process).
	for _, sp := range sps {
		sp.Poll(20 * time.Millisecond)
	}
	b.ResetTimer()
	at := time.Now()
	var setTook [2]time.Duration
	var swg sync.WaitGroup
	for i, sp := range sps {
		swg.Add(1)
		go func() {
			defer swg.Done()
			start := time.Now()
			if _, err := sp.Set(cfgs[i], adverts); err != nil {
				b.Error(err)
			}
			setTook[i] = time.Since(start)
		}()
	}
	swg.Wait()
	frrtest.WaitFor(b, "FRR to hold every VIP from both hosts", 5*time.Minute, func() (bool, error) {
		paths, err := frr.Paths(adverts[n-1].Prefix.String())
		if err != nil || len(paths) < 2 {
			return false, err
		}
		got, err := frr.Count("ipv4")
		return got >= n, err
	})
	held := time.Since(at)
	// One VIP withdrawn from host 1: until FRR has one path left.
	at = time.Now()
	sps[0].MustSet(cfgs[0], adverts[1:])
	frrtest.WaitFor(b, "FRR to drop host 1's path", time.Minute, func() (bool, error) {
		paths, err := frr.Paths(adverts[0].Prefix.String())
		return err == nil && len(paths) == 1, err
	})
	withdrawn := time.Since(at)
	b.StopTimer()
	var rtt []time.Duration
	for _, sp := range sps {
		rtt = append(rtt, sp.Poll(0)...)
	}
	slices.Sort(rtt)
	if len(rtt) == 0 {
		rtt = []time.Duration{0}
	}
	pct := func(p float64) time.Duration { return rtt[min(len(rtt)-1, int(p*float64(len(rtt))))] }
	fmt.Printf("bgp scale: 2 speakers x %d VIPs, Status every 20 ms per speaker (%d calls)\n", n, len(rtt))
	fmt.Printf("  Set() returned after                         : %8.0f ms, %.0f ms\n", ms(setTook[0]), ms(setTook[1]))
	fmt.Printf("  FRR holds every VIP from both hosts after    : %8.0f ms\n", ms(held))
	fmt.Printf("  one withdrawal reaches FRR after             : %8.0f ms\n", ms(withdrawn))
	fmt.Printf("  Status() round trip p50 / p99 / max          : %8.1f / %.1f / %.1f ms\n", ms(pct(0.5)), ms(pct(0.99)), ms(rtt[len(rtt)-1]))
	b.ReportMetric(held.Seconds(), "held-s")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
