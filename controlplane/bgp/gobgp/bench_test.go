package gobgp

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/bgp"
	"github.com/govcloud/govcloud/controlplane/bgp/frrtest"
	"github.com/govcloud/govcloud/dataplane/netnstest"
)

const benchConf = `frr defaults datacenter
hostname benchtor
!
router bgp 65000
 bgp router-id 198.18.5.1
 no bgp ebgp-requires-policy
 neighbor 198.18.5.2 remote-as 65105
 neighbor 198.18.5.2 timers connect 1
!
`

// BenchmarkBGPReport measures (make bench-bgp): the time from Set() to the UPDATE on the
// wire at FRR's interface (pcap timestamps) over 100 advertise/withdraw changes, and how long
// FRR takes to hold 10,000 VIPs, with the speaker process's RSS.
func BenchmarkBGPReport(b *testing.B) {
	netnstest.RequirePrivileged(b)
	frrtest.Require(b)
	netnstest.RequireTool(b, "tcpdump")
	tor, h := netnstest.New(b, "gct-bt"), netnstest.New(b, "gct-bh")
	must(b, netnstest.Veth(tor, "t5", h, "up"))
	must(b, tor.AddrAdd("t5", "198.18.5.1/30"))
	must(b, h.AddrAdd("up", "198.18.5.2/30"))
	frr := frrtest.Start(b, tor, benchConf, false)
	sp := startSpeaker(b, h)
	cfg := bgp.Config{RouterID: netip.MustParseAddr("198.18.5.2"), ASN: 65105, Peers: []bgp.Peer{
		{Address: netip.MustParseAddr("198.18.5.1"), ASN: 65000, HoldTime: 9 * time.Second, GracefulRestart: true}}}
	cs, lc := bgp.DepartmentCommunities(65000, 65105, deptID)
	advert := func(a netip.Addr) bgp.Advertisement {
		return bgp.Advertisement{Prefix: netip.PrefixFrom(a, 32), Communities: cs, LargeCommunities: []bgp.LargeCommunity{lc}}
	}
	sp.MustSet(cfg, nil)
	frrtest.WaitFor(b, "session", 30*time.Second, func() (bool, error) { return sp.Peer("198.18.5.1").Established, nil })

	events := capture(b, tor, "t5")
	b.ResetTimer()

	// 1. Latency over 100 changes: advertise a new VIP, then withdraw it, and so on.
	var lat, took []time.Duration
	loopStart := time.Now()
	base := netip.MustParseAddr("198.18.200.0")
	for i := 0; i < 100; i++ {
		a := base
		for j := 0; j < i/2; j++ {
			a = a.Next()
		}
		var adverts []bgp.Advertisement
		if i%2 == 0 {
			adverts = []bgp.Advertisement{advert(a)}
		}
		at := sp.MustSet(cfg, adverts)
		took = append(took, time.Since(at))
		want := wireEvent{prefix: netip.PrefixFrom(a, 32), withdrawn: i%2 == 1}
		deadline := time.After(3 * time.Second)
	wait:
		for {
			select {
			case ev := <-events:
				if ev.prefix == want.prefix && ev.withdrawn == want.withdrawn {
					lat = append(lat, ev.at.Sub(at))
					break wait
				}
			case <-deadline:
				b.Fatalf("change %d (%+v): no UPDATE on the wire within 3s", i, want)
			}
		}
	}
	slices.Sort(lat)
	slices.Sort(took)
	fmt.Printf("bgp: 100 changes took %s; Set() round trip p50 %s max %s\n", time.Since(loopStart).Round(time.Millisecond), took[50], took[99])
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	b.ReportMetric(float64(pct(0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	fmt.Printf("bgp: Set() -> UPDATE at FRR's interface over %d changes: p50 %s  p99 %s  max %s (goal p99 < 200ms)\n",
		len(lat), pct(0.5).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))

	// 2. 10,000 VIPs at once.
	const n = 10000
	adverts := make([]bgp.Advertisement, 0, n)
	a := netip.MustParseAddr("198.19.0.0")
	for i := 0; i < n; i++ {
		adverts = append(adverts, advert(a))
		a = a.Next()
	}
	rssBefore := sp.RSS()
	go func() { // drain the capture: the wire view of the bulk load
		for range events {
		}
	}()
	at := sp.MustSet(cfg, adverts)
	setDone := time.Now()
	var held time.Time
	frrtest.WaitFor(b, "FRR to hold 10,000 VIPs", 60*time.Second, func() (bool, error) {
		got, err := frr.Count("ipv4")
		if got >= n {
			held = time.Now()
			return true, nil
		}
		return false, err
	})
	total := held.Sub(at)
	b.ReportMetric(total.Seconds(), "10k-s")
	b.ReportMetric(float64(sp.RSS())/(1<<20), "rss-MiB")
	fmt.Printf("bgp: 10,000 VIPs: Set() returned after %s, FRR held all after %s (goal < 2s); speaker RSS %.1f MiB (%.1f MiB before)\n",
		setDone.Sub(at).Round(time.Millisecond), total.Round(time.Millisecond), float64(sp.RSS())/(1<<20), float64(rssBefore)/(1<<20))
	msgs := map[string]int{}
	for _, l := range strings.Split(sp.Log(), "\n") {
		if _, m, ok := strings.Cut(l, "msg=\""); ok {
			m, _, _ = strings.Cut(m, "\"")
			msgs[m]++
		}
	}
	fmt.Printf("bgp: speaker log lines by message: %v\n", msgs)
	st := sp.Peer("198.18.5.1")
	fmt.Printf("bgp: speaker status: %s advertised %d\n", st.State, st.Advertised)
	if st.Advertised != n {
		b.Errorf("speaker reports %d advertised, want %d", st.Advertised, n)
	}

	// 3. Withdraw all 10,000 at once.
	at = sp.MustSet(cfg, nil)
	frrtest.WaitFor(b, "FRR to drop the 10,000 VIPs", 60*time.Second, func() (bool, error) {
		got, err := frr.Count("ipv4")
		held = time.Now()
		return err == nil && got == 0, err
	})
	b.ReportMetric(held.Sub(at).Seconds(), "10k-withdraw-s")
	fmt.Printf("bgp: withdrawing 10,000 VIPs: FRR held none after %s\n", held.Sub(at).Round(time.Millisecond))
}

type wireEvent struct {
	at        time.Time
	prefix    netip.Prefix
	withdrawn bool
}

// capture runs tcpdump on link in ns and decodes the IPv4 unicast NLRI and withdrawn routes
// of every BGP UPDATE it sees, with the packet's kernel timestamp.
func capture(tb testing.TB, ns *netnstest.NS, link string) <-chan wireEvent {
	tb.Helper()
	cmd := ns.Cmd("tcpdump", "-i", link, "--immediate-mode", "-U", "-n", "-s", "0", "-w", "-", "tcp port 179")
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan string, 8)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			ready <- sc.Text()
		}
		close(ready)
	}()
	var said []string
	for line := range ready {
		said = append(said, line)
		if strings.Contains(line, "listening on") {
			break
		}
	}
	if len(said) == 0 || !strings.Contains(said[len(said)-1], "listening on") {
		tb.Fatalf("tcpdump did not start: %s", strings.Join(said, "\n"))
	}
	go func() {
		for range ready {
		}
	}()
	ch := make(chan wireEvent, 1<<16)
	go func() {
		defer close(ch)
		r := bufio.NewReaderSize(out, 1<<20)
		var gh [24]byte
		if _, err := io.ReadFull(r, gh[:]); err != nil {
			return
		}
		nano := binary.LittleEndian.Uint32(gh[:4]) == 0xa1b23c4d
		for {
			var ph [16]byte
			if _, err := io.ReadFull(r, ph[:]); err != nil {
				return
			}
			sec, frac := binary.LittleEndian.Uint32(ph[0:4]), binary.LittleEndian.Uint32(ph[4:8])
			if !nano {
				frac *= 1000
			}
			pkt := make([]byte, binary.LittleEndian.Uint32(ph[8:12]))
			if _, err := io.ReadFull(r, pkt); err != nil {
				return
			}
			at := time.Unix(int64(sec), int64(frac))
			for _, ev := range decodeUpdates(pkt) {
				ev.at = at
				ch <- ev
			}
		}
	}()
	return ch
}

// decodeUpdates parses an Ethernet/IPv4/TCP frame whose payload holds whole BGP messages.
func decodeUpdates(pkt []byte) []wireEvent {
	if len(pkt) < 14+20 || binary.BigEndian.Uint16(pkt[12:14]) != 0x0800 {
		return nil
	}
	ip := pkt[14:]
	ihl := int(ip[0]&0x0f) * 4
	if len(ip) < ihl+20 || ip[9] != 6 {
		return nil
	}
	tcp := ip[ihl:]
	p := tcp[int(tcp[12]>>4)*4:]
	var out []wireEvent
	for len(p) >= 19 {
		l := int(binary.BigEndian.Uint16(p[16:18]))
		if l < 19 || l > len(p) {
			break
		}
		msg := p[19:l]
		if p[18] == 2 && len(msg) >= 4 { // UPDATE
			wl := int(binary.BigEndian.Uint16(msg[0:2]))
			if 2+wl+2 <= len(msg) {
				out = append(out, prefixes(msg[2:2+wl], true)...)
				al := int(binary.BigEndian.Uint16(msg[2+wl : 4+wl]))
				if 4+wl+al <= len(msg) {
					out = append(out, prefixes(msg[4+wl+al:], false)...)
				}
			}
		}
		p = p[l:]
	}
	return out
}

func prefixes(b []byte, withdrawn bool) []wireEvent {
	var out []wireEvent
	for len(b) > 0 {
		bits := int(b[0])
		n := (bits + 7) / 8
		if bits > 32 || 1+n > len(b) {
			break
		}
		var a [4]byte
		copy(a[:], b[1:1+n])
		out = append(out, wireEvent{prefix: netip.PrefixFrom(netip.AddrFrom4(a), bits), withdrawn: withdrawn})
		b = b[1+n:]
	}
	return out
}
