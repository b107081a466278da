package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
	"github.com/govcloud/govcloud/controlplane/lbtables"
	"github.com/govcloud/govcloud/dataplane/lbmap"
	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/lb"
)

// TestLabMaglevECMP (issue 19): long-lived TCP connections from gc-client through lands-www's
// VIP, spread by the ToR's ECMP over both hosts, then (1) weight churn that host2 sees
// coalesced (its agent stopped with SIGSTOP during three applies), (2) host2's agent restarted
// with its load balancer's pins removed, (3) host1's BGP session shut at the ToR so every flow
// moves to host2. Each connection then sends a second request on the same socket. Connections
// whose backend, by the controller's final shared table, did not change must all survive with
// the shared tables; the same scenario with --maglev-tables=local (each host's own history),
// in the same run, prints how many of them break.
func TestLabMaglevECMP(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra", "curl", "ethtool", "ping")
	if len(labNamespaces()) > 0 {
		t.Fatalf("a lab is already running here (%v)", labNamespaces())
	}
	dir := filepath.Join(t.TempDir(), "lab")
	bin, run := labCLI(t, dir)
	if _, err := run("up"); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	defer func() { _, _ = run("down") }()
	l, admin := openLab(t, bin, dir)
	vips, err := l.vips(context.Background(), admin)
	if err != nil {
		t.Fatal(err)
	}
	var vip string
	for _, v := range vips {
		if v.Service == "lands-www" {
			vip = v.VIP
		}
	}
	if vip == "" {
		t.Fatal("no VIP for lands-www")
	}
	m := &maglevLab{t: t, l: l, admin: admin, vip: netip.MustParseAddr(vip)}

	shared := m.scenario("shared", [][2]int{{4, 1}, {1, 4}, {2, 3}})
	// The old, history-dependent tables: both agents restarted (pins kept) in local mode.
	for _, h := range defaultHosts {
		m.restartAgent(h, "local", false)
	}
	m.waitReady(m.rev)
	local := m.scenario("local", [][2]int{{3, 1}, {1, 3}, {1, 1}})
	t.Logf("maglev tables shared: %s", shared)
	t.Logf("maglev tables local:  %s", local)
	fmt.Printf("lab maglev: shared tables: %s\nlab maglev: local tables (before issue 19): %s\n", shared, local)
	if shared.brokenSame != 0 {
		for _, h := range defaultHosts {
			body, _ := nsOut(h, "curl", "-sS", "--max-time", "2", "http://"+Metrics+"/metrics")
			t.Logf("%s drops: %s", h, grepLines(body, "govcloud_department_drops_total"))
		}
		t.Errorf("shared tables: %d connections broken whose backend did not change", shared.brokenSame)
	}
	if shared.same < shared.total/3 {
		t.Errorf("shared tables: only %d of %d connections kept their backend: the scenario measures little", shared.same, shared.total)
	}
}

type maglevLab struct {
	t     *testing.T
	l     *Lab
	admin string
	vip   netip.Addr
	rev   int64
}

type maglevResult struct {
	total, same, brokenSame, changed, brokenChanged int
}

func (r maglevResult) String() string {
	return fmt.Sprintf("%d connections; %d whose backend did not change: %d broken; %d whose backend changed (weights): %d broken",
		r.total, r.same, r.brokenSame, r.changed, r.brokenChanged)
}

const maglevWWW = `apiVersion: govcloud/v1
kind: Service
metadata: {name: lands-www}
spec:
  department: lands
  ports: [{port: 80, protocol: tcp}]
  backends: [{vm: lands-web-1, weight: %d}, {vm: lands-web-2, weight: %d}]
  healthCheck: {type: http, path: /, interval: 1s, healthyThreshold: 2, unhealthyThreshold: 2}
  mode: dsr
`

func (m *maglevLab) apply(w [2]int) int64 {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := m.l.client(m.admin).Apply(ctx, "maglev.yaml", []byte(fmt.Sprintf(maglevWWW, w[0], w[1])), client.ApplyOptions{})
	if err != nil {
		m.t.Fatalf("apply weights %v: %v", w, err)
	}
	m.rev = res.Revision
	return res.Revision
}

// report returns host h's last status.
func (m *maglevLab) report(h string) (hoststatus.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := m.l.client(m.admin).Status(ctx)
	if err != nil {
		return hoststatus.Status{}, err
	}
	var r hoststatus.Report
	if err := json.Unmarshal(st.Hosts[h], &r); err != nil {
		return hoststatus.Status{}, fmt.Errorf("%s: %w", h, err)
	}
	return r.Status, nil
}

// waitHost waits until host h reports ready at revision rev or later.
func (m *maglevLab) waitHost(h string, rev int64) {
	m.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		s, err := m.report(h)
		if err == nil && s.Ready && s.Revision >= rev {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("%s not ready at revision %d within 60s: %+v %v\n%s", h, rev, s.Error, err, m.l.logTail("agent-"+h, 20))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitReady waits for both hosts at rev and for the ToR's route to the VIP through both.
func (m *maglevLab) waitReady(rev int64) {
	m.t.Helper()
	for _, h := range defaultHosts {
		m.waitHost(h, rev)
	}
	m.waitPaths(2)
}

func (m *maglevLab) waitPaths(n int) {
	m.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		hops, _ := m.l.frrPaths(m.vip.String())
		if len(hops) == n {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("ToR route to %s: %v, want %d path(s)", m.vip, hops, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// restartAgent kills host h's agent (SIGKILL: the dataplane stays, as after a crash), removes
// its load balancer's pins when wipe, and starts it with --maglev-tables mode.
func (m *maglevLab) restartAgent(h, mode string, wipe bool) {
	m.t.Helper()
	pid := m.l.pid("agent-" + h)
	if pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if wipe {
		if err := os.RemoveAll(filepath.Join(m.l.dir, "bpf", h, "lb")); err != nil {
			m.t.Fatal(err)
		}
	}
	err := m.l.start("agent-"+h, h, m.l.opt.Bin, "agent", "--host", h, "--controller", API, "--ca", m.l.caFile(), "--api-netns", m.l.rootNS(),
		"--join-token-file", m.l.joinTokenFile(h, "agent"), "--metrics-listen", Metrics+","+hostAddr(m.l.hostIndex(h))+":9480",
		"--pin-root", filepath.Join(m.l.dir, "bpf", h), "--state-dir", filepath.Join(m.l.dir, "state", h),
		"--management", torClient+"/32", "--maglev-tables", mode)
	if err != nil {
		m.t.Fatal(err)
	}
	m.waitRestarted(h)
}

// waitRestarted waits until host h's new agent itself (its /status, which no earlier process
// serves) reports ready at m.rev. The controller's copy of h's status is no proof: it still
// holds the killed agent's last report, ready at the same revision, and the ToR keeps the
// killed agent's routes through graceful restart, while the new agent has not yet attached
// XDP and the VIP route delivers every flow to the local backend.
func (m *maglevLab) waitRestarted(h string) {
	m.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for {
		body, err := nsOut(h, "curl", "-sS", "--max-time", "2", "http://"+Metrics+"/status")
		var s hoststatus.Status
		if err == nil {
			err = json.Unmarshal([]byte(body), &s)
		}
		if err == nil && s.Ready && s.Revision >= m.rev {
			return
		}
		last = fmt.Sprint(s.Revision, " ", s.Ready, " ", s.Error, " ", err)
		if time.Now().After(deadline) {
			m.t.Fatalf("restarted agent of %s not ready at revision %d within 60s: %s\n%s", h, m.rev, last, m.l.logTail("agent-"+h, 20))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// torNeighbour shuts (or re-enables) the ToR's BGP session to host i.
func (m *maglevLab) torNeighbour(i int, shut bool) {
	m.t.Helper()
	c := "neighbor " + hostAddr(i) + " shutdown"
	if !shut {
		c = "no " + c
	}
	out, err := exec.Command("ip", "netns", "exec", NSTor, "vtysh", "--vty_socket", m.l.frrDir(),
		"-c", "configure terminal", "-c", "router bgp 65000", "-c", c).CombinedOutput()
	if err != nil {
		m.t.Fatalf("vtysh %s: %v: %s", c, err, out)
	}
}

// conn is one long-lived HTTP/1.1 connection from gc-client to the VIP.
type conn struct {
	c       net.Conn
	r       *bufio.Reader
	src     netip.AddrPort
	backend string // the VM that answered first
}

func (c *conn) get(vip string) (string, error) {
	_ = c.c.SetDeadline(time.Now().Add(4 * time.Second))
	if _, err := fmt.Fprintf(c.c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", vip); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}

func (m *maglevLab) open(n int) []*conn {
	m.t.Helper()
	var out []*conn
	err := inNS(NSClient, func() error {
		for range n {
			c, err := net.DialTimeout("tcp", netip.AddrPortFrom(m.vip, 80).String(), 3*time.Second)
			if err != nil {
				return err
			}
			out = append(out, &conn{c: c, r: bufio.NewReader(c), src: c.LocalAddr().(*net.TCPAddr).AddrPort()})
		}
		return nil
	})
	if err != nil {
		m.t.Fatalf("connections from %s: %v", NSClient, err)
	}
	for _, c := range out {
		b, err := c.get(m.vip.String())
		if err != nil {
			m.t.Fatalf("first request from %s: %v", c.src, err)
		}
		c.backend = b
	}
	return out
}

// sharedTable is the controller's table of lands-www/80/tcp.
func (m *maglevLab) sharedTable() *lb.SharedTable {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := m.l.client(m.admin).LBTables(ctx, defaultHosts[0], lbtables.FetchRequest{MinRevision: m.rev})
	if err != nil {
		m.t.Fatal(err)
	}
	d, ok := resp.Tables[lbtables.Name("lands-www", 80, lb.TCP)]
	if !ok {
		m.t.Fatalf("no shared table of lands-www: %v", resp.Current)
	}
	st, err := d.Apply(nil)
	if err != nil {
		m.t.Fatal(err)
	}
	return st
}

func (m *maglevLab) scenario(mode string, churn [][2]int) maglevResult {
	m.t.Helper()
	m.t.Logf("scenario with %s tables", mode)
	m.waitReady(m.apply([2]int{1, 1}))
	conns := m.open(64)
	defer func() {
		for _, c := range conns {
			c.c.Close()
		}
	}()
	byVM := map[string]int{}
	for _, c := range conns {
		byVM[c.backend]++
	}
	m.t.Logf("%d connections: %v", len(conns), byVM)

	// (1) churn host2 sees coalesced: its agent stopped (SIGSTOP; under the ToR's 9 s hold
	// time) while host1 applies each change.
	h2 := m.l.pid("agent-" + defaultHosts[1])
	if err := syscall.Kill(h2, syscall.SIGSTOP); err != nil {
		m.t.Fatal(err)
	}
	for _, w := range churn {
		m.waitHost(defaultHosts[0], m.apply(w))
	}
	if err := syscall.Kill(h2, syscall.SIGCONT); err != nil {
		m.t.Fatal(err)
	}
	m.waitReady(m.rev)
	// (2) host2's agent restarted with its load balancer's pins removed.
	m.restartAgent(defaultHosts[1], mode, true)
	m.waitReady(m.rev)
	// (3) host1 withdrawn from the ToR's ECMP: every flow moves to host2.
	m.torNeighbour(0, true)
	m.waitPaths(1)
	defer func() {
		m.torNeighbour(0, false)
		m.waitPaths(2)
	}()

	table := m.sharedTable()
	vmOf := map[string]string{hostAddr(0) + ":0": "lands-web-1", hostAddr(1) + ":0": "lands-web-2"}
	var r maglevResult
	for _, c := range conns {
		slot := lbmap.FlowHash(c.src.Addr(), m.vip, c.src.Port(), 80, lb.TCP) % uint32(len(table.Slots))
		want := ""
		if i := table.Slots[slot]; i != lb.NoBackend {
			want = vmOf[table.Backends[i-1].Key]
		}
		got, err := c.get(m.vip.String())
		broken := err != nil || got != c.backend
		if broken {
			m.t.Logf("%s tables: broken %s: first answer from %s, final table's %q (slot %d), now %q %v", mode, c.src, c.backend, want, slot, got, err)
		}
		r.total++
		if want == c.backend {
			r.same++
			if broken {
				r.brokenSame++
			}
		} else {
			r.changed++
			if broken {
				r.brokenChanged++
			}
		}
	}
	return r
}
