package metering

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// requireTool skips when a program is missing, except in CI where it must be there
// (scripts/deps.sh installs it).
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found: CI must have it (scripts/deps.sh installs Debian 'prometheus')", name)
		}
		t.Skipf("%s not found: install Debian 'prometheus' (make deps)", name)
	}
	return p
}

// TestRecordingRules runs promtool's unit tests of the recording rules, and checks the
// configuration's syntax (the files it names, such as the usage job's token, are the
// operator's; rules.yml is checked above).
func TestRecordingRules(t *testing.T) {
	promtool := requireTool(t, "promtool")
	for _, args := range [][]string{{"check", "rules", "rules.yml"}, {"test", "rules", "rules_test.yml"}, {"check", "config", "--syntax-only", "prometheus.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "../deploy/prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

type dashboard struct {
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			IncludeAll bool   `json:"includeAll"`
			AllValue   string `json:"allValue"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("../deploy/grafana/dashboards/govcloud.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	return d
}

func TestDashboardShape(t *testing.T) {
	d := loadDashboard(t)
	if len(d.Templating.List) != 1 || d.Templating.List[0].Name != "department" || !d.Templating.List[0].IncludeAll || d.Templating.List[0].AllValue != ".*" {
		t.Fatalf("templating %+v: want one $department variable with All = .*", d.Templating.List)
	}
	want := []string{"Bandwidth in", "Bandwidth out", "Top talkers by service", "Drops", "BGP", "VM CPU", "volume"}
	for _, w := range want {
		found := false
		for _, p := range d.Panels {
			found = found || strings.Contains(strings.ToLower(p.Title), strings.ToLower(w))
		}
		if !found {
			t.Errorf("no panel titled like %q", w)
		}
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if !strings.Contains(tg.Expr, "bgp") && !strings.Contains(tg.Expr, `department=~"$department"`) {
				t.Errorf("panel %q: query %q ignores $department", p.Title, tg.Expr)
			}
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type promResult struct {
	Status    string `json:"status"`
	Error     string `json:"error"`
	ErrorType string `json:"errorType"`
	Data      struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	} `json:"data"`
}

func promQuery(base, q string) (promResult, error) {
	var r promResult
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return r, err
	}
	if r.Status != "success" {
		return r, fmt.Errorf("%s: %s", r.ErrorType, r.Error)
	}
	return r, nil
}

// startPrometheus runs the Debian prometheus on a free loopback port with the recording rules
// (evaluated every second) scraping target every second. It is stopped when the test ends.
func startPrometheus(t *testing.T, target string, usage ...string) string {
	t.Helper()
	bin := requireTool(t, "prometheus")
	dir := t.TempDir()
	rules, err := os.ReadFile("../deploy/prometheus/rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	fast := strings.ReplaceAll(string(rules), "interval: 30s", "interval: 1s")
	if fast == string(rules) {
		t.Fatal("rules.yml: no 'interval: 30s' to speed up for the test")
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yml"), []byte(fast), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
  - job_name: govcloud-agent
    honor_labels: true
    static_configs: [{targets: [%q]}]
`, filepath.Join(dir, "rules.yml"), target)
	for _, u := range usage { // the controller's usage ledger (its token is the test's caller)
		cfg += fmt.Sprintf("  - job_name: govcloud-usage\n    metrics_path: /v1/usage/metrics\n    honor_labels: true\n    static_configs: [{targets: [%q]}]\n", u)
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	logf, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", b)
		}
	})
	base := "http://" + addr
	for end := time.Now().Add(20 * time.Second); ; {
		if resp, err := http.Get(base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return base
			}
		}
		if time.Now().After(end) {
			t.Fatal("prometheus not ready after 20s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDashboardAgainstPrometheus: a real Prometheus scrapes /metrics served by the collector
// (fake sources with moving counters); every dashboard query, with $department set to each
// department and to All, parses and returns data, and a single department's query returns
// only that department.
func TestDashboardAgainstPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("runs prometheus: skipped with -short")
	}
	src := FakeSources("h1", 3, 2)
	tr := src.Traffic.(*FakeTraffic)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: Handler(NewCollector(src, nil))}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // traffic keeps flowing, so rates are not 0
		for ctx.Err() == nil {
			for _, r := range tr.Segments() {
				tr.Add(r.Department, r.Segment, "rx", 10, 15000)
				tr.Add(r.Department, r.Segment, "tx", 5, 4000)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	// The controller's usage ledger: this month's usage and charges, allocations and quotas.
	depts := []string{"dept01", "dept02", "dept03"}
	api := &API{Ledger: NewLedger(NewMemKV()), Prices: DefaultPrices(),
		Departments: func(context.Context) ([]Department, error) {
			return []Department{{Name: "dept01", CostCentre: "CC-1"}, {Name: "dept02", CostCentre: "CC-2"}, {Name: "dept03", CostCentre: "CC-3"}}, nil
		},
		Quotas: func(context.Context) ([]QuotaUse, error) {
			var out []QuotaUse
			for _, d := range depts {
				out = append(out, QuotaUse{Department: d, Resource: "vcpus", Allocated: 2, Quota: 8, HasQuota: true},
					QuotaUse{Department: d, Resource: "bandwidth_bits_per_second", Quota: 1e9, HasQuota: true})
			}
			return out, nil
		}}
	uln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	usrv := &http.Server{Handler: serveAs(api, Caller{Name: "prometheus", Role: RoleNetwork})}
	go func() { _ = usrv.Serve(uln) }()
	defer usrv.Close()
	base := startPrometheus(t, ln.Addr().String(), uln.Addr().String())

	// The variable's own query.
	d := loadDashboard(t)
	deadline := time.Now().Add(40 * time.Second)
	for {
		r, err := promQuery(base, "count by (department) (govcloud_department_bytes_total)")
		if err == nil && len(r.Data.Result) == len(depts) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("departments never appeared in prometheus: %v %+v", err, r)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, value := range append([]string{".*"}, depts...) {
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				q := strings.ReplaceAll(tg.Expr, "$department", value)
				var r promResult
				for {
					r, err = promQuery(base, q)
					if err != nil {
						t.Fatalf("panel %q, department %s: query %q: %v", p.Title, value, q, err)
					}
					if len(r.Data.Result) > 0 || time.Now().After(deadline) {
						break
					}
					time.Sleep(250 * time.Millisecond)
				}
				if len(r.Data.Result) == 0 {
					t.Errorf("panel %q, department %s: query %q returned no data", p.Title, value, q)
					continue
				}
				for _, s := range r.Data.Result {
					if got, ok := s.Metric["department"]; ok && value != ".*" && got != value {
						t.Errorf("panel %q, department %s: a series of department %q", p.Title, value, got)
					}
				}
			}
		}
	}
	// The bandwidth recording rule carries traffic, not zeros.
	r, err := promQuery(base, `department:govcloud_department_bytes:rate5m{department="dept02",direction="rx"} > 0`)
	if err != nil || len(r.Data.Result) != 1 {
		t.Fatalf("dept02 rx rate: %v %+v", err, r.Data.Result)
	}
}
