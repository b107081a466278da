package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/govcloud/govcloud/controlplane/desired"
)

// Verify re-checks the lab's story and returns an error naming the first failing step.
func (l *Lab) Verify(ctx context.Context) error {
	if err := l.followUp(); err != nil {
		return fmt.Errorf("lab verify: %w", err)
	}
	admin, err := l.adminToken()
	if err != nil {
		return fmt.Errorf("lab verify: is the lab up? (%w)", err)
	}
	vips, err := l.vips(ctx, admin)
	if err != nil {
		return fmt.Errorf("lab verify: reading services: %w", err)
	}
	states := map[string]*desired.State{}
	for _, h := range l.hosts {
		st, err := l.client(admin).Desired(ctx, h, 0, time.Second)
		if err != nil {
			return fmt.Errorf("lab verify: desired state of %s: %w", h, err)
		}
		states[h] = st
	}
	checks := []struct {
		name string
		fn   func() error
	}{
		{"each VIP answers HTTP from gc-client, from backends on " + l.backendHosts(), func() error { return l.checkVIPs(vips) }},
		{"FRR holds each VIP from " + l.allHosts(), func() error {
			for _, v := range vips {
				if _, err := l.frrPaths(v.VIP); err != nil {
					return err
				}
			}
			return nil
		}},
		{"departments cannot reach each other", func() error { return l.checkIsolation(states) }},
		{"the meters moved by what the checks sent", func() error { return l.checkMeters(vips, states) }},
		{"a stopped backend is taken out and its VIP still answers", func() error { return l.checkFailover(vips, states) }},
		{"Prometheus scrapes " + l.allAgents() + "; every dashboard panel returns data per department and for All", func() error { return l.checkDashboard(states) }},
		// Last: its spoofed and foreign frames must not disturb the checks above.
		{"isolation fuzz: crafted frames from a guest of each department, the ToR's L2 and gc-client cross no department and reach no management plane", func() error {
			return l.checkIsolationFuzz(ctx, states)
		}},
	}
	failed := 0
	for i, c := range checks {
		start := time.Now()
		err := c.fn()
		if err != nil {
			failed++
			l.printf("[%d/%d] FAIL %s: %v\n", i+1, len(checks), c.name, err)
			continue
		}
		l.printf("[%d/%d] ok   %s (%.1fs)\n", i+1, len(checks), c.name, time.Since(start).Seconds())
	}
	if failed > 0 {
		return fmt.Errorf("lab verify: %d of %d checks failed", failed, len(checks))
	}
	l.printf("lab verify: all %d checks passed\n", len(checks))
	return nil
}

// checkVIPs asks each VIP enough times to see every backend answer.
func (l *Lab) checkVIPs(vips []vipInfo) error {
	for _, v := range vips {
		seen := map[string]int{}
		for i := 0; i < 30 && len(seen) < 2; i++ {
			host := v.VIP
			if strings.Contains(host, ":") { // IPv6, in brackets; -g: they are not a curl glob
				host = "[" + host + "]"
			}
			body, err := nsOut(NSClient, "curl", "-g", "-sS", "--max-time", "2", "http://"+host+"/")
			if err != nil {
				return fmt.Errorf("%s (%s): %w", v.Service, v.VIP, err)
			}
			seen[strings.TrimSpace(body)]++
		}
		if len(seen) < 2 {
			return fmt.Errorf("%s (%s): only %v answered in 30 requests, want backends on %s", v.Service, v.VIP, seen, l.backendHosts())
		}
	}
	return nil
}

type guestInfo struct{ vm, dept, addr string }

func guests(states map[string]*desired.State) []guestInfo {
	var out []guestInfo
	for _, st := range states {
		for _, vm := range st.VMs {
			for _, ifc := range vm.Interfaces {
				out = append(out, guestInfo{vm: vm.Name, dept: vm.Department, addr: ifc.Prefix4.Addr().String()})
			}
		}
	}
	return out
}

// checkIsolation: every guest reaches its own department's guests (ICMP and HTTP, answered by
// the right guest) and none of another's.
func (l *Lab) checkIsolation(states map[string]*desired.State) error {
	gs := guests(states)
	// One prober per guest, all at once: each blocked probe waits out its timeout.
	errs := make([]error, len(gs))
	var wg sync.WaitGroup
	for i, a := range gs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.probeFrom(a, gs)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (l *Lab) probeFrom(a guestInfo, gs []guestInfo) error {
	for _, b := range gs {
		if a.vm == b.vm {
			continue
		}
		pingErr := l.guestPing(a.vm, b.addr, 1)
		if a.dept == b.dept {
			if pingErr != nil {
				return fmt.Errorf("%s cannot reach %s of its own department %s: %v", a.vm, b.vm, a.dept, pingErr)
			}
			if body, err := l.guestHTTP(a.vm, b.addr); err != nil || strings.TrimSpace(body) != b.vm {
				return fmt.Errorf("%s: HTTP to %s of its own department %s: %q, %v (want %q)", a.vm, b.vm, a.dept, body, err, b.vm)
			}
			continue
		}
		if pingErr == nil {
			return fmt.Errorf("%s (%s) pings %s (%s) across departments", a.vm, a.dept, b.vm, b.dept)
		}
		if _, err := l.guestHTTP(a.vm, b.addr); err == nil {
			return fmt.Errorf("%s (%s) reaches %s (%s) over TCP across departments", a.vm, a.dept, b.vm, b.dept)
		}
	}
	return nil
}

// scrape sums the values of the named metric over every agent's /metrics.
func (l *Lab) scrape(metric string) (float64, error) {
	by, err := l.scrapeBy(metric, "")
	return by[""], err
}

// scrapeBy sums the values of the named metric over every agent's /metrics, by the value of
// label ("" sums everything).
func (l *Lab) scrapeBy(metric, label string) (map[string]float64, error) {
	return l.scrapeByWhere(metric, label, "")
}

// scrapeByWhere is scrapeBy over the series whose labels hold match (e.g. `direction="tx"`;
// "" for all).
func (l *Lab) scrapeByWhere(metric, label, match string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, h := range l.hosts {
		body, err := nsOut(h, "curl", "-sS", "--max-time", "2", "http://"+Metrics+"/metrics")
		if err != nil {
			return nil, fmt.Errorf("metrics of %s: %w", h, err)
		}
		found := false
		sc := bufio.NewScanner(strings.NewReader(body))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, metric+"{") && !strings.HasPrefix(line, metric+" ") || !strings.Contains(line, match) {
				continue
			}
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				continue
			}
			key := ""
			if label != "" {
				if _, rest, ok := strings.Cut(line, label+`="`); ok {
					key, _, _ = strings.Cut(rest, `"`)
				}
			}
			out[key] += v
			found = true
		}
		if !found {
			return nil, fmt.Errorf("%s serves no %s", h, metric)
		}
	}
	return out, nil
}

// checkMeters sends traffic of both kinds and expects each meter to move by it: requests
// through each VIP move the service byte counters (the load balancer's); pings between a
// department's guests on different hosts cross the VLAN trunk and move the department byte
// counters by at least 4 x 98 bytes each (echo and reply, counted leaving one host and
// entering the other).
func (l *Lab) checkMeters(vips []vipInfo, states map[string]*desired.State) error {
	metrics := []string{"govcloud_service_bytes_total", "govcloud_department_bytes_total"}
	before := map[string]float64{}
	for _, m := range metrics {
		v, err := l.scrape(m)
		if err != nil {
			return err
		}
		before[m] = v
	}
	for _, v := range vips {
		for i := 0; i < 10; i++ {
			if _, err := curl(v.VIP); err != nil {
				return err
			}
		}
	}
	// A pair of same-department guests on different hosts.
	var from, to string
	gs := guests(states)
	for _, a := range gs {
		for _, b := range gs {
			if a.dept == b.dept && a.vm != b.vm && hostOf(states, a.vm) != hostOf(states, b.vm) {
				from, to = a.vm, b.addr
			}
		}
	}
	const pings = 5
	if from != "" {
		if err := l.guestPing(from, to, pings); err != nil {
			return fmt.Errorf("ping %s -> %s across hosts: %w", from, to, err)
		}
	}
	want := map[string]float64{"govcloud_service_bytes_total": 1, "govcloud_department_bytes_total": pings * 4 * 98}
	deadline := time.Now().Add(5 * time.Second)
	for _, m := range metrics {
		for {
			after, err := l.scrape(m)
			if err != nil {
				return err
			}
			if after-before[m] >= want[m] {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s moved by %.0f, want at least %.0f", m, after-before[m], want[m])
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

// checkFailover stops the first backend of the first service, expects its VIP to keep
// answering without it, then starts it again and waits until it serves once more.
func (l *Lab) checkFailover(vips []vipInfo, states map[string]*desired.State) error {
	v := vips[0]
	var victim string
	for _, st := range states {
		for _, svc := range st.Services {
			if svc.Name == v.Service && len(svc.Backends) > 0 && svc.Backends[0].VM != "" {
				victim = svc.Backends[0].VM
			}
		}
	}
	if victim == "" {
		return fmt.Errorf("service %s has no VM backend to stop", v.Service)
	}
	if err := l.stopServer(victim); err != nil {
		return fmt.Errorf("stopping the server of %s: %w", victim, err)
	}
	defer func() { _ = l.startServer(victim) }()
	// Taken out within interval x threshold (1 s x 2 in the lab) plus a report round: by then
	// 20 requests in a row answer, none from the victim.
	stopped := time.Now()
	for streak, i := 0, 0; streak < 20; i++ {
		body, err := nsOut(NSClient, "curl", "-sS", "--max-time", "2", "http://"+v.VIP+"/")
		switch {
		case err == nil && strings.TrimSpace(body) == victim:
			return fmt.Errorf("%s stopped but still answered", victim)
		case err == nil:
			streak++
			continue
		case time.Since(stopped) > 4*time.Second:
			return fmt.Errorf("%s stopped: VIP %s still failed request %d %.1fs later: %w", victim, v.VIP, i+1, time.Since(stopped).Seconds(), err)
		}
		streak = 0
		time.Sleep(100 * time.Millisecond)
	}
	if err := l.startServer(victim); err != nil {
		return err
	}
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; ; i++ {
		body, _ := nsOut(NSClient, "curl", "-sS", "--max-time", "2", "http://"+v.VIP+"/")
		if strings.TrimSpace(body) == victim {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New(victim + " restarted but was not taken back within 15s")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkDashboard runs every query of the Grafana dashboard against the lab's Prometheus, with
// $department set to each department and to All (.*), and expects data, of that department
// only. VM and volume panels need libvirt VMs (lab up --vms) and the usage-ledger panels the
// controller's metrics, out of gc-tor's reach: those are named, once each, not checked.
func (l *Lab) checkDashboard(states map[string]*desired.State) error {
	panels, err := l.dashboardQueries()
	if err != nil {
		return err
	}
	up, err := promQuery(`up{job="govcloud-agent"} == 1`)
	if err != nil {
		return err
	}
	if len(up) != len(l.hosts) {
		return fmt.Errorf("prometheus scrapes %d of %d agents", len(up), len(l.hosts))
	}
	if l.vmMode() {
		up, err := promQuery(`up{job="govcloud-compute"} == 1`)
		if err != nil {
			return err
		}
		if len(up) != len(l.hosts) {
			return fmt.Errorf("prometheus scrapes %d of %d compute agents", len(up), len(l.hosts))
		}
	}
	depts := map[string]bool{}
	for _, st := range states {
		for _, d := range st.Departments {
			depts[d.Name] = true
		}
	}
	values := []string{".*"}
	for d := range depts {
		values = append(values, d)
	}
	// Panels not checked here, by reason, each named once.
	const noVMs = "VM and volume panels (the guests are namespaces, not libvirt VMs; lab up --vms checks them)"
	const ledger = "usage-ledger panels (the controller's ledger is out of gc-tor's reach; metering's TestDashboardAgainstPrometheus checks them)"
	skipped := map[string]map[string]bool{}
	skip := func(why, title string) {
		if skipped[why] == nil {
			skipped[why] = map[string]bool{}
		}
		skipped[why][title] = true
	}
	deadline := time.Now().Add(30 * time.Second)
	for title, exprs := range panels {
		for _, expr := range exprs {
			if !l.vmMode() && (strings.Contains(expr, "govcloud_vm_") || strings.Contains(expr, "govcloud_volume_")) {
				skip(noVMs, title)
				continue
			}
			// The controller's usage ledger runs on the machine, out of gc-tor's reach.
			if strings.Contains(expr, "govcloud_department_month_") || strings.Contains(expr, "govcloud_department_quota") || strings.Contains(expr, "govcloud_department_allocated") {
				skip(ledger, title)
				continue
			}
			for _, v := range values {
				q := strings.ReplaceAll(expr, "$department", v)
				for {
					res, err := promQuery(q)
					if err != nil {
						return fmt.Errorf("panel %q (department %s): %w", title, v, err)
					}
					if len(res) > 0 {
						for _, s := range res {
							if got, ok := s.Metric["department"]; ok && v != ".*" && got != v {
								return fmt.Errorf("panel %q (department %s): returned department %q", title, v, got)
							}
						}
						break
					}
					if time.Now().After(deadline) {
						return fmt.Errorf("panel %q (department %s): query %q returned no data", title, v, q)
					}
					time.Sleep(500 * time.Millisecond)
				}
			}
		}
	}
	for _, why := range []string{noVMs, ledger} {
		if titles := slices.Sorted(maps.Keys(skipped[why])); len(titles) > 0 {
			l.printf("   (not checked here: %s: %s)\n", why, strings.Join(titles, ", "))
		}
	}
	return nil
}
