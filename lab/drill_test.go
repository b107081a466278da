package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/metering"
)

// lateYAML is what the drill creates after its backup: a segment of a department that exists.
// The operator keeps it (in git); the drill finds it lost by name and applies it again.
const lateYAML = `apiVersion: govcloud/v1
kind: Segment
metadata: {name: lands-late}
spec: {department: lands, vlan: 150, ipv4: 198.18.50.0/24, gateway: 198.18.50.1}
`

// restoredListen is where the drill's restored controller listens: another address than the
// lost one (API), so its server certificate must be made for it.
const restoredListen = "127.0.0.2:8480"

// disasterDrill (issue 15) loses the controller of the running lab and recovers it from a
// backup while traffic runs:
//
//  1. traffic: long-lived HTTP keep-alive connections from gc-client through a VIP (a request
//     every 200 ms each), and a steady TCP transfer between two guests of one department on
//     different hosts (crossing the VLAN trunk, so it is metered and billed);
//  2. a backup ('govcloud backup create'), then more changes (lateYAML) and traffic;
//  3. the controller killed (SIGKILL) and its data dir deleted;
//  4. 'govcloud restore' into a new data dir, the controller started at another address
//     (restoredListen), the hosts' agents compared with the restored store: what they hold
//     that the store lacks is reported lost by name, and applied again from lateYAML;
//  5. the agents re-pointed (controller file rewritten, SIGHUP: no restart);
//
// then it asserts that 'lab verify' passes, no connection broke, the agents made 0 dataplane
// writes (every object and allocation they hold came back unchanged), and the month's bill
// for the department equals the bytes its sending side's counters saw on the trunk (the bill
// rates east-west bytes once, as network_tx_bytes). It returns the recovery time: restore
// start to 'lab verify' passing.
func disasterDrill(t testing.TB, bin, dir string, run func(args ...string) (string, error)) time.Duration {
	ctx := context.Background()
	l, admin := openLab(t, bin, dir)
	c := l.client(admin)
	vips, err := l.vips(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	// lab verify's failover check stops a backend of the first service: hold connections
	// through the last one.
	vip := vips[len(vips)-1]
	states := map[string]*desired.State{}
	for _, h := range defaultHosts {
		if states[h], err = c.Desired(ctx, h, 0, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	var from, to guestInfo
	for _, a := range guests(states) {
		for _, b := range guests(states) {
			if a.dept == vip.Department && b.dept == a.dept && hostOf(states, a.vm) != hostOf(states, b.vm) {
				from, to = a, b
			}
		}
	}
	if from.vm == "" {
		t.Fatalf("no two guests of department %s on different hosts: %v", vip.Department, guests(states))
	}
	dept := vip.Department
	month := metering.Month(time.Now())
	bill := func() (uint64, error) {
		b, err := (&metering.Client{Base: l.api(), Token: admin, HTTP: l.client(admin).HTTP}).Bill(ctx, month, dept)
		if err != nil {
			return 0, err
		}
		var n uint64
		for _, ln := range b.Lines {
			if ln.Department == dept && ln.Resource == metering.ResNetTxBytes {
				n += ln.BaseQuantity
			}
		}
		return n, nil
	}
	// The bill rates east-west bytes once, where they leave a host (network_tx_bytes); the
	// receiving host's count (rx) is metered, not billed.
	wire := func() (uint64, error) {
		by, err := l.scrapeByWhere("govcloud_department_bytes_total", "department", `direction="tx"`)
		return uint64(by[dept]), err
	}
	// unbilled is what the sending side's counters saw that the bill does not hold: the
	// agents' totals at their first reports (the ledger's baselines), once the ledger caught
	// up. It is read when the counters stand still across the read of the bill and two report
	// intervals.
	unbilled := func(want int64, has bool) (int64, error) {
		var last int64
		var lastAt time.Time
		deadline := time.Now().Add(45 * time.Second)
		var err error
		for time.Now().Before(deadline) {
			time.Sleep(500 * time.Millisecond)
			var w1, b, w2 uint64
			if w1, err = wire(); err != nil {
				continue
			}
			if b, err = bill(); err != nil {
				continue
			}
			if w2, err = wire(); err != nil || w1 != w2 {
				continue
			}
			k := int64(w1) - int64(b)
			if has && k == want {
				return k, nil
			}
			if k != last {
				last, lastAt = k, time.Now()
				err = fmt.Errorf("department %s: counters %d bytes, bill %d (%d unbilled)", dept, w1, b, k)
				continue
			}
			if !has && time.Since(lastAt) > 3*usageInterval {
				return k, nil
			}
		}
		if has {
			return last, fmt.Errorf("the bill does not follow the wire: %d bytes unbilled, %d before the drill (%v)", last, want, err)
		}
		return last, fmt.Errorf("the bill did not settle: %v", err)
	}
	k0, err := unbilled(0, false)
	if err != nil {
		t.Fatal(err)
	}
	bill0, _ := bill()

	// 1. Traffic.
	conns, err := holdConnections(vip.VIP, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer conns.stop()
	xfer, err := startTransfer("gc-vm-"+from.vm, "gc-vm-"+to.vm, to.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer xfer.stop()
	time.Sleep(2 * time.Second)

	// 2. A backup, then more changes and traffic.
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "GOVCLOUD_API="+l.api(), "GOVCLOUD_TOKEN="+admin, "GOVCLOUD_CA="+l.caFile())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("govcloud %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	backups := filepath.Join(dir, "backups")
	t.Logf("drill: %s", cli("backup", "create", "--to", backups))
	files, _ := filepath.Glob(filepath.Join(backups, "*.gcbackup"))
	if len(files) != 1 {
		t.Fatalf("drill: backups in %s: %v, want one", backups, files)
	}
	// A backup's snapshot can stall the embedded etcd long enough for the leader lease to
	// lapse; the controller then refuses writes (nothing changed) until it leads again.
	if err := applyLeading(ctx, c, "late.yaml", lateYAML); err != nil {
		t.Fatalf("drill: apply after the backup: %v\ncontroller log, its lease and etcd lines:\n%s\ncontroller log:\n%s", err, leaseLines(l, 80), l.logTail("controller", 60))
	}
	if err := waitHostsHold(30*time.Second, func(s hoststatus.Status) bool {
		_, ok := s.Segments["lands-late"]
		return ok && s.Ready
	}); err != nil {
		t.Fatalf("drill: the hosts did not realize lands-late: %v", err)
	}
	time.Sleep(2 * time.Second)

	// 3. The controller is lost with its data dir. The operator kept the admin token.
	tok, err := os.ReadFile(filepath.Join(dir, "controller", "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	l.kill("controller")
	if err := os.RemoveAll(filepath.Join(dir, "controller")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)

	// 4. Restore at another address.
	start := time.Now()
	t.Logf("drill: restore starts %.1fs after the traffic", time.Since(xfer.start).Seconds())
	t.Logf("drill: %s", cli("restore", "--from", files[0], "--data-dir", filepath.Join(dir, "controller")))
	if err := os.WriteFile(filepath.Join(dir, "controller", "admin-token"), tok, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := l.start("controller", "", bin, "controller", "--anonymous-read", "--data-dir", filepath.Join(dir, "controller"), "--listen", restoredListen); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l.controllerFile(), []byte("https://"+restoredListen+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := l.waitFor(ctx, "restored controller at "+restoredListen, 30*time.Second, func() error {
		if !l.alive("controller") {
			return fmt.Errorf("controller exited:\n%s", l.logTail("controller", 15))
		}
		_, err := l.client(admin).Status(ctx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	restoredAt := time.Since(start)
	c = l.client(admin) // at the controller file's URL now
	// What the hosts hold that the restored store lacks: lost by name.
	held := map[string]map[string]bool{"departments": {}, "segments": {}, "services": {}}
	before := map[string]map[string]uint64{}
	for _, h := range defaultHosts {
		s, err := agentStatus(h)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range s.Departments {
			held["departments"][d] = true
		}
		for n := range s.Segments {
			held["segments"][n] = true
		}
		for n := range s.Services {
			held["services"][n] = true
		}
		before[h] = s.Writes
	}
	var lost []string
	for _, kind := range []string{"departments", "segments", "services"} {
		objs, err := c.List(ctx, kind)
		if err != nil {
			t.Fatalf("drill: list %s of the restored controller: %v", kind, err)
		}
		have := map[string]bool{}
		for _, o := range objs {
			have[o.Name] = true
		}
		for n := range held[kind] {
			if !have[n] {
				lost = append(lost, kind+"/"+n)
			}
		}
	}
	slices.Sort(lost)
	t.Logf("drill: lost (held by the hosts, not in the backup): %v", lost)
	if want := []string{"segments/lands-late"}; !slices.Equal(lost, want) {
		t.Fatalf("drill: lost %v, want %v", lost, want)
	}
	// The restored controller may not hold its leader lease yet (refused, nothing changed).
	if err := applyLeading(ctx, c, "late.yaml", lateYAML); err != nil {
		t.Fatalf("drill: apply the lost objects again: %v", err)
	}

	// 5. The agents follow the controller file (SIGHUP: no restart, the dataplane untouched).
	rev := int64(0)
	for _, h := range defaultHosts {
		st, err := c.Desired(ctx, h, 0, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		rev = max(rev, st.Revision)
		// The network agent and the compute agent alike.
		for _, who := range []string{"agent-", "compute-"} {
			if err := syscall.Kill(l.pid(who+h), syscall.SIGHUP); err != nil {
				t.Fatalf("drill: SIGHUP %s%s: %v", who, h, err)
			}
		}
	}
	if err := l.waitFor(ctx, "agents applied the restored controller's state", 30*time.Second, func() error {
		hs, err := c.HostStatuses(ctx)
		if err != nil {
			return err
		}
		for _, h := range defaultHosts {
			var rep hoststatus.Report
			if err := json.Unmarshal(hs[h], &rep); err != nil {
				return fmt.Errorf("%s has not reported to the restored controller (%v)", h, err)
			}
			if rep.Status.Revision < rev || !rep.Status.Ready {
				return fmt.Errorf("%s at revision %d (ready %v), want %d", h, rep.Status.Revision, rep.Status.Ready, rev)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, h := range defaultHosts {
		s, err := agentStatus(h)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Writes) != 3 || !mapsEqual(s.Writes, before[h]) {
			t.Errorf("drill: %s made dataplane writes for state that did not change: %v before the re-point, %v after", h, before[h], s.Writes)
		}
	}
	// The transfer ends before lab verify: its isolation fuzz sends hostile frames from a
	// guest of each department (one of the transfer's ends), which may stall a stream for
	// seconds. The connections through the VIP go on through lab verify.
	xfer.stop()
	t.Logf("drill: lab verify starts %.1fs after the traffic", time.Since(xfer.start).Seconds())
	if _, err := run("verify"); err != nil {
		t.Fatalf("drill: lab verify after the restore: %v", err)
	}
	recovery := time.Since(start)

	if broken := conns.broken(); len(broken) > 0 {
		t.Errorf("drill: established connections through %s broke: %v", vip.VIP, broken)
	}
	conns.stop()
	sent, recv := xfer.sent.Load(), xfer.received.Load()
	if xfer.err() != nil || sent != recv || sent == 0 {
		t.Errorf("drill: transfer %s -> %s: sent %d, received %d (%v)", from.vm, to.vm, sent, recv, xfer.err())
	}
	if _, err := unbilled(k0, true); err != nil {
		t.Errorf("drill: %v", err)
		for _, p := range []string{"controller", "agent-" + hostOf(states, from.vm), "agent-" + hostOf(states, to.vm)} {
			t.Logf("drill: %s's log on usage:\n%s", p, grepLines(l.logTail(p, 2000), "usage", "ledger", "report"))
		}
	}
	bill1, _ := bill()
	// Every payload byte leaves the sending host once over the trunk, with its headers.
	if bill1-bill0 < uint64(sent) {
		t.Errorf("drill: the bill of %s grew by %d bytes, less than the %d bytes sent", dept, bill1-bill0, sent)
	}
	t.Logf("drill: %d requests over %d connections, none broken; %d bytes sent %s -> %s; bill of %s +%d bytes, equal to its counters' growth",
		conns.requests.Load(), conns.n, sent, from.vm, to.vm, dept, bill1-bill0)
	t.Logf("drill: recovery %.1fs (restore start -> lab verify passing; controller answering after %.1fs)", recovery.Seconds(), restoredAt.Seconds())
	return recovery
}

func mapsEqual(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// agentStatus reads host h's agent's own status (not the controller's copy).
func agentStatus(h string) (hoststatus.Status, error) {
	var s hoststatus.Status
	out, err := nsOut(h, "curl", "-sS", "--max-time", "2", "http://"+Metrics+"/status")
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return s, fmt.Errorf("status of %s: %w", h, err)
	}
	return s, nil
}

// waitHostsHold waits until every host's agent status satisfies ok.
func waitHostsHold(d time.Duration, ok func(hoststatus.Status) bool) error {
	deadline := time.Now().Add(d)
	for {
		var err error
		all := true
		for _, h := range defaultHosts {
			s, e := agentStatus(h)
			if e != nil || !ok(s) {
				all, err = false, fmt.Errorf("%s: %v (revision %d)", h, e, s.Revision)
				break
			}
		}
		if all {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// connections are long-lived HTTP/1.1 keep-alive connections from gc-client to a VIP, each
// asking every 200 ms; any failure breaks the connection and is recorded.
type connections struct {
	n        int
	requests atomic.Int64
	done     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
	mu       sync.Mutex
	fails    []string
}

func holdConnections(vip string, n int) (*connections, error) {
	c := &connections{n: n, done: make(chan struct{})}
	for i := range n {
		var conn net.Conn
		if err := inNS(NSClient, func() (err error) {
			conn, err = net.DialTimeout("tcp", net.JoinHostPort(vip, "80"), 2*time.Second)
			return err
		}); err != nil {
			c.stop()
			return nil, fmt.Errorf("connection %d to %s: %w", i, vip, err)
		}
		c.wg.Add(1)
		go c.run(i, conn, vip)
	}
	return c, nil
}

func (c *connections) run(i int, conn net.Conn, vip string) {
	defer c.wg.Done()
	defer conn.Close()
	br := bufio.NewReader(conn)
	tk := time.NewTicker(200 * time.Millisecond)
	defer tk.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-tk.C:
		}
		_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
		err := func() error {
			if _, err := fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", vip); err != nil {
				return err
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK || resp.Close {
				return fmt.Errorf("HTTP %d (close %v)", resp.StatusCode, resp.Close)
			}
			return nil
		}()
		if err != nil {
			c.mu.Lock()
			c.fails = append(c.fails, fmt.Sprintf("connection %d (%s) after %d requests: %v", i, conn.LocalAddr(), c.requests.Load(), err))
			c.mu.Unlock()
			return
		}
		c.requests.Add(1)
	}
}

func (c *connections) broken() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.fails)
}

func (c *connections) stop() {
	c.once.Do(func() { close(c.done) })
	c.wg.Wait()
}

// transfer is a steady TCP stream (about 1 MB/s) from one guest namespace to another's
// address, counted at both ends.
type transfer struct {
	sent, received atomic.Int64
	done           chan struct{}
	once           sync.Once
	wg             sync.WaitGroup
	ln             net.Listener
	mu             sync.Mutex
	failure        error
	start          time.Time
}

func startTransfer(fromNS, toNS, toAddr string) (*transfer, error) {
	x := &transfer{done: make(chan struct{}), start: time.Now()}
	addr := net.JoinHostPort(toAddr, "9150")
	if err := inNS(toNS, func() (err error) {
		x.ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		return nil, fmt.Errorf("listen in %s: %w", toNS, err)
	}
	var conn net.Conn
	if err := inNS(fromNS, func() (err error) {
		conn, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	}); err != nil {
		x.ln.Close()
		return nil, fmt.Errorf("dial %s from %s: %w", addr, fromNS, err)
	}
	peer, err := x.ln.Accept()
	if err != nil {
		conn.Close()
		x.ln.Close()
		return nil, err
	}
	x.wg.Add(2)
	go func() {
		defer x.wg.Done()
		defer peer.Close()
		n, err := io.Copy(io.Discard, peer)
		x.received.Add(n)
		x.fail(err)
	}()
	go func() {
		defer x.wg.Done()
		defer conn.Close()
		buf := make([]byte, 50_000)
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-x.done:
				x.fail(conn.(*net.TCPConn).CloseWrite())
				return
			case <-tk.C:
			}
			_ = conn.SetWriteDeadline(time.Now().Add(3 * time.Second))
			n, err := conn.Write(buf)
			x.sent.Add(int64(n))
			if err != nil {
				x.fail(err)
				return
			}
		}
	}()
	return x, nil
}

func (x *transfer) fail(err error) {
	if err == nil {
		return
	}
	x.mu.Lock()
	if x.failure == nil {
		x.failure = fmt.Errorf("%.1fs after the start, %d bytes sent: %w", time.Since(x.start).Seconds(), x.sent.Load(), err)
	}
	x.mu.Unlock()
}

func (x *transfer) err() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.failure
}

// stop ends the stream and waits until the receiver has read all of it.
func (x *transfer) stop() {
	x.once.Do(func() {
		close(x.done)
		x.wg.Wait()
		x.ln.Close()
	})
}

// BenchmarkDrill is part of 'make bench-backup': the disaster drill on a fresh lab, printing
// its recovery time (restore start to 'lab verify' passing; goal < 30 s).
func BenchmarkDrill(b *testing.B) {
	netnstest.RequirePrivileged(b)
	netnstest.RequireTool(b, "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra", "curl", "ethtool", "ping")
	if len(labNamespaces()) > 0 {
		b.Fatalf("a lab is already running here (%v): 'sudo make demo-down' first", labNamespaces())
	}
	dir := filepath.Join(b.TempDir(), "lab")
	bin, run := labCLI(b, dir)
	if _, err := run("up"); err != nil {
		b.Fatalf("lab up: %v", err)
	}
	b.ResetTimer()
	rec := disasterDrill(b, bin, dir, run)
	b.StopTimer()
	b.ReportMetric(rec.Seconds(), "recovery_s")
	fmt.Printf("disaster drill: recovery %.1fs (restore start -> lab verify passing; goal < 30 s)\n", rec.Seconds())
	if _, err := run("down"); err != nil {
		b.Fatalf("lab down: %v", err)
	}
}

// grepLines keeps the lines of text holding any of words.
func grepLines(text string, words ...string) string {
	var out []string
	for _, ln := range strings.Split(text, "\n") {
		for _, w := range words {
			if strings.Contains(ln, w) {
				out = append(out, ln)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// applyLeading applies doc, retrying for up to 30 s while the controller refuses writes for
// want of its leader lease (a refusal changes nothing); any other error is returned at once.
func applyLeading(ctx context.Context, c *client.Client, name, doc string) error {
	for deadline := time.Now().Add(30 * time.Second); ; {
		_, err := c.Apply(ctx, name, []byte(doc), client.ApplyOptions{})
		if err == nil || time.Now().After(deadline) || !strings.Contains(err.Error(), "leader lease") {
			return err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// leaseLines are the controller log's lines about its leader lease and etcd (not the refused
// requests), the last n: why a drill's controller stopped leading.
func leaseLines(l *Lab, n int) string {
	b, _ := os.ReadFile(filepath.Join(l.dir, "logs", "controller.log"))
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		lo := strings.ToLower(line)
		if (strings.Contains(lo, "lease") || strings.Contains(lo, "leader") || strings.Contains(lo, "etcd") || strings.Contains(lo, "backup")) && !strings.Contains(line, "request failed") && !strings.Contains(line, "allocation sweep") {
			out = append(out, line)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return strings.Join(out, "\n")
}
