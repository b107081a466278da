package metering

import (
	"log/slog"
	"net/http"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metric names (DESIGN.md: prefix govcloud_, base units, _total for counters).
const (
	MetricDeptBytes     = "govcloud_department_bytes_total"
	MetricDeptPackets   = "govcloud_department_packets_total"
	MetricDeptDrops     = "govcloud_department_drops_total"
	MetricServiceBytes  = "govcloud_service_bytes_total"
	MetricServicePkts   = "govcloud_service_packets_total"
	MetricServiceConns  = "govcloud_service_connections_total"
	MetricBackendUp     = "govcloud_backend_up"
	MetricBGPSessionUp  = "govcloud_bgp_session_up"
	MetricBGPAdvertised = "govcloud_bgp_advertised_prefixes"
	MetricVMVCPUSeconds = "govcloud_vm_vcpu_seconds_total"
	MetricVolumeBytes   = "govcloud_volume_allocated_bytes"
	MetricSourceUp      = "govcloud_metering_source_up"
)

var (
	trafficLabels  = []string{"department", "segment", "direction", "host"}
	descDeptBytes  = prometheus.NewDesc(MetricDeptBytes, "Bytes a department segment received (rx) or sent (tx) on the trunk.", trafficLabels, nil)
	descDeptPkts   = prometheus.NewDesc(MetricDeptPackets, "Packets a department segment received (rx) or sent (tx) on the trunk.", trafficLabels, nil)
	descDeptDrops  = prometheus.NewDesc(MetricDeptDrops, "Packets dropped, by department segment and reason (department \"\" when not attributable).", []string{"department", "segment", "reason", "host"}, nil)
	svcLabels      = []string{"department", "service", "host"}
	descSvcBytes   = prometheus.NewDesc(MetricServiceBytes, "Bytes the load balancer forwarded to a service's VIP.", svcLabels, nil)
	descSvcPkts    = prometheus.NewDesc(MetricServicePkts, "Packets the load balancer forwarded to a service's VIP.", svcLabels, nil)
	descSvcConns   = prometheus.NewDesc(MetricServiceConns, "New connections the load balancer saw for a service's VIP.", svcLabels, nil)
	descBackendUp  = prometheus.NewDesc(MetricBackendUp, "1 when the backend passes its health check on this host.", []string{"department", "service", "backend", "host"}, nil)
	descBGPUp      = prometheus.NewDesc(MetricBGPSessionUp, "1 when the BGP session to the peer is established.", []string{"peer", "host"}, nil)
	descBGPAdv     = prometheus.NewDesc(MetricBGPAdvertised, "Prefixes this host advertises to the peer.", []string{"peer", "host"}, nil)
	descVMCPU      = prometheus.NewDesc(MetricVMVCPUSeconds, "CPU seconds a VM's vCPUs used.", []string{"department", "vm", "host"}, nil)
	descVolBytes   = prometheus.NewDesc(MetricVolumeBytes, "Bytes allocated to a volume.", []string{"department", "volume", "host"}, nil)
	descSourceUp   = prometheus.NewDesc(MetricSourceUp, "1 when the counter source was read without error in this scrape.", []string{"source", "host"}, nil)
	directionsBoth = []string{"rx", "tx"}
)

// Collector reads every source at scrape time and emits constant metrics: it keeps no counter
// state, so the values are exactly the dataplane's pinned sums. Series of every configured
// segment are present (at 0) before any traffic.
type Collector struct {
	src Sources
	log *slog.Logger
	// ZeroDropReasons get a 0 series per configured segment, so "no drops" is visible.
	ZeroDropReasons []string
}

// NewCollector returns a collector over src.
func NewCollector(src Sources, log *slog.Logger) *Collector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Collector{src: src, log: log}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDeptBytes, descDeptPkts, descDeptDrops, descSvcBytes, descSvcPkts, descSvcConns,
		descBackendUp, descBGPUp, descBGPAdv, descVMCPU, descVolBytes, descSourceUp} {
		ch <- d
	}
}

type tkey struct{ dept, seg, dir string }
type dkey struct{ dept, seg, reason string }
type skey struct{ dept, svc string }
type bkey struct{ dept, svc, backend string }

func (c *Collector) sourceUp(ch chan<- prometheus.Metric, name string, err error) {
	v := 1.0
	if err != nil {
		v = 0
		c.log.Warn("metering source failed", "source", name, "err", err)
	}
	ch <- prometheus.MustNewConstMetric(descSourceUp, prometheus.GaugeValue, v, name, c.src.Host)
}

// Collect implements prometheus.Collector. A failing source is logged and reported through
// govcloud_metering_source_up=0; the other sources are still exported.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	host := c.src.Host
	if s := c.src.Traffic; s != nil {
		bytes, pkts := map[tkey]uint64{}, map[tkey]uint64{}
		drops := map[dkey]uint64{}
		for _, ref := range s.Segments() {
			for _, d := range directionsBoth {
				k := tkey{ref.Department, ref.Segment, d}
				bytes[k], pkts[k] = 0, 0
			}
			for _, r := range c.ZeroDropReasons {
				drops[dkey{ref.Department, ref.Segment, r}] = 0
			}
		}
		tr, err := s.Traffic()
		if err == nil {
			for _, t := range tr {
				k := tkey{t.Department, t.Segment, t.Direction}
				bytes[k] += t.Bytes
				pkts[k] += t.Packets
			}
			var dr []Drop
			dr, err = s.Drops()
			for _, d := range dr {
				drops[dkey{d.Department, d.Segment, d.Reason}] += d.Packets
			}
		}
		c.sourceUp(ch, "traffic", err)
		for k, v := range bytes {
			ch <- prometheus.MustNewConstMetric(descDeptBytes, prometheus.CounterValue, float64(v), k.dept, k.seg, k.dir, host)
			ch <- prometheus.MustNewConstMetric(descDeptPkts, prometheus.CounterValue, float64(pkts[k]), k.dept, k.seg, k.dir, host)
		}
		for k, v := range drops {
			ch <- prometheus.MustNewConstMetric(descDeptDrops, prometheus.CounterValue, float64(v), k.dept, k.seg, k.reason, host)
		}
	}
	if s := c.src.Service; s != nil {
		svcs, err := s.Services()
		agg := map[skey]ServiceCounter{}
		for _, v := range svcs {
			k := skey{v.Department, v.Service}
			a := agg[k]
			a.Bytes += v.Bytes
			a.Packets += v.Packets
			a.Connections += v.Connections
			agg[k] = a
		}
		for k, v := range agg {
			ch <- prometheus.MustNewConstMetric(descSvcBytes, prometheus.CounterValue, float64(v.Bytes), k.dept, k.svc, host)
			ch <- prometheus.MustNewConstMetric(descSvcPkts, prometheus.CounterValue, float64(v.Packets), k.dept, k.svc, host)
			ch <- prometheus.MustNewConstMetric(descSvcConns, prometheus.CounterValue, float64(v.Connections), k.dept, k.svc, host)
		}
		bes, berr := s.Backends()
		up := map[bkey]bool{}
		for _, b := range bes {
			k := bkey{b.Department, b.Service, b.Backend}
			up[k] = up[k] || b.Up
		}
		for k, u := range up {
			ch <- prometheus.MustNewConstMetric(descBackendUp, prometheus.GaugeValue, b2f(u), k.dept, k.svc, k.backend, host)
		}
		if err == nil {
			err = berr
		}
		c.sourceUp(ch, "service", err)
	}
	if s := c.src.BGP; s != nil {
		sess, err := s.Sessions()
		seen := map[string]bool{}
		for _, p := range sess {
			if seen[p.Peer] {
				continue
			}
			seen[p.Peer] = true
			ch <- prometheus.MustNewConstMetric(descBGPUp, prometheus.GaugeValue, b2f(p.Up), p.Peer, host)
			ch <- prometheus.MustNewConstMetric(descBGPAdv, prometheus.GaugeValue, float64(p.Advertised), p.Peer, host)
		}
		c.sourceUp(ch, "bgp", err)
	}
	if s := c.src.Compute; s != nil {
		vms, err := s.VMs()
		cpu := map[skey]float64{}
		for _, v := range vms {
			cpu[skey{v.Department, v.VM}] += v.VCPUSeconds
		}
		for k, v := range cpu {
			ch <- prometheus.MustNewConstMetric(descVMCPU, prometheus.CounterValue, v, k.dept, k.svc, host)
		}
		vols, verr := s.Volumes()
		vb := map[skey]uint64{}
		for _, v := range vols {
			vb[skey{v.Department, v.Volume}] += v.AllocatedBytes
		}
		for k, v := range vb {
			ch <- prometheus.MustNewConstMetric(descVolBytes, prometheus.GaugeValue, float64(v), k.dept, k.svc, host)
		}
		if err == nil {
			err = verr
		}
		c.sourceUp(ch, "compute", err)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Handler serves the collector (and nothing else: no Go runtime metrics, which would only add
// series) in the Prometheus text format.
func Handler(c *Collector) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// sortedKeys returns the keys of m in order (stable output for reports and tests).
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
