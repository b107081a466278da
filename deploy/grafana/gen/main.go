// Command gen writes the Grafana dashboard deploy/grafana/dashboards/govcloud.json from code
// (grafana-foundation-sdk's typed builders): 'make dashboards' runs it, and a test fails when
// the committed JSON differs from what it generates. Every panel query filters by the
// $department variable (All = .*), so the lab can run each one per department.
//
// Panels read the agents' metrics (traffic, drops, services, BGP), the compute agents' (VMs,
// volumes), the recording rules of deploy/prometheus/rules.yml, and the controller's usage
// ledger (GET /v1/usage/metrics: this month's usage and charge per department, allocations
// and quotas).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// datasource is the Prometheus data source deploy/grafana/provisioning names.
var datasource = common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("govcloud-prometheus")}

// query is one panel query: a range query, or instant as a table.
type query struct {
	expr, legend string
	table        bool
}

// panel is one panel of the grid (two per row, 12 x 8 each).
type panel struct {
	title, description, unit string
	table                    bool
	queries                  []query
}

var panels = []panel{
	{"Bandwidth in (rx) per department", "Bits per second arriving on each department's segments from the trunk.", "bps", false,
		[]query{{`8 * sum by (department) (department:govcloud_department_bytes:rate5m{department=~"$department", direction="rx"})`, "{{department}}", false}}},
	{"Bandwidth out (tx) per department", "Bits per second leaving each department's segments onto the trunk (billed as network_tx_bytes).", "bps", false,
		[]query{{`8 * sum by (department) (department:govcloud_department_bytes:rate5m{department=~"$department", direction="tx"})`, "{{department}}", false}}},
	{"Packets per second per department", "", "pps", false,
		[]query{{`sum by (department, direction) (department:govcloud_department_packets:rate5m{department=~"$department"})`, "{{department}} {{direction}}", false}}},
	{"Drops by reason", "Packets the trunk and load balancer dropped. department is empty when a drop cannot be attributed (unknown VLAN, load balancer).", "pps", false,
		[]query{{`sum by (department, reason) (department:govcloud_department_drops:rate5m{department=~"$department"})`, "{{department}} {{reason}}", false}}},
	{"Top talkers by service", "The ten services moving the most traffic through their VIPs.", "bps", false,
		[]query{{`topk(10, sum by (department, service) (service:govcloud_service_bytes:rate5m{department=~"$department"}) * 8)`, "{{department}}/{{service}}", false}}},
	{"Healthy backends per service", "", "short", false,
		[]query{{`sum by (department, service) (service:govcloud_backend_up:sum{department=~"$department"})`, "{{department}}/{{service}}", false}}},
	{"BGP sessions", "1 = established. Prefixes this host advertises to each peer.", "short", true,
		[]query{{`govcloud_bgp_session_up`, "{{host}} → {{peer}}", true}, {`govcloud_bgp_advertised_prefixes`, "{{host}} → {{peer}} prefixes", true}}},
	{"VM CPU (vCPUs busy) per department", "vCPU-seconds per second: how many vCPUs the department's VMs keep busy.", "short", false,
		[]query{{`sum by (department) (department:govcloud_vm_vcpu_seconds:rate5m{department=~"$department"})`, "{{department}}", false}}},
	{"Allocated volume storage per department", "", "bytes", false,
		[]query{{`sum by (department) (department:govcloud_volume_allocated_bytes:sum{department=~"$department"})`, "{{department}}", false}}},
	{"Traffic this month per department (bytes)", "Bytes counted over the last 30 days (the chargeback report is authoritative: 'govcloud usage').", "bytes", true,
		[]query{{`sum by (department, direction) (increase(govcloud_department_bytes_total{department=~"$department"}[30d]))`, "{{department}} {{direction}}", true}}},
	{"Month-to-date charge per department", "This month's charge so far, rated as 'govcloud usage' rates it (the controller's usage ledger; currency in the label).", "short", false,
		[]query{{`sum by (department, cost_centre, currency) (govcloud_department_month_charge{department=~"$department"})`, "{{department}} ({{cost_centre}}) {{currency}}", false}}},
	{"Usage vs quota", "What each department's VMs and volumes are given, and its outbound bandwidth, as a percentage of its quota (100% = at quota).", "percent", false,
		[]query{
			{`100 * sum by (department, resource) (govcloud_department_allocated{department=~"$department"}) / sum by (department, resource) (govcloud_department_quota{department=~"$department"})`, "{{department}} {{resource}}", false},
			{`100 * 8 * sum by (department) (department:govcloud_department_bytes:rate5m{department=~"$department", direction="tx"}) / on (department) sum by (department) (govcloud_department_quota{department=~"$department", resource="bandwidth_bits_per_second"})`, "{{department}} bandwidth", false},
		}},
	{"Month-to-date usage per department", "This month's metered quantities so far, in each resource's base unit (bytes, vCPU-seconds, MiB-seconds, GiB-seconds).", "short", true,
		[]query{{`sum by (department, resource) (govcloud_department_month_usage{department=~"$department"})`, "{{department}} {{resource}}", true}}},
}

func target(q query, ref string) *prometheus.DataqueryBuilder {
	b := prometheus.NewDataqueryBuilder().RefId(ref).Datasource(datasource).Expr(q.expr).LegendFormat(q.legend)
	if q.table {
		b = b.Instant().Format(prometheus.PromQueryFormatTable)
	}
	return b
}

// build returns the dashboard as the committed file holds it.
func build() ([]byte, error) {
	//lint:ignore SA1019 file provisioning (grafana/provisioning) loads the v1 JSON model; dashboardv2 is not read there
	d := dashboard.NewDashboardBuilder("govcloud: departments").
		Uid("govcloud-departments").
		Tags([]string{"govcloud"}).
		Timezone(common.TimeZoneUtc).
		Editable().
		Refresh("30s").
		Time("now-6h", "now").
		WithVariable(dashboard.NewQueryVariableBuilder("department").
			Label("Department").
			Datasource(datasource).
			Query(dashboard.StringOrMap{String: cog.ToPtr("label_values(govcloud_department_bytes_total, department)")}).
			Definition("label_values(govcloud_department_bytes_total, department)").
			IncludeAll(true).
			AllValue(".*").
			Multi(true).
			Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
			Sort(dashboard.VariableSortAlphabeticalAsc))
	for i, p := range panels {
		pos := dashboard.GridPos{X: uint32(12 * (i % 2)), Y: uint32(8 * (i / 2)), W: 12, H: 8}
		var targets []cog.Builder[variants.Dataquery]
		for j, q := range p.queries {
			targets = append(targets, target(q, string(rune('A'+j))))
		}
		if p.table {
			b := table.NewPanelBuilder().Id(uint32(i + 1)).Title(p.title).Description(p.description).Datasource(datasource).GridPos(pos).Unit(p.unit)
			for _, t := range targets {
				b = b.WithTarget(t)
			}
			d = d.WithPanel(b)
			continue
		}
		b := timeseries.NewPanelBuilder().Id(uint32(i + 1)).Title(p.title).Description(p.description).Datasource(datasource).GridPos(pos).Unit(p.unit).
			Legend(common.NewVizLegendOptionsBuilder().DisplayMode(common.LegendDisplayModeTable).Placement(common.LegendPlacementRight).ShowLegend(true).Calcs([]string{"mean", "max"})).
			Tooltip(common.NewVizTooltipOptionsBuilder().Mode(common.TooltipDisplayModeMulti))
		for _, t := range targets {
			b = b.WithTarget(t)
		}
		d = d.WithPanel(b)
	}
	dash, err := d.Build()
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(dash); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func main() {
	out := flag.String("o", "deploy/grafana/dashboards/govcloud.json", "file to write")
	flag.Parse()
	b, err := build()
	if err == nil {
		err = os.WriteFile(*out, b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
