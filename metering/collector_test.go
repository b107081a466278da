package metering

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func scrape(t *testing.T, c *Collector) string {
	t.Helper()
	srv := httptest.NewServer(Handler(c))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("scrape status %d: %s", resp.StatusCode, b)
	}
	return string(b)
}

func TestCollectorZeroSeriesFromTheStart(t *testing.T) {
	tr := &FakeTraffic{Refs: []SegmentRef{{"lands", "lands-web"}, {"health", "health-db"}}}
	c := NewCollector(Sources{Host: "h1", Traffic: tr}, nil)
	c.ZeroDropReasons = []string{"wrong_vlan"}
	out := scrape(t, c)
	for _, want := range []string{
		`govcloud_department_bytes_total{department="lands",direction="rx",host="h1",segment="lands-web"} 0`,
		`govcloud_department_bytes_total{department="health",direction="tx",host="h1",segment="health-db"} 0`,
		`govcloud_department_packets_total{department="health",direction="rx",host="h1",segment="health-db"} 0`,
		`govcloud_department_drops_total{department="lands",host="h1",reason="wrong_vlan",segment="lands-web"} 0`,
		`govcloud_metering_source_up{host="h1",source="traffic"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %s in\n%s", want, out)
		}
	}
	if n := countSeries(parse(t, out), MetricDeptBytes); n != 4 {
		t.Errorf("%d byte series, want 4 (2 segments x rx,tx)", n)
	}
}

func TestCollectorExactSumsAndAggregation(t *testing.T) {
	tr := &FakeTraffic{Refs: []SegmentRef{{"lands", "lands-web"}}}
	// Two rows with the same labels (e.g. two CPUs' worth read separately) must be summed, not
	// rejected as duplicate series.
	tr.Add("lands", "lands-web", "tx", 3, 300)
	tr.Stats = append(tr.Stats, Traffic{Department: "lands", Segment: "lands-web", Direction: "tx", Packets: 2, Bytes: 1000})
	tr.Drop = []Drop{{Reason: "unknown_vlan", Packets: 5}, {Department: "lands", Segment: "lands-web", Reason: "wrong_vlan", Packets: 1}}
	svc := &FakeService{
		Svcs: []ServiceCounter{{Department: "lands", Service: "web", Bytes: 10, Packets: 1, Connections: 1}, {Department: "lands", Service: "web", Bytes: 5, Packets: 1, Connections: 2}},
		Bes:  []BackendState{{"lands", "web", "vm1", true}, {"lands", "web", "vm2", false}},
	}
	c := NewCollector(Sources{Host: "h1", Traffic: tr, Service: svc, BGP: &FakeBGP{Sess: []BGPSession{{Peer: "198.18.0.1", Up: true, Advertised: 2}}},
		Compute: &FakeCompute{VM: []VMUsage{{"lands", "vm1", 12.5}}, Vol: []VolumeUsage{{"lands", "data", 1 << 30}}}}, nil)
	want := `
govcloud_department_bytes_total{department="lands",direction="rx",host="h1",segment="lands-web"} 0
govcloud_department_bytes_total{department="lands",direction="tx",host="h1",segment="lands-web"} 1300
govcloud_department_packets_total{department="lands",direction="rx",host="h1",segment="lands-web"} 0
govcloud_department_packets_total{department="lands",direction="tx",host="h1",segment="lands-web"} 5
govcloud_department_drops_total{department="",host="h1",reason="unknown_vlan",segment=""} 5
govcloud_department_drops_total{department="lands",host="h1",reason="wrong_vlan",segment="lands-web"} 1
govcloud_service_bytes_total{department="lands",host="h1",service="web"} 15
govcloud_service_packets_total{department="lands",host="h1",service="web"} 2
govcloud_service_connections_total{department="lands",host="h1",service="web"} 3
govcloud_backend_up{backend="vm1",department="lands",host="h1",service="web"} 1
govcloud_backend_up{backend="vm2",department="lands",host="h1",service="web"} 0
govcloud_bgp_session_up{host="h1",peer="198.18.0.1"} 1
govcloud_bgp_advertised_prefixes{host="h1",peer="198.18.0.1"} 2
govcloud_vm_vcpu_seconds_total{department="lands",host="h1",vm="vm1"} 12.5
govcloud_volume_allocated_bytes{department="lands",host="h1",volume="data"} 1.073741824e+09
govcloud_metering_source_up{host="h1",source="bgp"} 1
govcloud_metering_source_up{host="h1",source="compute"} 1
govcloud_metering_source_up{host="h1",source="service"} 1
govcloud_metering_source_up{host="h1",source="traffic"} 1
`
	got := parse(t, scrape(t, c))
	wantM := parse(t, want)
	for k, v := range wantM {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if len(got) != len(wantM) {
		t.Errorf("%d series, want %d: %v", len(got), len(wantM), got)
	}
	// No state in the collector: a second scrape after more traffic shows the new sums.
	tr.Add("lands", "lands-web", "rx", 7, 700)
	if got := parse(t, scrape(t, c))[`govcloud_department_bytes_total{department="lands",direction="rx",host="h1",segment="lands-web"}`]; got != 700 {
		t.Fatalf("rx bytes after more traffic = %v, want 700", got)
	}
}

// parse reads the text exposition format into series -> value.
func parse(t *testing.T, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		var v float64
		if _, err := fmt.Sscan(l[i+1:], &v); err != nil {
			t.Fatalf("value of %q: %v", l, err)
		}
		out[l[:i]] = v
	}
	return out
}

func countSeries(m map[string]float64, name string) int {
	n := 0
	for k := range m {
		if strings.HasPrefix(k, name+"{") {
			n++
		}
	}
	return n
}

func TestCollectorFailingSourceKeepsOthers(t *testing.T) {
	tr := &FakeTraffic{Refs: []SegmentRef{{"lands", "lands-web"}}, Err: errors.New("map gone")}
	c := NewCollector(Sources{Host: "h1", Traffic: tr, BGP: &FakeBGP{Sess: []BGPSession{{Peer: "198.18.0.1", Up: true}, {Peer: "198.18.0.2", Up: true, BFD: "down"}}}}, nil)
	out := scrape(t, c)
	if !strings.Contains(out, `govcloud_metering_source_up{host="h1",source="traffic"} 0`) {
		t.Errorf("traffic source not reported down:\n%s", out)
	}
	if !strings.Contains(out, `govcloud_bgp_bfd_up{host="h1",peer="198.18.0.2"} 0`) || strings.Contains(out, `govcloud_bgp_bfd_up{host="h1",peer="198.18.0.1"}`) {
		t.Errorf("BFD gauge: want 0 for the peer with BFD down and none for the peer without BFD:\n%s", out)
	}
	if !strings.Contains(out, `govcloud_bgp_session_up{host="h1",peer="198.18.0.1"} 1`) {
		t.Errorf("bgp missing while traffic failed:\n%s", out)
	}
}

func TestFakeSourcesCardinality(t *testing.T) {
	c := NewCollector(FakeSources("h1", 30, 2), nil)
	// 30 departments x 2 segments x 2 directions.
	m := parse(t, scrape(t, c))
	if n := countSeries(m, MetricDeptBytes); n != 120 {
		t.Fatalf("%d byte series, want 120", n)
	}
	if n := len(m); n > 1000 {
		t.Fatalf("%d series for 30 departments: cardinality too high", n)
	}
}

// TestHandlerMatchesRegistry: the direct text writer serves exactly what client_golang's
// registry and promhttp would, escaping included.
func TestHandlerMatchesRegistry(t *testing.T) {
	src := FakeSources("h1", 5, 3)
	src.Traffic.(*FakeTraffic).Add("odd \"dept\"", "seg\\with\nnewline", "rx", 1, 2)
	c := NewCollector(src, nil)
	c.ZeroDropReasons = []string{"wrong_vlan"}
	fast := httptest.NewServer(Handler(c))
	defer fast.Close()
	reg := httptest.NewServer(RegistryHandler(c))
	defer reg.Close()
	get := func(u string) string {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	a, b := get(fast.URL), get(reg.URL)
	if a != b {
		al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
		for i := 0; i < len(al) && i < len(bl); i++ {
			if al[i] != bl[i] {
				t.Fatalf("direct writer differs from the registry at line %d:\n direct   %s\n registry %s", i+1, al[i], bl[i])
			}
		}
		t.Fatalf("direct writer has %d lines, the registry %d", len(al), len(bl))
	}
}
