package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
	"github.com/govcloud/govcloud/dataplane/lbmap"
)

// Options configure the lab.
type Options struct {
	Bin    string    // the govcloud binary the lab runs (default: this executable)
	Dir    string    // state, logs, pins (default /var/lib/govcloud-lab)
	Config string    // YAML file or directory applied on up (default deploy/examples/lab)
	VMs    bool      // real VMs through libvirt instead of namespace guests
	Out    io.Writer // progress and the walk-through
	// Hosts is how many hosts Up makes, 1 to MaxHosts (0: DefaultHosts). Verify and Down
	// follow what Up made instead (recorded in Dir).
	Hosts int
	// ScrapeInterval is how often the lab's Prometheus scrapes the agents (0: every second,
	// so the walk-through's queries and the billing tests see counters at once).
	ScrapeInterval time.Duration
}

// DefaultDir holds everything the lab writes.
const DefaultDir = "/var/lib/govcloud-lab"

// Lab is one lab on this machine.
type Lab struct {
	opt   Options
	dir   string
	out   io.Writer
	hosts []string // the host namespaces, in order (HostNames)
}

// New fills in defaults.
func New(opt Options) (*Lab, error) {
	if opt.Dir == "" {
		opt.Dir = DefaultDir
	}
	if opt.Out == nil {
		opt.Out = os.Stdout
	}
	if opt.Bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		opt.Bin = exe
	}
	if opt.Config == "" {
		opt.Config = "deploy/examples/lab"
	}
	if opt.Hosts == 0 {
		opt.Hosts = DefaultHosts
	}
	if err := CheckHosts(opt.Hosts); err != nil {
		return nil, err
	}
	return &Lab{opt: opt, dir: opt.Dir, out: opt.Out, hosts: HostNames(opt.Hosts)}, nil
}

// hostsFile records how many hosts Up made, for Verify and Down.
const hostsFile = "hosts"

// followUp makes l's hosts those of the lab Up made in l's directory, when one did.
func (l *Lab) followUp() error {
	f := filepath.Join(l.dir, hostsFile)
	b, err := os.ReadFile(f)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the lab's host count: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("%s: host count %q: %w", f, strings.TrimSpace(string(b)), err)
	}
	if err := CheckHosts(n); err != nil {
		return fmt.Errorf("%s: %w", f, err)
	}
	l.hosts = HostNames(n)
	return nil
}

// Hosts returns the lab's host namespaces, in order.
func (l *Lab) Hosts() []string { return slices.Clone(l.hosts) }

// hostIndex is h's position among the lab's hosts (its fabric address is hostAddr of it).
func (l *Lab) hostIndex(h string) int { return slices.Index(l.hosts, h) }

// allHosts says "the host", "both hosts" or "all N hosts", for progress lines.
func (l *Lab) allHosts() string {
	switch len(l.hosts) {
	case 1:
		return "the host"
	case 2:
		return "both hosts"
	}
	return fmt.Sprintf("all %d hosts", len(l.hosts))
}

// allAgents says "the agent", "both agents" or "all N agents".
func (l *Lab) allAgents() string { return strings.Replace(l.allHosts(), "host", "agent", 1) }

// backendHosts says where checkVIPs wants answers from: the two backends of the lab's
// services run on gc-host1 and gc-host2 ("both hosts"; "the host" when it is the only one).
func (l *Lab) backendHosts() string {
	switch len(l.hosts) {
	case 1:
		return "the host"
	case 2:
		return "both hosts"
	}
	return "two hosts"
}

// fromAll says "the host", "both" or "all N", for progress lines.
func (l *Lab) fromAll() string {
	switch len(l.hosts) {
	case 1:
		return "the host"
	case 2:
		return "both"
	}
	return fmt.Sprintf("all %d", len(l.hosts))
}

// hostList names the hosts, "gc-host1, gc-host2" (and: "gc-host1 and gc-host2").
func (l *Lab) hostList(and bool) string {
	if !and || len(l.hosts) == 1 {
		return strings.Join(l.hosts, ", ")
	}
	return strings.Join(l.hosts[:len(l.hosts)-1], ", ") + " and " + l.hosts[len(l.hosts)-1]
}

func (l *Lab) printf(format string, args ...any) { fmt.Fprintf(l.out, format, args...) }

func (l *Lab) step(n, of int, what string) { l.printf("[%d/%d] %s\n", n, of, what) }

// preflight names what is missing instead of failing half-way.
func (l *Lab) preflight() error {
	if os.Geteuid() != 0 {
		return errors.New("the lab needs root (network namespaces, eBPF): run 'sudo make demo'")
	}
	// Before anything is made: a relative --config is read from the current directory.
	if _, err := os.Stat(l.opt.Config); err != nil {
		wd, _ := os.Getwd()
		return fmt.Errorf("--config %q: %w (a relative path is read from the current directory, %s: run from the repository or give the path)", l.opt.Config, err, wd)
	}
	var missing []string
	for _, t := range []string{"ip", "ethtool", "curl", "vtysh", "/usr/lib/frr/zebra", "/usr/lib/frr/bgpd", "prometheus"} {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: run 'sudo make deps' (installs frr, ethtool, curl, ...)", strings.Join(missing, ", "))
	}
	return nil
}

// client is an API client of the lab's controller, verifying it with the lab's CA.
func (l *Lab) client(token string) *client.Client {
	c := client.New(l.api(), token)
	_ = c.SetCAFile(l.caFile()) // not there yet: the request fails and says so
	return c
}

// controllerFile holds the URL the lab's agents and CLI reach the controller at: API, until a
// disaster drill restores the controller elsewhere and rewrites it (agents re-read it on SIGHUP).
func (l *Lab) controllerFile() string { return filepath.Join(l.dir, "controller-url") }

// api is the controller's URL: the controller file's, else API.
func (l *Lab) api() string {
	if b, err := os.ReadFile(l.controllerFile()); err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b))
	}
	return API
}

// caFile is the lab controller's CA certificate (also in client.DefaultCAFiles, so the CLI
// on this machine finds it without GOVCLOUD_CA when the lab is in DefaultDir).
func (l *Lab) caFile() string { return filepath.Join(l.dir, "controller", "ca.crt") }

func (l *Lab) adminToken() (string, error) {
	b, err := os.ReadFile(filepath.Join(l.dir, "controller", "admin-token"))
	return strings.TrimSpace(string(b)), err
}

// Up builds the lab from nothing (an earlier lab, whole or half-made, is removed first).
func (l *Lab) Up(ctx context.Context) (err error) {
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("lab up interrupted: %w; 'govcloud lab down' removes what it made", err)
		}
	}()
	if err := l.preflight(); err != nil {
		return err
	}
	if l.opt.VMs {
		if err := l.preflightVMs(); err != nil {
			return err
		}
	}
	if len(labNamespaces()) > 0 || dirExists(l.dir) || dirExists(l.frrDir()) {
		l.printf("lab: an earlier lab is here; removing it first\n")
		if err := l.Down(ctx); err != nil {
			return err
		}
	}
	const steps = 8
	start := time.Now()
	for _, d := range []string{"logs", "pids", "bpf", "controller", "tokens"} {
		mode := os.FileMode(0o755)
		if d == "controller" || d == "tokens" {
			mode = 0o700 // the embedded etcd's socket, the CA key, the admin and join tokens
		}
		if err := os.MkdirAll(filepath.Join(l.dir, d), mode); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(l.dir, hostsFile), []byte(strconv.Itoa(len(l.hosts))+"\n"), 0o644); err != nil {
		return err
	}
	l.step(1, steps, "network namespaces: gc-tor (bridge + router), "+l.hostList(false)+", gc-client")
	if err := buildTopology(l.hosts); err != nil {
		return err
	}
	// 'ip netns exec' remounts /sys: agents pin into a bpffs of the lab's own, which every
	// namespace sees, so a restarted agent finds its maps.
	if err := sh("mount", "-t", "bpf", "bpf", filepath.Join(l.dir, "bpf")); err != nil {
		return err
	}
	// Agents live in host namespaces but reach the controller on the machine's loopback: they
	// dial from the machine's namespace, held open here (pid 1's may not be readable).
	if err := os.WriteFile(l.rootNS(), nil, 0o600); err != nil {
		return err
	}
	if err := sh("mount", "--bind", "/proc/self/ns/net", l.rootNS()); err != nil {
		return err
	}
	// The hosts' XDP programs send frames back out their uplinks (XDP_TX); the ToR's veth
	// ports receive them only with an XDP program of their own, as a NIC driver would.
	if err := os.MkdirAll(filepath.Join(l.dir, "bpf", "tor"), 0o700); err != nil {
		return err
	}
	for i := range l.hosts {
		port := torPort(i)
		if err := inNS(NSTor, func() error { return lbmap.AttachPass(port, filepath.Join(l.dir, "bpf", "tor", port)) }); err != nil {
			return err
		}
	}

	l.step(2, steps, "top-of-rack router: FRR zebra + bgpd in gc-tor, AS 65000")
	if err := l.startFRR(); err != nil {
		return err
	}

	l.step(3, steps, "controller with embedded etcd on "+API)
	if err := l.startController(); err != nil {
		return err
	}
	var admin string
	if err := l.waitFor(ctx, "controller API", 60*time.Second, func() error {
		if !l.alive("controller") {
			return fmt.Errorf("controller exited:\n%s", l.logTail("controller", 15))
		}
		tok, err := l.adminToken()
		if err != nil {
			return err
		}
		admin = tok
		_, err = l.client(tok).Status(ctx)
		return err
	}); err != nil {
		return err
	}

	l.step(4, steps, "apply "+l.opt.Config)
	if err := l.apply(ctx, admin); err != nil {
		return err
	}

	l.step(5, steps, "agents in "+l.hostList(true)+" (join with single-use join tokens, then mTLS with host certificates)")
	if err := os.WriteFile(l.controllerFile(), []byte(API+"\n"), 0o644); err != nil {
		return err
	}
	for _, h := range l.hosts {
		// One join token per agent: the network agent and the compute agent.
		for _, who := range []string{"agent", "compute"} {
			jt, err := l.client(admin).CreateJoinToken(ctx, client.JoinTokenRequest{Host: h, TTL: "30m"})
			if err != nil {
				return fmt.Errorf("join token for the %s of %s: %w", who, h, err)
			}
			if err := os.WriteFile(l.joinTokenFile(h, who), []byte(jt.Token+"\n"), 0o600); err != nil {
				return err
			}
		}
		if err := l.startAgent(h); err != nil {
			return err
		}
	}

	if l.opt.VMs {
		l.step(6, steps, "guests: VMs under libvirt (qemu), made by a compute agent in each host, on the segment bridges")
	} else {
		l.step(6, steps, "guests: namespace VMs gc-vm-<name>, made by a compute agent (--provider netns) in each host, on the segment bridges")
	}
	states := map[string]*desired.State{}
	for _, h := range l.hosts {
		st, err := l.client(admin).Desired(ctx, h, 0, time.Second)
		if err != nil {
			return err
		}
		states[h] = st
	}
	if err := l.startCompute(ctx); err != nil {
		return err
	}
	vms := map[string][]string{}
	for h, st := range states {
		for _, vm := range st.VMs {
			vms[h] = append(vms[h], vm.Name)
		}
	}
	if err := l.computeReady(ctx, vms); err != nil {
		return err
	}
	if err := l.startPrometheus(); err != nil {
		return err
	}

	l.step(7, steps, "waiting until every host reports ready, each VIP answers from backends on "+l.backendHosts()+" and FRR learns it from "+l.fromAll())
	vips, err := l.vips(ctx, admin)
	if err != nil {
		return err
	}
	if err := l.waitReady(ctx, admin, vips); err != nil {
		return err
	}

	l.step(8, steps, fmt.Sprintf("up in %.0fs", time.Since(start).Seconds()))
	l.walkthrough(ctx, admin, vips)
	return nil
}

func (l *Lab) apply(ctx context.Context, token string) error {
	files := []string{l.opt.Config}
	if fi, err := os.Stat(l.opt.Config); err == nil && fi.IsDir() {
		files, _ = filepath.Glob(filepath.Join(l.opt.Config, "*.yaml"))
		sort.Strings(files)
	}
	if len(files) == 0 {
		return fmt.Errorf("no YAML in %s", l.opt.Config)
	}
	// The configuration names its hosts; the lab fits it to the hosts it makes (fitConfig) and
	// declares those the configuration does not, first, so VMs may be placed on them.
	fitted := make([][]byte, len(files))
	var declared []string
	for i, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var decl, notes []string
		if fitted[i], decl, notes, err = fitConfig(f, data, l.hosts); err != nil {
			return err
		}
		declared = append(declared, decl...)
		for _, n := range notes {
			l.printf("   %s: %s\n", f, n)
		}
	}
	var missing []string
	for _, h := range l.hosts {
		if !slices.Contains(declared, h) {
			missing = append(missing, h)
		}
	}
	if len(missing) > 0 {
		res, err := l.client(token).Apply(ctx, "lab-hosts.yaml", []byte(l.hostsYAML(missing)), client.ApplyOptions{})
		if err != nil {
			return fmt.Errorf("apply the lab's hosts %s: %w", strings.Join(missing, ", "), err)
		}
		l.printf("   applied Host %s (the lab's, not in %s; revision %d)\n", strings.Join(missing, ", "), l.opt.Config, res.Revision)
	}
	for i, f := range files {
		res, err := l.client(token).Apply(ctx, f, fitted[i], client.ApplyOptions{})
		if err != nil {
			return fmt.Errorf("apply %s: %w", f, err)
		}
		l.printf("   applied %s (revision %d)\n", f, res.Revision)
	}
	return nil
}

// startController runs the controller on the machine itself. Reads need no token in the lab
// (docs/DESIGN.md); writes need the printed admin token.
func (l *Lab) startController() error {
	return l.start("controller", "", l.opt.Bin, "controller", "--anonymous-read", "--data-dir", filepath.Join(l.dir, "controller"), "--listen", strings.TrimPrefix(API, "https://"))
}

// usageInterval is how often the lab's agents report traffic totals to the ledger: short, so
// bills follow the wire within seconds (a drill waits for it).
const usageInterval = 2 * time.Second

// joinTokenFile holds the single-use join token of host h's agent (who: agent or compute).
func (l *Lab) joinTokenFile(h, who string) string {
	return filepath.Join(l.dir, "tokens", h+"-"+who+".join")
}

// startAgent runs host h's agent. On its first start it exchanges its join token for a host
// certificate, kept in its --state-dir; restarts reuse that certificate (the token is spent).
func (l *Lab) startAgent(h string) error {
	return l.start("agent-"+h, h, append([]string{l.opt.Bin}, l.agentArgs(h)...)...)
}

// agentArgs are the arguments of host h's agent (after the binary).
func (l *Lab) agentArgs(h string) []string {
	return []string{"agent", "--host", h, "--controller-file", l.controllerFile(), "--ca", l.caFile(), "--api-netns", l.rootNS(),
		"--usage-interval", usageInterval.String(),
		"--join-token-file", l.joinTokenFile(h, "agent"), "--metrics-listen", Metrics + "," + hostAddr(l.hostIndex(h)) + ":9480",
		"--pin-root", filepath.Join(l.dir, "bpf", h), "--state-dir", filepath.Join(l.dir, "state", h),
		// The ToR's fabric address is in the uplink's prefix (management already); its
		// client-side address is management too.
		"--management", torClient + "/32"}
}

func (l *Lab) rootNS() string { return filepath.Join(l.dir, "rootns") }

type vipInfo struct {
	Service, Department, VIP string
}

func (l *Lab) vips(ctx context.Context, token string) ([]vipInfo, error) {
	objs, err := l.client(token).List(ctx, "services")
	if err != nil {
		return nil, err
	}
	var out []vipInfo
	for _, o := range objs {
		if o.VIP != "" {
			out = append(out, vipInfo{Service: o.Name, Department: o.Department, VIP: o.VIP})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	if len(out) == 0 {
		return nil, errors.New("no service has a VIP")
	}
	return out, nil
}

func (l *Lab) waitReady(ctx context.Context, admin string, vips []vipInfo) error {
	if err := l.waitFor(ctx, "hosts report ready", 90*time.Second, func() error {
		hs, err := l.client(admin).HostStatuses(ctx)
		if err != nil {
			return err
		}
		for _, h := range l.hosts {
			if !l.alive("agent-" + h) {
				return fmt.Errorf("agent on %s exited:\n%s", h, l.logTail("agent-"+h, 15))
			}
			raw, ok := hs[h]
			if !ok {
				return fmt.Errorf("%s has not reported", h)
			}
			var rep hoststatus.Report
			if err := json.Unmarshal(raw, &rep); err != nil {
				return fmt.Errorf("%s report: %w", h, err)
			}
			if !rep.Status.Ready {
				return fmt.Errorf("%s not ready: %s", h, rep.Status.Error)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	// Backends count as up until their checks fail, and VMs take seconds to boot: wait for
	// answers from both hosts' backends first, then for the routes (a host re-advertises a VIP
	// once its backend passes its checks).
	if err := l.waitFor(ctx, "each VIP answers HTTP from gc-client, from backends on "+l.backendHosts(), 90*time.Second, func() error {
		return l.checkVIPs(vips)
	}); err != nil {
		return err
	}
	return l.waitFor(ctx, "FRR holds each VIP from "+l.allHosts(), 90*time.Second, func() error {
		for _, v := range vips {
			if _, err := l.frrPaths(v.VIP); err != nil {
				return err
			}
		}
		return nil
	})
}

// curl fetches http://vip/ from the client namespace.
func curl(vip string) (string, error) {
	out, err := nsOut(NSClient, "curl", "-sS", "--max-time", "2", "http://"+vip+"/")
	return strings.TrimSpace(out), err
}

func (l *Lab) walkthrough(ctx context.Context, admin string, vips []vipInfo) {
	p := l.printf
	p("\n== govcloud lab is up ==\n\n")
	var tops []string
	for i, h := range l.hosts {
		tops = append(tops, fmt.Sprintf("%s (%s)", h, hostAddr(i)))
	}
	p("Topology: gc-client -- gc-tor (FRR, AS 65000; bridge 'fabric' = L2 trunk) -- %s\n", strings.Join(tops, ", "))
	p("Controller: %s   admin token: %s\n", API, filepath.Join(l.dir, "controller", "admin-token"))
	p("  export GOVCLOUD_API=%s GOVCLOUD_CA=%s GOVCLOUD_TOKEN=$(sudo cat %s)\n", API, l.caFile(), filepath.Join(l.dir, "controller", "admin-token"))
	p("  (HTTPS only: curl --cacert %s %s/v1/status; plain http:// is refused)\n\n", l.caFile(), API)
	p("Services (VIPs answer from the client through the ToR):\n")
	for _, v := range vips {
		body, _ := curl(v.VIP)
		p("  %-12s department %-8s VIP %-15s  sudo ip netns exec %s curl http://%s/   -> %s\n", v.Service, v.Department, v.VIP, NSClient, v.VIP, body)
	}
	p("\nFRR's routes to the VIPs (ECMP over %s):\n", l.allHosts())
	for _, v := range vips {
		paths, _ := l.frrPaths(v.VIP)
		p("  %s via %s\n", v.VIP, strings.Join(paths, ", "))
	}
	p("  sudo ip netns exec %s vtysh --vty_socket %s -c 'show ip route bgp'\n", NSTor, l.frrDir())
	p("\nObjects (%s get vms, get services, get all -o json; %s status):\n", l.opt.Bin, l.opt.Bin)
	for _, kind := range []string{"vms", "services"} {
		cmd := exec.CommandContext(ctx, l.opt.Bin, "get", kind, "-o", "table")
		cmd.Env = append(os.Environ(), "GOVCLOUD_API="+API, "GOVCLOUD_CA="+l.caFile())
		out, _ := cmd.CombinedOutput()
		for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
			p("  %s\n", line)
		}
	}
	p("\nMeters so far (%s' /metrics, bytes):\n", l.allAgents())
	if by, err := l.scrapeBy("govcloud_department_bytes_total", "department"); err == nil {
		for _, d := range slices.Sorted(maps.Keys(by)) {
			p("  department %-10s %8.0f  (govcloud_department_bytes_total: VLAN trunk, both directions)\n", d, by[d])
		}
	}
	if by, err := l.scrapeBy("govcloud_service_bytes_total", "service"); err == nil {
		for _, svc := range slices.Sorted(maps.Keys(by)) {
			p("  service    %-10s %8.0f  (govcloud_service_bytes_total: through the load balancer)\n", svc, by[svc])
		}
	}
	p("  sudo ip netns exec gc-host1 curl -s http://%s/metrics | grep govcloud_\n", Metrics)
	p("Prometheus (scraping %s, with the recording rules) in gc-tor at http://%s:\n", l.allAgents(), promListen)
	p("  sudo ip netns exec %s curl -s 'http://%s/api/v1/query?query=sum+by+(department)(govcloud_department_bytes_total)'\n", NSTor, promListen)
	p("Agent:    sudo ip netns exec gc-host1 curl -s http://%s/status\n", Metrics)
	if l.vmMode() {
		p("VMs:      sudo virsh list   (libvirt domains gc-<vm>, qemu under TCG); consoles in %s/compute/<host>/console/\n", l.dir)
		p("Compute:  sudo ip netns exec gc-host1 curl -s http://%s:%s/status\n", hostAddr(0), computeMetricsPort)
	}
	p("Grafana dashboard: deploy/grafana/   Prometheus config and rules: deploy/prometheus/\n")
	p("Logs:     %s/logs/\n", l.dir)
	p("Check:    sudo %s lab verify      Remove: sudo make demo-down\n", l.opt.Bin)
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// hostOf finds which host runs vm.
func hostOf(states map[string]*desired.State, vm string) string {
	for h, st := range states {
		if slices.ContainsFunc(st.VMs, func(v desired.VM) bool { return v.Name == vm }) {
			return h
		}
	}
	return ""
}
