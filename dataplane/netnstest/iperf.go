package netnstest

import (
	"encoding/json"
	"fmt"
	"math"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// IperfIntervals reads iperf3's JSON report (-J) and returns the bit rate received in each
// interval (bit/s), in order; an error names iperf3's own error when it reported one.
func IperfIntervals(report []byte) ([]float64, error) {
	var res struct {
		Error     string `json:"error"`
		Intervals []struct {
			Sum struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum"`
		} `json:"intervals"`
	}
	if err := json.Unmarshal(report, &res); err != nil {
		return nil, fmt.Errorf("iperf3 report: %w", err)
	}
	if res.Error != "" {
		return nil, fmt.Errorf("iperf3: %s", res.Error)
	}
	out := make([]float64, len(res.Intervals))
	for i, iv := range res.Intervals {
		out[i] = iv.Sum.BitsPerSecond
	}
	return out, nil
}

// MeanMbps is the mean of xs[from:to] (bit/s) in Mbit/s; NaN when the range is empty.
func MeanMbps(xs []float64, from, to int) float64 {
	to = min(to, len(xs))
	if from >= to {
		return math.NaN()
	}
	s := 0.0
	for _, x := range xs[from:to] {
		s += x
	}
	return s / float64(to-from) / 1e6
}

// HeldAt judges a policed flow's one-second rates xs[from:to] (bit/s) against a quota in
// Mbit/s: the mean may not pass the quota by more than 10% (the limiter holds over the
// window; its bucket adds at most 300 ms at the rate) and the median second must reach 85% of
// it (the flow gets its quota). The median, not the mean, judges the floor: one second in
// which a loaded machine stalls both ends says nothing about the limiter. The error gives both
// figures; they are returned for the log.
func HeldAt(xs []float64, from, to int, quotaMbps float64) (mean, median float64, err error) {
	mean = MeanMbps(xs, from, to)
	to = min(to, len(xs))
	if from >= to {
		return math.NaN(), math.NaN(), fmt.Errorf("no one-second intervals in [%d, %d) of %d", from, to, len(xs))
	}
	w := slices.Clone(xs[from:to])
	slices.Sort(w)
	median = (w[(len(w)-1)/2] + w[len(w)/2]) / 2 / 1e6
	switch {
	case mean > 1.1*quotaMbps:
		err = fmt.Errorf("mean %.1f Mbit/s over seconds %d-%d passes the %.0f Mbit/s quota by more than 10%%", mean, from, to-1, quotaMbps)
	case median < 0.85*quotaMbps:
		err = fmt.Errorf("median second %.1f Mbit/s over seconds %d-%d is under 85%% of the %.0f Mbit/s quota", median, from, to-1, quotaMbps)
	}
	return mean, median, err
}

// IperfRun is a running iperf3 TCP test between two namespaces, data from the server's to the
// client's (-R), so the client's intervals are what it received.
type IperfRun struct {
	cmd, server *exec.Cmd
	out         strings.Builder
}

// StartIperf starts an iperf3 server in namespace serverNS (one test, port), waits up to 30 s
// for it to listen, and runs a client in clientNS toward addr for secs seconds. The server is
// killed when the test ends.
func StartIperf(tb testing.TB, clientNS, serverNS, addr, port string, secs int) *IperfRun {
	tb.Helper()
	inNS := func(ns string, args ...string) *exec.Cmd {
		return exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	}
	r := &IperfRun{server: inNS(serverNS, "iperf3", "-s", "-1", "-p", port)}
	if err := r.server.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.server.Process.Kill(); r.server.Wait() })
	for i := 0; ; i++ {
		if out, _ := inNS(serverNS, "ss", "-Hltn", "sport = :"+port).Output(); strings.Contains(string(out), port) {
			break
		}
		if i == 300 {
			tb.Fatalf("iperf3 server in %s not listening after 30s", serverNS)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.cmd = inNS(clientNS, "iperf3", "-c", addr, "-p", port, "-R", "-t", fmt.Sprint(secs), "-J")
	r.cmd.Stdout = &r.out
	if err := r.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	return r
}

// Wait waits for the client and returns the bit rate (bit/s) it received in each interval.
func (r *IperfRun) Wait(tb testing.TB) []float64 {
	tb.Helper()
	err := r.cmd.Wait()
	out, perr := IperfIntervals([]byte(r.out.String()))
	if err != nil || perr != nil {
		tb.Fatalf("iperf3: %v %v\n%s", err, perr, r.out.String())
	}
	return out
}
