package gobgp

// The speaker under test runs in a child process started with 'ip netns exec' so that every
// socket GoBGP opens from its goroutines (listener, dials) is in the host namespace: a
// namespace is per thread, and GoBGP's goroutines run on any thread. The child is this test
// binary (TestMain sees the helper variable) driven by JSON lines on stdin/stdout.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/bgp"
	"github.com/govcloud/govcloud/dataplane/netnstest"
)

const helperEnv = "GOVCLOUD_BGP_SPEAKER_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		runHelper(os.Stdin, os.Stdout)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type request struct {
	Op         string              `json:"op"` // set, status, close, new, poll (start; 0 ms: stop)
	Config     bgp.Config          `json:"config"`
	Passwords  map[string]string   `json:"passwords,omitempty"` // bgp.Secret never marshals
	Adverts    []bgp.Advertisement `json:"adverts,omitempty"`
	Graceful   bool                `json:"graceful,omitempty"`
	Restarting bool                `json:"restarting,omitempty"`
	PollMs     int                 `json:"pollMs,omitempty"`
}

type response struct {
	Err    string           `json:"err,omitempty"`
	Status []bgp.PeerStatus `json:"status,omitempty"`
	SetAt  int64            `json:"setAt,omitempty"` // unix ns just before Set
	Took   int64            `json:"took,omitempty"`  // ns Set took
	Polls  []int64          `json:"polls,omitempty"` // poll: each Status round trip (ns) since the start
}

func runHelper(in io.Reader, out io.Writer) {
	level := slog.LevelInfo
	if os.Getenv("GOVCLOUD_BGP_DEBUG") == "1" {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	sp := New(Options{Logger: logger, Restarting: os.Getenv("GOVCLOUD_BGP_RESTARTING") == "1", ConnectRetry: time.Second})
	// GOVCLOUD_BGP_CPUPROFILE: a CPU profile of this speaker process (benchmarks).
	if path := os.Getenv("GOVCLOUD_BGP_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil && pprof.StartCPUProfile(f) == nil {
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	dec := json.NewDecoder(in)
	enc := json.NewEncoder(out)
	// poll calls Status every PollMs on its own goroutine, as an agent's reconcile passes do
	// while its speaker works through a Set.
	var pollStop chan struct{}
	var pollDone chan []int64
	for {
		var req request
		if err := dec.Decode(&req); err != nil {
			_ = sp.Close(context.Background(), false)
			return
		}
		var resp response
		switch req.Op {
		case "set":
			for i := range req.Config.Peers {
				req.Config.Peers[i].Password = bgp.Secret(req.Passwords[req.Config.Peers[i].Address.String()])
			}
			t0 := time.Now()
			err := sp.Set(req.Config, req.Adverts)
			resp.SetAt, resp.Took = t0.UnixNano(), int64(time.Since(t0))
			if err != nil {
				resp.Err = err.Error()
			}
		case "status":
			resp.Status = sp.Status()
		case "close":
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := sp.Close(ctx, req.Graceful); err != nil {
				resp.Err = err.Error()
			}
			cancel()
		case "poll":
			if pollStop != nil {
				close(pollStop)
				resp.Polls = <-pollDone
				pollStop = nil
			}
			if req.PollMs > 0 {
				pollStop, pollDone = make(chan struct{}), make(chan []int64, 1)
				go func(stop <-chan struct{}, done chan<- []int64, every time.Duration) {
					var rtt []int64
					for {
						select {
						case <-stop:
							done <- rtt
							return
						case <-time.After(every):
						}
						t0 := time.Now()
						sp.Status()
						rtt = append(rtt, int64(time.Since(t0)))
					}
				}(pollStop, pollDone, time.Duration(req.PollMs)*time.Millisecond)
			}
		case "new":
			sp = New(Options{Logger: logger, Restarting: req.Restarting, ConnectRetry: time.Second})
		default:
			resp.Err = "unknown op " + req.Op
		}
		_ = enc.Encode(resp)
	}
}

// remote is a speaker running in a child process inside a namespace.
type remote struct {
	t      testing.TB
	ns     *netnstest.NS
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *json.Decoder
	stderr string
}

func startSpeaker(t testing.TB, ns *netnstest.NS, env ...string) *remote {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	errPath := filepath.Join(t.TempDir(), "speaker-"+ns.Name+".log")
	errf, err := os.Create(errPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns.Name, exe, "-test.run=^$")
	cmd.Env = append(append(os.Environ(), helperEnv+"=1"), env...)
	cmd.Stderr = errf
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting speaker in %s: %v", ns.Name, err)
	}
	r := &remote{t: t, ns: ns, cmd: cmd, in: in, out: json.NewDecoder(bufio.NewReader(outp)), stderr: errPath}
	t.Cleanup(func() {
		r.stop()
		errf.Close()
		if b, _ := os.ReadFile(errPath); strings.Contains(string(b), "DATA RACE") || strings.Contains(string(b), "panic:") {
			// The reports, not the log's tail: routes logged after a race bury it.
			i := max(strings.Index(string(b), "WARNING: DATA RACE"), strings.Index(string(b), "panic:"))
			t.Errorf("speaker in %s: data race or panic in its log:\n%s", ns.Name, string(b[i:min(len(b), i+12000)]))
		}
		if t.Failed() {
			b, _ := os.ReadFile(errPath)
			t.Logf("speaker in %s log:\n%s", ns.Name, tail(string(b), 6000))
		}
	})
	return r
}

func (r *remote) stop() {
	if r.cmd.ProcessState != nil {
		return
	}
	r.in.Close()
	done := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-done
	}
}

func (r *remote) call(req request) response {
	r.t.Helper()
	if err := json.NewEncoder(r.in).Encode(req); err != nil {
		r.t.Fatalf("speaker in %s: sending %s: %v", r.ns.Name, req.Op, err)
	}
	var resp response
	if err := r.out.Decode(&resp); err != nil {
		r.t.Fatalf("speaker in %s: reading answer to %s: %v", r.ns.Name, req.Op, err)
	}
	return resp
}

// Set sends the desired state; it returns when Set returned in the child, and when it began.
func (r *remote) Set(cfg bgp.Config, adverts []bgp.Advertisement) (time.Time, error) {
	r.t.Helper()
	req := request{Op: "set", Config: cfg, Adverts: adverts, Passwords: map[string]string{}}
	for _, p := range cfg.Peers {
		req.Passwords[p.Address.String()] = p.Password.Reveal()
	}
	resp := r.call(req)
	if resp.Err != "" {
		return time.Unix(0, resp.SetAt), fmt.Errorf("%s", resp.Err)
	}
	return time.Unix(0, resp.SetAt), nil
}

func (r *remote) MustSet(cfg bgp.Config, adverts []bgp.Advertisement) time.Time {
	r.t.Helper()
	at, err := r.Set(cfg, adverts)
	if err != nil {
		r.t.Fatalf("speaker in %s: Set: %v", r.ns.Name, err)
	}
	return at
}

func (r *remote) Status() []bgp.PeerStatus { r.t.Helper(); return r.call(request{Op: "status"}).Status }

// Poll makes the child call Status every interval on its own (0: stop) and returns the round
// trips of the polling it stops.
func (r *remote) Poll(every time.Duration) []time.Duration {
	r.t.Helper()
	var out []time.Duration
	for _, ns := range r.call(request{Op: "poll", PollMs: int(every.Milliseconds())}).Polls {
		out = append(out, time.Duration(ns))
	}
	return out
}

func (r *remote) Peer(addr string) bgp.PeerStatus {
	r.t.Helper()
	for _, s := range r.Status() {
		if s.Address.String() == addr {
			return s
		}
	}
	r.t.Fatalf("speaker in %s: no status for peer %s", r.ns.Name, addr)
	return bgp.PeerStatus{}
}

func (r *remote) Close(graceful bool) {
	r.t.Helper()
	if resp := r.call(request{Op: "close", Graceful: graceful}); resp.Err != "" {
		r.t.Fatalf("speaker in %s: Close: %s", r.ns.Name, resp.Err)
	}
}

// Renew replaces the child's speaker with a new one (after Close), like an agent restart.
func (r *remote) Renew(restarting bool) {
	r.t.Helper()
	r.call(request{Op: "new", Restarting: restarting})
}

// RSS is the child's resident set size in bytes.
func (r *remote) RSS() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func (r *remote) Log() string {
	b, _ := os.ReadFile(r.stderr)
	return string(b)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
