package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netns"

	"github.com/govcloud/govcloud/agent"
	"github.com/govcloud/govcloud/controlplane/bgp/gobgp"
	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
	"github.com/govcloud/govcloud/dataplane/hostnet"
	"github.com/govcloud/govcloud/dataplane/lbmap"
	"github.com/govcloud/govcloud/dataplane/netdev"
	"github.com/govcloud/govcloud/dataplane/nsexec"
	"github.com/govcloud/govcloud/dataplane/viproute"
	"github.com/govcloud/govcloud/internal/buildinfo"
	"github.com/govcloud/govcloud/metering"
	"github.com/govcloud/govcloud/metering/hostsource"
)

func init() { register(newAgentCmd) }

func newAgentCmd(g *globals) *cobra.Command {
	var (
		host, metricsListen     string
		pinRoot, stateDir       string
		noBGP                   bool
		usageInterval           time.Duration
		cfg                     agent.Config
		auth                    hostAuth
		management, tenantAllow []string
		check                   bool
		checkUplink             string
		tablesMode              string
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the host agent: segments, VLAN trunk, VRF-lite, isolation, XDP load balancer",
		Long: `agent makes its host's desired state real and keeps it so. It long-polls the controller
for the host's desired state over HTTPS (--controller or GOVCLOUD_API), authenticated by the
host's client certificate (host.crt/host.key in --state-dir: obtained once with --join-token
and renewed at 2/3 of its lifetime; or, without one, an agent token from --token-file or
GOVCLOUD_TOKEN), and on every change — and every 30 s regardless — applies all of it: segment bridges
with the distributed gateway, the eBPF VLAN trunk on the uplink, a routing table per
department, nftables isolation and anti-spoofing (departments never reach the management
plane: every host's fabric address, the uplink's prefixes and --management; --tenant-allow
makes explicit exceptions), the XDP load balancer on the uplink, and
routes delivering VIP traffic to healthy local backends. It health-checks the backends on this
host and reports status back (see 'govcloud status').

With the controller away nothing changes (fail-static). With --controller-file, SIGHUP
re-reads the controller URLs and the agent reconnects at once, its dataplane untouched (the
disaster drill points hosts at a restored controller so). Maps and the XDP link are pinned
under --pin-root, so a restarted agent keeps every flow. SIGTERM removes everything the agent
made; with --keep-dataplane the dataplane stays (upgrades).

--api-netns dials the controller from another network namespace: the lab runs agents inside
host namespaces and gives them a bind mount of the machine's own namespace, where the
controller listens on loopback. Serves /status (JSON) and /metrics on --metrics-listen.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Flags that need neither root nor the network are checked first, all of them.
			var flagErrs []error
			for _, m := range management {
				p, err := agent.ParseManagement(m)
				if err != nil {
					flagErrs = append(flagErrs, fmt.Errorf("--management: %w", err))
				}
				cfg.Management = append(cfg.Management, p)
			}
			for _, a := range tenantAllow {
				ta, err := agent.ParseTenantAllow(a)
				if err != nil {
					flagErrs = append(flagErrs, fmt.Errorf("--tenant-allow: %w", err))
				}
				cfg.TenantAllow = append(cfg.TenantAllow, ta)
			}
			if err := configureTables(&agent.Config{}, tablesMode, nil); err != nil {
				flagErrs = append(flagErrs, err)
			}
			if err := checkListen("--metrics-listen", metricsListen); err != nil {
				flagErrs = append(flagErrs, unjoin(err)...)
			}
			if usageInterval < time.Second {
				flagErrs = append(flagErrs, fmt.Errorf("--usage-interval %v: want 1s or more", usageInterval))
			}
			flagErrs = append(flagErrs, auth.check(stateDir)...)
			if check {
				return runPreflight(cmd.OutOrStdout(), preflightInput{uplink: checkUplink, pinRoot: pinRoot}, flagErrs...)
			}
			if len(flagErrs) > 0 {
				return errors.Join(flagErrs...)
			}
			if host == "" {
				host, _ = os.Hostname()
			}
			c, renew, err := auth.client(cmd.Context(), host, stateDir, g.log)
			if err != nil {
				return err
			}
			go renew(cmd.Context())
			cfg.Host, cfg.Controller, cfg.Log, cfg.Version = host, c, g.log, buildinfo.Get().Short()
			if err := configureTables(&cfg, tablesMode, c); err != nil {
				return err
			}
			// The status listeners are bound before the dataplane is touched: an address that
			// cannot be bound fails here, having changed nothing.
			var statusH, metricsH lateHandler
			srv, err := serveStatus(metricsListen, &statusH, &metricsH)
			if err != nil {
				return err
			}
			defer srv.Close()
			// The dataplane is opened to be kept: whatever fails from here on leaves it forwarding
			// as an earlier agent left it (fail-static, as after a crash). Only a stop the operator
			// asked for (SIGTERM, SIGINT) without --keep-dataplane removes it, at the end.
			removeAtStop := !cfg.Keep
			cfg.Keep = true
			dp, err := openAgentDataplane(g.log, pinRoot, stateDir, true)
			if err != nil {
				return err
			}
			dp.configure(&cfg)
			if !noBGP {
				// A dataplane an earlier agent left forwarding: graceful restart.
				cfg.Speaker = gobgp.New(gobgp.Options{Logger: g.log.With("component", "bgp"), Restarting: dp.lb.Restored()})
			}
			// A pass waiting for a guest port the compute agent is making is retried when it
			// appears (without the watch, at the pass's backoff).
			devices := make(chan struct{}, 1)
			if err := netdev.WatchNewLinks(cmd.Context(), desired.GuestPortPrefix, devices); err != nil {
				g.log.Warn("not watching for guest ports; passes waiting for one retry at their backoff", "err", err)
			} else {
				cfg.DeviceChanges = devices
			}
			a, err := agent.New(cfg)
			if err != nil {
				return errors.Join(err, dp.Close())
			}
			statusH.set(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(a.Status())
			}))
			var metrics http.Handler
			if h := hostsource.Network(a, dp.hn, dp.lb, host); h != nil {
				metrics = h
			}
			metricsH.set(withTableMismatch(metrics, func() map[string]hoststatus.LBTable { return a.Status().Tables }))
			// Counter totals to the controller's usage ledger (exactly once, by sequence), through
			// the failover client: after a SIGHUP repoint they reach the new controllers.
			mc := &metering.Client{Base: c.Base, HTTP: c.FailoverHTTP()}
			ur := hostsource.NetworkReporter(a, dp.hn.Trunk(), host, mc)
			ur.Interval = usageInterval
			go ur.Run(cmd.Context())
			lr := hostsource.LBReporter(a, dp.lb, filepath.Join(pinRoot, "lb"), host, mc)
			lr.Interval = usageInterval
			go lr.Run(cmd.Context())
			go auth.repointOnHangup(cmd.Context(), c, g.log, a.Reconnect)
			g.log.Info("agent running", "host", host, "controllers", c.Bases, "metrics", metricsListen)
			err = a.Run(cmd.Context())
			if removeOnExit(removeAtStop, cmd.Context().Err(), err, a.Status().Revision > 0) {
				g.log.Info("stopping: removing the dataplane (no --keep-dataplane)")
				a.SetKeep(false)
				dp.hn.SetKeep(false)
			} else {
				g.log.Info("stopping: the dataplane keeps forwarding", "keep-dataplane", !removeAtStop, "err", err)
			}
			srv.Close()
			return errors.Join(err, a.Close())
		},
	}
	f := cmd.Flags()
	f.StringVar(&host, "host", "", "this host's name, as in its Host object (default: the hostname)")
	f.BoolVar(&check, "check", false, "preflight: check the other flags and every kernel feature the agent needs (BPF syscall, BTF, bpffs, TCX, nftables, native XDP on --uplink), name each one missing or bad, change nothing and exit")
	f.StringVar(&checkUplink, "uplink", "", "with --check: the uplink interface whose driver must run XDP natively")
	auth.flags(f)
	f.StringVar(&metricsListen, "metrics-listen", "127.0.0.1:9480", "address(es), comma-separated, for /metrics and /status")
	f.StringVar(&pinRoot, "pin-root", agent.DefaultPinRoot, "bpffs directory for pinned maps and links")
	f.StringVar(&stateDir, "state-dir", agent.DefaultStateDir, "directory for state that must outlive a crash")
	f.BoolVar(&cfg.Keep, "keep-dataplane", false, "on shutdown leave the dataplane forwarding (upgrades)")
	f.DurationVar(&usageInterval, "usage-interval", time.Minute, "how often the traffic totals are reported to the usage ledger")
	f.BoolVar(&noBGP, "no-bgp", false, "do not run the BGP speaker (VIPs are not advertised)")
	f.StringArrayVar(&management, "management", nil, "management prefix or address no department may reach (repeatable), e.g. the controller and the top-of-rack router; every host's fabric address and the uplink's prefixes always are")
	f.StringVar(&tablesMode, "maglev-tables", tablesShared, "Maglev tables: shared (the controller's, identical on every host; VIPs advertised once verified), local (built from this host's own history, as before issue 19; the shared ones only compared), off (local, nothing fetched)")
	f.StringArrayVar(&tenantAllow, "tenant-allow", nil, "explicit exception for tenants, proto:addr:port (repeatable), e.g. udp:192.0.2.53:53 for DNS")
	return cmd
}

// agentDataplane is the kernel side of an agent: the host network, the XDP load balancer and
// the VIP routes, opened in the calling thread's network namespace, reusing what an earlier
// agent pinned under the pin root. The agent closes them (agent.Agent.Close); Close here is
// for when no agent was made.
type agentDataplane struct {
	hn     *hostnet.Host
	lb     *lbmap.Dataplane
	routes *viproute.Routes
}

// removeOnExit says whether an agent ending its run removes its dataplane: only when the
// operator stopped it (stopped: the signal context's error), did not ask to keep it
// (removeAtStop: no --keep-dataplane), and this agent made the dataplane its own by applying
// a desired state (reconciled). A run that ended on its own error keeps forwarding, and so
// does an agent that never reached the controller: what it found is an earlier agent's.
func removeOnExit(removeAtStop bool, stopped, runErr error, reconciled bool) bool {
	return removeAtStop && reconciled && stopped != nil && (runErr == nil || errors.Is(runErr, context.Canceled))
}

// openAgentDataplane opens the dataplane: trunk pins under pinRoot/trunk, the load
// balancer's under pinRoot/lb, host network state under stateDir/hostnet. keep makes the
// host network stay on Close (an upgrade).
func openAgentDataplane(log *slog.Logger, pinRoot, stateDir string, keep bool) (*agentDataplane, error) {
	hn, err := hostnet.New(hostnet.Config{Logger: log, PinPath: filepath.Join(pinRoot, "trunk"), StateDir: filepath.Join(stateDir, "hostnet"), Keep: keep})
	if err != nil {
		return nil, fmt.Errorf("host network: %w", err)
	}
	lbd, err := lbmap.Load(lbmap.Options{PinPath: filepath.Join(pinRoot, "lb"), Log: log})
	if err != nil {
		hn.Close()
		return nil, fmt.Errorf("load balancer: %w", err)
	}
	routes, err := viproute.Open(log)
	if err != nil {
		lbd.Close()
		hn.Close()
		return nil, err
	}
	return &agentDataplane{hn: hn, lb: lbd, routes: routes}, nil
}

// configure hands the dataplane to an agent's configuration.
func (d *agentDataplane) configure(cfg *agent.Config) {
	cfg.HostNet, cfg.LB, cfg.Routes = d.hn, d.lb, d.routes
}

// Close closes what openAgentDataplane opened (only when no agent took it over).
func (d *agentDataplane) Close() error {
	return errors.Join(d.routes.Close(), d.lb.Close(), d.hn.Close())
}

// netnsDialer dials from the network namespace at path: each dial runs on a locked thread
// that enters the namespace, creates the socket and comes back (a socket keeps its namespace).
func netnsDialer(path string) (func(ctx context.Context, network, addr string) (net.Conn, error), error) {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("--api-netns %s: %w", path, err)
	}
	return func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = nsexec.Do(target, func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}, nil
}
