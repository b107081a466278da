package lab

import (
	"context"
	"fmt"
	"io"
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
	"github.com/govcloud/govcloud/dataplane/lbmap"
	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/dataplane/trunk"
	"github.com/govcloud/govcloud/lb"
)

// defaultHosts are the hosts of the default lab (DefaultHosts) these tests bring up.
var defaultHosts = HostNames(DefaultHosts)

// TestLab runs the user's first hour as a test: 'lab up', 'lab verify', the disaster drill
// (disasterDrill: the controller lost and restored from a backup elsewhere while traffic
// runs), 'lab up' again over the running lab, 'lab down', then an 'up' interrupted half-way followed by 'down'; after each
// down the machine holds no gc- namespace, no lab process and no lab directory.
func TestLab(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra", "curl", "ethtool", "ping")
	if len(labNamespaces()) > 0 {
		t.Fatalf("a lab is already running here (%v): 'sudo make demo-down' first", labNamespaces())
	}
	dir := filepath.Join(t.TempDir(), "lab")
	bin, run := labCLI(t, dir)
	assertClean := func(when string) {
		t.Helper()
		if ns := labNamespaces(); len(ns) > 0 {
			t.Fatalf("%s: namespaces left: %v", when, ns)
		}
		for _, pat := range []string{bin, dir} { // govcloud processes; FRR (its files are in dir)
			if out, _ := exec.Command("pgrep", "-f", pat).Output(); len(strings.TrimSpace(string(out))) > 0 {
				t.Fatalf("%s: lab processes left (%s): %s", when, pat, out)
			}
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("%s: %s still exists", when, dir)
		}
	}

	if _, err := run("up"); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	if _, err := run("verify"); err != nil {
		t.Fatalf("lab verify: %v", err)
	}
	placementReason(t, bin, dir)
	appliedAfterUp(t, bin, dir)
	applyWaitDeleteFile(t, bin, dir)
	ipv6EndToEnd(t, bin, dir)
	bandwidthQuota(t, bin, dir)
	securityPolicy(t, bin, dir)
	egressAndFloatingIPs(t, bin, dir)
	trustOverTLS(t, bin, dir)
	internalVIP(t, bin, dir)
	reconcileThroughController(t, bin, dir)
	failStaticAndWithdraw(t, bin, dir)
	failedStartKeepsDataplane(t, bin, dir)
	disasterDrill(t, bin, dir, run)
	if out, err := run("up"); err != nil || !strings.Contains(out, "earlier lab") {
		t.Fatalf("second lab up: %v (it must replace the running lab)", err)
	}
	// Docs that run (issue 22): every command of README.md and deploy/README.md, on the fresh
	// second lab, whose controller is at the documented address (the drill moved the first one's).
	t.Run("docs", func(t *testing.T) { docCommands(t, bin, dir) })
	if _, err := run("down"); err != nil {
		t.Fatalf("lab down: %v", err)
	}
	assertClean("after down")
	if _, err := run("down"); err != nil {
		t.Fatalf("second lab down: %v", err)
	}

	// Interrupt an up half-way (once the agents run), then down.
	cmd := exec.Command(bin, "lab", "up", "--dir", dir, "--config", "../deploy/examples/lab")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(dir, "pids", "agent-gc-host2.pid")); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	_ = cmd.Wait()
	if _, err := run("down"); err != nil {
		t.Fatalf("down after an interrupted up: %v", err)
	}
	assertClean("after an interrupted up and down")
}

// labCLI builds govcloud and returns it with a runner of 'govcloud lab ARGS' on the lab in dir
// (logging the output); a lab still up when the test ends is taken down.
func labCLI(t testing.TB, dir string) (string, func(args ...string) (string, error)) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "govcloud")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/govcloud").CombinedOutput(); err != nil {
		t.Fatalf("building govcloud: %v\n%s", err, out)
	}
	run := func(args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"lab"}, append(args, "--dir", dir, "--config", "../deploy/examples/lab")...)...)
		out, err := cmd.CombinedOutput()
		t.Logf("govcloud lab %s:\n%s", strings.Join(args, " "), out)
		return string(out), err
	}
	t.Cleanup(func() {
		if t.Failed() {
			logFailureTails(t, dir)
		}
		if len(labNamespaces()) > 0 {
			_, _ = run("down")
		}
	})
	return bin, run
}

// logFailureTails logs the last lines of each lab process's log in dir (controller, agents,
// compute agents), and says which had exited, so a failed lab test shows why before 'down'
// removes the logs.
func logFailureTails(t testing.TB, dir string) {
	l := &Lab{dir: dir}
	logs, _ := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
	for _, f := range logs {
		name := strings.TrimSuffix(filepath.Base(f), ".log")
		state := "running"
		if l.pid(name) == 0 {
			state = "no pid file"
		} else if !l.alive(name) {
			state = "EXITED"
		}
		t.Logf("after the failure: %s (%s), last lines of its log:\n%s", name, state, l.logTail(name, 25))
	}
}

// openLab opens the running lab in dir and reads its admin token.
func openLab(t testing.TB, bin, dir string) (*Lab, string) {
	t.Helper()
	l, err := New(Options{Bin: bin, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := l.adminToken()
	if err != nil {
		t.Fatal(err)
	}
	return l, admin
}

const financeYAML = `apiVersion: govcloud/v1
kind: Department
metadata: {name: finance}
spec: {displayName: Finance, costCentre: CC-3003, quotas: {vcpus: 2, memoryGiB: 2, storageGiB: 10, bandwidthMbps: 100}}
---
apiVersion: govcloud/v1
kind: Segment
metadata: {name: finance-db}
spec: {department: finance, vlan: 140, ipv4: 198.18.40.0/24, gateway: 198.18.40.1}
`

const drainYAML = `apiVersion: govcloud/v1
kind: Service
metadata: {name: lands-www}
spec:
  department: lands
  ports: [{port: 80, protocol: tcp}]
  backends: [{vm: lands-web-1}, {vm: lands-web-2, weight: %d}]
  healthCheck: {type: http, path: /, interval: 1s, healthyThreshold: 2, unhealthyThreshold: 2}
  mode: dsr
`

// reconcileThroughController applies, changes and deletes through the controller and checks
// the hosts' kernels each time: links, policy rules, department routes, nftables, the trunk's
// VLAN map and the load balancer's tables. One agent is killed right after an apply
// (mid-reconcile) and restarted; it must converge like the other.
func reconcileThroughController(t *testing.T, bin, dir string) {
	t.Helper()
	ctx := context.Background()
	l, admin := openLab(t, bin, dir)
	c := l.client(admin) // trusts the test lab's own CA
	apply := func(name, doc string) {
		t.Helper()
		if _, err := c.Apply(ctx, name, []byte(doc), client.ApplyOptions{}); err != nil {
			t.Fatalf("apply %s: %v", name, err)
		}
	}
	eventually := func(what string, check func(h string) error) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for _, h := range defaultHosts {
			for {
				err := check(h)
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s on %s: %v", what, h, err)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
	kernel := func(h string) (string, error) {
		var b strings.Builder
		for _, args := range [][]string{{"ip", "-d", "link"}, {"ip", "rule"}, {"ip", "route", "show", "table", "all"}, {"nft", "list", "ruleset"}} {
			out, err := nsOut(h, args...)
			if err != nil {
				return "", err
			}
			b.WriteString(out)
		}
		return b.String(), nil
	}
	trunkVLANs := func(h string) (map[uint16]trunk.Segment, error) {
		tr, err := trunk.Load(filepath.Join(dir, "bpf", h, "trunk"))
		if err != nil {
			return nil, err
		}
		defer tr.Close()
		return tr.Segments()
	}

	// A new department and segment; the agent on gc-host1 is killed right after the apply.
	apply("finance.yaml", financeYAML)
	l.kill("agent-gc-host1")
	time.Sleep(300 * time.Millisecond)
	if err := l.startAgent("gc-host1"); err != nil {
		t.Fatal(err)
	}
	eventually("finance segment realized", func(h string) error {
		k, err := kernel(h)
		if err != nil {
			return err
		}
		for _, want := range []string{"gcbr140", "iif gcbr140 lookup", "198.18.40.0/24 dev gcbr140"} {
			if !strings.Contains(k, want) {
				return fmt.Errorf("kernel lacks %q", want)
			}
		}
		vl, err := trunkVLANs(h)
		if err != nil {
			return err
		}
		if _, ok := vl[140]; !ok {
			return fmt.Errorf("trunk has no VLAN 140 (%d VLANs)", len(vl))
		}
		return nil
	})

	// Drain lands-web-2: every new flow to the VIP now goes to gc-host1's backend.
	vips, err := l.vips(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	var landsVIP netip.Addr
	for _, v := range vips {
		if v.Service == "lands-www" {
			landsVIP = netip.MustParseAddr(v.VIP)
		}
	}
	pick := func(h string) (map[string]int, error) {
		d, err := lbmap.Load(lbmap.Options{PinPath: filepath.Join(dir, "bpf", h, "lb")})
		if err != nil {
			return nil, err
		}
		defer d.Close()
		got := map[string]int{}
		for p := uint16(1000); p < 1200; p++ {
			got[d.Pick(lb.VIP{Addr: landsVIP, Port: 80, Proto: lb.TCP}, netip.MustParseAddr("198.51.100.10"), p)]++
		}
		return got, nil
	}
	apply("drain.yaml", fmt.Sprintf(drainYAML, 0))
	eventually("lands-web-2 drained in the LB tables", func(h string) error {
		got, err := pick(h)
		if err != nil {
			return err
		}
		if len(got) != 1 || got["198.18.0.11:0"] != 200 {
			return fmt.Errorf("new flows go to %v, want all to gc-host1 (198.18.0.11)", got)
		}
		return nil
	})
	apply("drain.yaml", fmt.Sprintf(drainYAML, 1))
	eventually("lands-web-2 back in the LB tables", func(h string) error {
		got, err := pick(h)
		if err != nil {
			return err
		}
		if got["198.18.0.11:0"] == 0 || got["198.18.0.12:0"] == 0 {
			return fmt.Errorf("new flows go to %v, want both hosts", got)
		}
		return nil
	})

	// Delete: nothing of finance is left.
	for _, o := range [][2]string{{"segments", "finance-db"}, {"departments", "finance"}} {
		if _, err := c.Delete(ctx, o[0], o[1], false); err != nil {
			t.Fatalf("delete %s %s: %v", o[0], o[1], err)
		}
	}
	eventually("finance removed", func(h string) error {
		k, err := kernel(h)
		if err != nil {
			return err
		}
		if strings.Contains(k, "gcbr140") || strings.Contains(k, "198.18.40.0/24") {
			return fmt.Errorf("kernel still has finance's bridge, rule, route or rules")
		}
		vl, err := trunkVLANs(h)
		if err != nil {
			return err
		}
		if _, ok := vl[140]; ok {
			return fmt.Errorf("trunk still maps VLAN 140")
		}
		return nil
	})
}

// failStaticAndWithdraw: with the controller stopped, forwarding and BGP do not change; when
// it is back, agents reconnect and everything still answers. Then every backend of a
// service is stopped: its VIP is withdrawn at FRR; started again, it is advertised again.
func failStaticAndWithdraw(t *testing.T, bin, dir string) {
	t.Helper()
	ctx := context.Background()
	l, admin := openLab(t, bin, dir)
	vips, err := l.vips(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	answersAll := func(when string) {
		t.Helper()
		for _, v := range vips {
			if _, err := curl(v.VIP); err != nil {
				t.Fatalf("%s: VIP %s: %v", when, v.VIP, err)
			}
			if _, err := l.frrPaths(v.VIP); err != nil {
				t.Fatalf("%s: %v", when, err)
			}
		}
	}
	l.kill("controller")
	time.Sleep(3 * time.Second) // agents notice: long-polls fail, they retry
	answersAll("controller down")
	if err := l.startController(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := l.client(admin).Status(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("controller did not come back: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	answersAll("controller back")

	// Stop every backend of the first service: its VIP leaves FRR, then comes back.
	v := vips[0]
	var victims []string
	for _, g := range []string{"web-1", "web-2"} {
		victims = append(victims, strings.SplitN(v.Service, "-", 2)[0]+"-"+g)
	}
	for _, vm := range victims {
		if err := l.stopServer(vm); err != nil {
			t.Fatal(err)
		}
	}
	waitFRR := func(want bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, err := l.vtysh("show ip route " + v.VIP + "/32 json")
			has := err == nil && strings.Contains(string(out), `"protocol":"bgp"`)
			if has == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("VIP %s at FRR: present=%v, want %v after 20s", v.VIP, has, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitFRR(false)
	for _, vm := range victims {
		if err := l.startServer(vm); err != nil {
			t.Fatal(err)
		}
	}
	waitFRR(true)
	deadline = time.Now().Add(20 * time.Second)
	for {
		if _, err := l.frrPaths(v.VIP); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("VIP %s not back on both hosts", v.VIP)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// failedStartKeepsDataplane: an agent killed (-9) leaves its host forwarding; a new agent
// that then fails to start (here: a --metrics-listen address the host does not have) changes
// nothing of it: the links, the nftables tables and the XDP program stay, and every VIP still
// answers. It used to tear the host down on its way out. A normal start then takes over.
func failedStartKeepsDataplane(t *testing.T, bin, dir string) {
	t.Helper()
	ctx := context.Background()
	l, admin := openLab(t, bin, dir)
	vips, err := l.vips(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	h := l.hosts[0]
	dataplane := func() string {
		links, _ := exec.Command("ip", "-n", h, "-o", "link", "show").Output()
		tables, _ := exec.Command("ip", "netns", "exec", h, "nft", "list", "tables").Output()
		return fmt.Sprintf("%d links (%d with XDP), nftables tables %q", strings.Count(string(links), "\n"), strings.Count(string(links), " xdp"), strings.Fields(string(tables)))
	}
	before := dataplane()
	l.kill("agent-" + h)
	args := l.agentArgs(h)
	for i, a := range args {
		if a == "--metrics-listen" {
			args[i+1] = "198.18.0.99:9480" // not an address of the host: bind fails
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, "ip", append([]string{"netns", "exec", h, bin}, args...)...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--metrics-listen 198.18.0.99:9480") {
		t.Fatalf("agent with an address it cannot bind: %v\n%s", err, out)
	}
	if after := dataplane(); after != before {
		t.Errorf("a failed agent start changed %s's dataplane: before %s, after %s\n%s", h, before, after, out)
	}
	for _, v := range vips {
		if _, err := curl(v.VIP); err != nil {
			t.Errorf("after a failed agent start on %s: VIP %s: %v", h, v.VIP, err)
		}
	}
	if err := l.startAgent(h); err != nil {
		t.Fatal(err)
	}
	if err := l.waitReady(ctx, admin, vips); err != nil {
		t.Fatalf("agent on %s after the failed start: %v", h, err)
	}
}

// trustOverTLS (issue 14 §2): the lab's API answers only HTTPS (plain HTTP never reaches it),
// the CLI works over it with the lab's CA, and each host's agent joined with its single-use
// join token and holds a host certificate (reuse of a join token and renewal are
// TestHostJoinRenewRevoke's, with a certificate life of seconds).
func trustOverTLS(t *testing.T, bin, dir string) {
	t.Helper()
	resp, err := http.Get("http://" + strings.TrimPrefix(API, "https://") + "/v1/status")
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || strings.Contains(string(b), `"revision"`) {
			t.Errorf("plain HTTP to the API was answered: %d %s", resp.StatusCode, b)
		}
	}
	l, admin := openLab(t, bin, dir)
	raw, err := l.client(admin).CertsRaw(context.Background())
	if err != nil {
		t.Fatalf("certificates over HTTPS: %v", err)
	}
	for _, h := range defaultHosts {
		if !strings.Contains(string(raw), `"`+h+`"`) {
			t.Errorf("no host certificate for %s: %s", h, raw)
		}
	}
	logb, _ := os.ReadFile(filepath.Join(dir, "logs", "agent-gc-host1.log"))
	if !strings.Contains(string(logb), "joined: host certificate issued") {
		t.Errorf("agent-gc-host1 did not join with its join token:\n%s", logb)
	}
}
