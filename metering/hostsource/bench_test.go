package hostsource

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/dataplane/trunk"
	tt "github.com/govcloud/govcloud/dataplane/trunk/trunktest"
	"github.com/govcloud/govcloud/metering"
)

// scrapeStats scrapes h over loopback HTTP n times and returns p50, p99, max and the number
// of series and bytes of the last answer.
func scrapeStats(b *testing.B, h http.Handler, n int) (p50, p99, mx time.Duration, series, size int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	u := "http://" + ln.Addr().String() + "/metrics"
	d := make([]time.Duration, 0, n)
	var body []byte
	for i := 0; i < n+50; i++ {
		start := time.Now()
		resp, err := c.Get(u)
		if err != nil {
			b.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if i >= 50 { // warm-up
			d = append(d, time.Since(start))
		}
	}
	slices.Sort(d)
	for _, l := range strings.Split(string(body), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			series++
		}
	}
	return d[len(d)/2], d[len(d)*99/100], d[len(d)-1], series, len(body)
}

// BenchmarkMeteringReport prints the scrape cost of /metrics for 30 departments (fake sources,
// and the real trunk maps with 30 x 4 segments) and the trunk program's per-packet cost.
func BenchmarkMeteringReport(b *testing.B) {
	const depts, segs, n = 30, 4, 2000
	fake := metering.NewCollector(metering.FakeSources("bench", depts, segs), nil)
	p50, p99, mx, series, size := scrapeStats(b, metering.RegistryHandler(fake), n)
	fmt.Printf("scrape /metrics, %d departments x %d segments, fake sources, client_golang registry+promhttp: %d series, %d bytes; p50 %v p99 %v max %v\n",
		depts, segs, series, size, p50, p99, mx)
	p50, p99, mx, series, size = scrapeStats(b, metering.Handler(fake), n)
	fmt.Printf("scrape /metrics, %d departments x %d segments, fake sources, direct writer (served): %d series, %d bytes; p50 %v p99 %v max %v (goal p99 < 5ms)\n",
		depts, segs, series, size, p50, p99, mx)

	netnstest.RequirePrivileged(b)
	tr, err := trunk.Load(filepath.Join(tt.BPFFS(b), "trunk"))
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	if err := tr.SetUplink(1); err != nil {
		b.Fatal(err)
	}
	st := &desired.State{}
	vlan := uint16(100)
	for d := 1; d <= depts; d++ {
		name := fmt.Sprintf("dept%02d", d)
		st.Departments = append(st.Departments, desired.Department{Name: name, TableID: 1000 + d})
		for s := 1; s <= segs; s++ {
			vlan++
			st.Segments = append(st.Segments, desired.Segment{Name: fmt.Sprintf("%s-seg%d", name, s), Department: name, VLAN: int(vlan)})
			// Put the port on this VLAN, count a frame each way, move on (one port, many VLANs).
			if err := tr.SetSegment(trunk.Segment{VLAN: vlan, Ifindex: 1, Department: uint32(1000 + d), ID: uint32(vlan)}); err != nil {
				b.Fatal(err)
			}
			if err := trunkFrames(tr, vlan, 1, 100, 200); err != nil {
				b.Fatal(err)
			}
		}
	}
	real := metering.NewCollector(metering.Sources{Host: "bench", Traffic: &Trunk{Trunk: tr, Desired: func() *desired.State { return st }}}, nil)
	p50, p99, mx, series, size = scrapeStats(b, metering.Handler(real), n)
	fmt.Printf("scrape /metrics, %d departments x %d segments, real trunk maps (%d CPUs): %d series, %d bytes; p50 %v p99 %v max %v (goal p99 < 5ms)\n",
		depts, segs, ebpf.MustPossibleCPU(), series, size, p50, p99, mx)

	fmt.Println("forwarding rate with counters on versus off: not measured; the trunk program has no counters-off build (see 'make bench-agent' for the trunk versus a plain veth)")
}
