package lab

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// promListen is where the lab's Prometheus answers, inside gc-tor.
const promListen = "127.0.0.1:9090"

// deployDir is the repository's deploy/ directory, found from the applied configuration
// (deploy/examples/lab).
func (l *Lab) deployDir() string { return filepath.Dir(filepath.Dir(l.opt.Config)) }

// startPrometheus runs Debian's prometheus in gc-tor with promConfig, as an operator's would.
func (l *Lab) startPrometheus() error {
	dir := filepath.Join(l.dir, "prometheus")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var rules string
	if b, err := os.ReadFile(filepath.Join(l.deployDir(), "prometheus", "rules.yml")); err == nil {
		rules = filepath.Join(dir, "rules.yml")
		fast := strings.ReplaceAll(string(b), "interval: 30s", "interval: 5s")
		if err := os.WriteFile(rules, []byte(fast), 0o644); err != nil {
			return err
		}
	}
	cfg := promConfig(rules, len(l.hosts), l.vmMode(), l.opt.ScrapeInterval)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		return err
	}
	return l.start("prometheus", NSTor, "prometheus", "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promListen, "--log.level=warn")
}

// promConfig is the lab's prometheus.yml: every one of the n hosts' agents (and with vms every
// compute agent) scraped over the fabric every interval (0: every second), with the recording
// rules in the file rules ("" for none).
func promConfig(rules string, n int, vms bool, interval time.Duration) string {
	var targets []string
	for i := range n {
		targets = append(targets, fmt.Sprintf("%q", hostAddr(i)+":9480"))
	}
	if interval <= 0 {
		interval = time.Second
	}
	every := fmt.Sprintf("%dms", interval.Milliseconds()) // Prometheus's duration form
	if interval%time.Second == 0 {
		every = fmt.Sprintf("%ds", int(interval.Seconds()))
	}
	cfg := fmt.Sprintf("global: {scrape_interval: %s, evaluation_interval: 5s}\n", every)
	if rules != "" {
		cfg += fmt.Sprintf("rule_files: [%q]\n", rules)
	}
	cfg += fmt.Sprintf("scrape_configs:\n  - job_name: govcloud-agent\n    honor_labels: true\n    static_configs: [{targets: [%s]}]\n", strings.Join(targets, ", "))
	if vms {
		var ct []string
		for i := range n {
			ct = append(ct, fmt.Sprintf("%q", hostAddr(i)+":"+computeMetricsPort))
		}
		cfg += fmt.Sprintf("  - job_name: govcloud-compute\n    honor_labels: true\n    static_configs: [{targets: [%s]}]\n", strings.Join(ct, ", "))
	}
	return cfg
}

type promSeries struct {
	Metric map[string]string `json:"metric"`
}

// promQuery runs an instant query against the lab's Prometheus.
func promQuery(q string) ([]promSeries, error) {
	out, err := exec.Command("ip", "netns", "exec", NSTor, "curl", "-sS", "--max-time", "3",
		"http://"+promListen+"/api/v1/query?query="+url.QueryEscape(q)).Output()
	if err != nil {
		return nil, fmt.Errorf("prometheus: %w", err)
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []promSeries `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("prometheus answer %q: %w", out, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", q, r.Error)
	}
	return r.Data.Result, nil
}

// dashboardQueries reads every panel query of the Grafana dashboard.
func (l *Lab) dashboardQueries() (map[string][]string, error) {
	b, err := os.ReadFile(filepath.Join(l.deployDir(), "grafana", "dashboards", "govcloud.json"))
	if err != nil {
		return nil, err
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	out := map[string][]string{}
	for _, p := range d.Panels {
		for _, t := range p.Targets {
			out[p.Title] = append(out[p.Title], t.Expr)
		}
	}
	return out, nil
}
