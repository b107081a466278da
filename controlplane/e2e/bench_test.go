package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/client"
)

// bigConfig is 30 departments x 4 segments x 10 services per segment (1200 services), each
// department with its own VIP pool, plus two hosts.
func bigConfig(changedPort int) string {
	var b strings.Builder
	doc := func(kind, name, spec string) {
		fmt.Fprintf(&b, "---\napiVersion: govcloud/v1\nkind: %s\nmetadata: {name: %s}\nspec: %s\n", kind, name, spec)
	}
	for h := 1; h <= 2; h++ {
		doc("Host", fmt.Sprintf("host%d", h), fmt.Sprintf("{uplink: eth0, address: 198.18.255.%d, asn: 65001, bgpPeers: [{address: 198.18.255.254, asn: 65000}]}", h))
	}
	for d := 0; d < 30; d++ {
		dept := fmt.Sprintf("dept%02d", d)
		doc("Department", dept, fmt.Sprintf("{displayName: Department %d, costCentre: CC-%04d, quotas: {vcpus: 64, memoryGiB: 256, storageGiB: 4096}}", d, d))
		doc("AddressPool", dept+"-vips", fmt.Sprintf("{cidrs: [198.19.%d.0/24], departments: [%s], scope: public}", d, dept))
		for s := 0; s < 4; s++ {
			seg := fmt.Sprintf("%s-seg%d", dept, s)
			net := d*4 + s
			doc("Segment", seg, fmt.Sprintf("{department: %s, ipv4: 198.18.%d.0/24, gateway: 198.18.%d.1}", dept, net, net))
			for v := 0; v < 10; v++ {
				port := 8000 + v
				if d == 7 && s == 2 && v == 5 && changedPort != 0 {
					port = changedPort
				}
				doc("Service", fmt.Sprintf("%s-svc%d", seg, v), fmt.Sprintf(
					"{department: %s, ports: [{port: %d, protocol: tcp}], backends: [{address: 198.18.%d.%d}, {address: 198.18.%d.%d, weight: 2}], healthCheck: {type: tcp, interval: 5s}}",
					dept, port, net, 10+v, net, 100+v))
			}
		}
	}
	return b.String()
}

func timeRun(b *testing.B, api, tok string, args ...string) (time.Duration, string) {
	start := time.Now()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "GOVCLOUD_API="+api, "GOVCLOUD_TOKEN="+tok, "GOVCLOUD_CA="+caOf(api))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		b.Fatalf("%v: %v\n%s", args, err, out.String())
	}
	return time.Since(start), out.String()
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	i := int(float64(len(d)-1) * p)
	return d[i]
}

func goal(ok bool) string {
	if ok {
		return "meets goal"
	}
	return "MISSES goal"
}

// BenchmarkControlPlane is 'make bench-controlplane': apply and plan of a large file end to end
// through the CLI, then mixed load on the API from this (second) process.
func BenchmarkControlPlane(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime 1x")
	}
	dir := b.TempDir()
	c := startControllerB(b, "--data-dir", dir)
	tokb, _ := os.ReadFile(filepath.Join(dir, "admin-token"))
	tok := strings.TrimSpace(string(tokb))
	big := filepath.Join(dir, "big.yaml")
	big2 := filepath.Join(dir, "big-one-change.yaml")
	cfg := bigConfig(0)
	_ = os.WriteFile(big, []byte(cfg), 0o600)
	_ = os.WriteFile(big2, []byte(bigConfig(9999)), 0o600)
	docs := strings.Count(cfg, "\n---\n") + 1
	fmt.Printf("\n== control plane benchmark (controller with embedded etcd, fsync on; 2 cores) ==\n")
	fmt.Printf("input: 30 departments x 4 segments x 10 services = 1200 services, %d documents, %d KiB\n", docs, len(cfg)/1024)

	d, out := timeRun(b, c.url(), tok, "apply", "-f", big)
	fmt.Printf("apply (first, allocates 120 VLANs, 1200 VIPs), end to end through the CLI: %v  [goal < 1s: %s]\n    %s", d.Round(time.Millisecond), goal(d < time.Second), lastLine(out))
	d, out = timeRun(b, c.url(), tok, "plan", "-f", big2)
	fmt.Printf("plan of the same file with one change, end to end through the CLI: %v  [goal < 200ms: %s]\n    %s", d.Round(time.Millisecond), goal(d < 200*time.Millisecond), lastLine(out))
	if !strings.Contains(out, "1 to update") {
		b.Fatalf("plan did not find the one change: %s", out)
	}
	d, out = timeRun(b, c.url(), tok, "apply", "-f", big)
	fmt.Printf("re-apply of the unchanged file (no-op): %v\n    %s", d.Round(time.Millisecond), lastLine(out))

	// Load: ~500 requests/s for 10 s, open loop: 49% get one service, 49% list departments,
	// 2% apply (change one service's backend weight; a different service each time).
	const rate, dur = 500, 10 * time.Second
	cl := c.client(b, tok)
	cl.HTTP.Transport.(*http.Transport).MaxIdleConnsPerHost = 256
	cl.HTTP.Timeout = 30 * time.Second
	var mu sync.Mutex
	lat := map[string][]time.Duration{}
	errs := map[string]int{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	tick := time.NewTicker(time.Second / rate)
	end := time.Now().Add(dur)
	ctx := context.Background()
	n := 0
	for time.Now().Before(end) {
		<-tick.C
		n++
		i := n
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			var kind string
			var err error
			start := time.Now()
			switch r := i % 50; {
			case r < 25:
				kind = "get-object"
				_, err = cl.GetRaw(ctx, "services", fmt.Sprintf("dept%02d-seg%d-svc%d", i%30, i%4, i%10))
			case r < 49:
				kind = "list-departments"
				_, err = cl.ListRaw(ctx, "departments")
			default:
				kind = "apply"
				j := i / 50
				d, s, v := j%30, (j/30)%4, (j/120)%10
				y := fmt.Sprintf("apiVersion: govcloud/v1\nkind: Service\nmetadata: {name: dept%02d-seg%d-svc%d}\nspec: {department: dept%02d, ports: [{port: %d}], backends: [{address: 198.18.%d.10, weight: %d}], healthCheck: {type: tcp, interval: 5s}}\n",
					d, s, v, d, 8000+v, d*4+s, 2+i%100)
				_, err = cl.Apply(ctx, "load.yaml", []byte(y), client.ApplyOptions{})
			}
			el := time.Since(start)
			mu.Lock()
			if err != nil {
				if errs[kind] < 3 {
					fmt.Printf("    %s error: %v\n", kind, err)
				}
				errs[kind]++
			} else {
				lat[kind] = append(lat[kind], el)
			}
			mu.Unlock()
		}()
	}
	tick.Stop()
	wg.Wait()
	fmt.Printf("API under load from a second process on loopback: %d requests in %v (%.0f req/s offered)\n", n, dur, float64(n)/dur.Seconds())
	var reads []time.Duration
	for _, k := range []string{"get-object", "list-departments", "apply"} {
		l := lat[k]
		if k != "apply" {
			reads = append(reads, l...)
		}
		fmt.Printf("    %-17s n=%-5d errors=%-3d p50=%-9v p99=%-9v max=%v\n", k, len(l), errs[k], pct(l, 0.5).Round(10*time.Microsecond), pct(l, 0.99).Round(10*time.Microsecond), pct(l, 1).Round(10*time.Microsecond))
	}
	p99 := pct(reads, 0.99)
	fmt.Printf("    reads overall     p50=%v p99=%v  [goal p99 < 20ms: %s]\n", pct(reads, 0.5).Round(10*time.Microsecond), p99.Round(10*time.Microsecond), goal(p99 < 20*time.Millisecond))
	// Desired state of one host (1200 services, 120 segments) and watch wake-up after an apply.
	var dl []time.Duration
	var rev int64
	for i := 0; i < 20; i++ {
		start := time.Now()
		d, err := cl.Desired(ctx, "host1", 0, time.Second)
		if err != nil || d == nil || len(d.Services) != 1200 {
			b.Fatalf("desired: %v", err)
		}
		dl = append(dl, time.Since(start))
		rev = d.Revision
	}
	woke := make(chan time.Time, 1)
	go func() {
		if d, err := cl.Desired(ctx, "host1", rev, 30*time.Second); err == nil && d != nil {
			woke <- time.Now()
		}
		close(woke)
	}()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	if _, err := cl.Apply(ctx, "watch.yaml", []byte("apiVersion: govcloud/v1\nkind: Service\nmetadata: {name: dept00-seg0-svc1}\nspec: {department: dept00, ports: [{port: 8001}], backends: [{address: 198.18.0.11}], healthCheck: {type: tcp, interval: 5s}}\n"), client.ApplyOptions{}); err != nil {
		b.Fatal(err)
	}
	applied := time.Since(start)
	w, ok := <-woke
	if !ok {
		b.Fatal("watch did not wake")
	}
	fmt.Printf("desired state of one host (1200 services): p50=%v max=%v; apply -> watching agent woken with the new state: %v (apply itself %v)\n",
		pct(dl, 0.5).Round(10*time.Microsecond), pct(dl, 1).Round(10*time.Microsecond), w.Sub(start).Round(10*time.Microsecond), applied.Round(10*time.Microsecond))
	for k, v := range errs {
		if v > 0 {
			b.Errorf("%d %s requests failed", v, k)
		}
	}
	tlsVersusPlain(b, c, tok, cfg)
}

// tlsVersusPlain is the cost of TLS in the same run: a second controller serving plain HTTP
// (--insecure-http) holds the same objects; rounds of read load alternate between the two, and
// each round's read p99 is compared (min/median/max per protocol, ratio of medians).
func tlsVersusPlain(b *testing.B, tlsCtl *proc, tlsTok, cfg string) {
	dir := b.TempDir()
	plain := startControllerB(b, "--data-dir", dir, "--insecure-http")
	tokb, _ := os.ReadFile(filepath.Join(dir, "admin-token"))
	plainTok := strings.TrimSpace(string(tokb))
	f := filepath.Join(dir, "big.yaml")
	_ = os.WriteFile(f, []byte(cfg), 0o600)
	timeRun(b, plain.url(), plainTok, "apply", "-f", f)
	const rounds, rate, dur = 5, 500, 3 * time.Second
	clients := map[string]*client.Client{"https": tlsCtl.client(b, tlsTok), "http": plain.client(b, plainTok)}
	for _, cl := range clients {
		cl.HTTP.Transport.(*http.Transport).MaxIdleConnsPerHost = 256
		cl.HTTP.Timeout = 30 * time.Second
	}
	p99s := map[string][]time.Duration{}
	fmt.Printf("TLS cost, same run: %d alternating rounds of %v reads at %d req/s (get one service / list departments), plain HTTP vs HTTPS\n", rounds, dur, rate)
	for r := 0; r < rounds; r++ {
		order := []string{"http", "https"}
		if r%2 == 1 {
			order = []string{"https", "http"}
		}
		for _, proto := range order {
			lat, nerr := readLoad(clients[proto], rate, dur)
			if nerr > 0 {
				b.Errorf("%s round %d: %d reads failed", proto, r, nerr)
			}
			p99s[proto] = append(p99s[proto], pct(lat, 0.99))
			fmt.Printf("    round %d %-5s n=%-5d p50=%-9v p99=%v\n", r+1, proto, len(lat), pct(lat, 0.5).Round(10*time.Microsecond), pct(lat, 0.99).Round(10*time.Microsecond))
		}
	}
	med := map[string]time.Duration{}
	for _, proto := range []string{"http", "https"} {
		v := p99s[proto]
		med[proto] = pct(v, 0.5)
		fmt.Printf("    read p99 %-5s min=%-9v median=%-9v max=%v\n", proto, pct(v, 0).Round(10*time.Microsecond), med[proto].Round(10*time.Microsecond), pct(v, 1).Round(10*time.Microsecond))
	}
	ratio := float64(med["https"]) / float64(med["http"])
	fmt.Printf("    HTTPS/HTTP ratio of median read p99: %.2f  [goal < 1.20: %s]\n", ratio, goal(ratio < 1.20))
}

// readLoad offers rate reads per second for dur (open loop) and returns the latencies of the
// reads that succeeded and how many failed.
func readLoad(cl *client.Client, rate int, dur time.Duration) ([]time.Duration, int) {
	var mu sync.Mutex
	var lat []time.Duration
	nerr := 0
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	ctx := context.Background()
	end := time.Now().Add(dur)
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			start := time.Now()
			var err error
			if i%2 == 0 {
				_, err = cl.GetRaw(ctx, "services", fmt.Sprintf("dept%02d-seg%d-svc%d", i%30, i%4, i%10))
			} else {
				_, err = cl.ListRaw(ctx, "departments")
			}
			el := time.Since(start)
			mu.Lock()
			if err != nil {
				nerr++
			} else {
				lat = append(lat, el)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return lat, nerr
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1] + "\n"
}

func startControllerB(tb testing.TB, args ...string) *proc {
	tb.Helper()
	addr := freePortB(tb)
	cmd := exec.Command(bin, append([]string{"controller", "--listen", addr, "--log-level", "warn"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &proc{cmd: cmd, addr: addr, out: &out, scheme: "https://"}
	dataDir := ""
	for i, a := range args {
		if a == "--insecure-http" {
			p.scheme = "http://"
		}
		if a == "--data-dir" && i+1 < len(args) {
			dataDir = args[i+1]
		}
	}
	if p.scheme == "https://" {
		p.ca = filepath.Join(dataDir, "ca.crt")
		casMu.Lock()
		cas[p.url()] = p.ca
		casMu.Unlock()
	}
	tb.Cleanup(p.kill)
	deadline := time.Now().Add(30 * time.Second)
	for {
		hc := http.DefaultClient
		if p.ca != "" {
			c := client.New(p.url(), "")
			if err := c.SetCAFile(p.ca); err != nil {
				hc = nil
			} else {
				hc = c.HTTP
			}
		}
		if hc != nil {
			resp, err := hc.Get(p.url() + "/healthz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return p
				}
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("controller %v not up after 30s: %s", args, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
