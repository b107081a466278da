package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/agent"
	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/compute/libvirt"
	"github.com/govcloud/govcloud/compute/netns"
	"github.com/govcloud/govcloud/dataplane/netdev"
	"github.com/govcloud/govcloud/metering"
	"github.com/govcloud/govcloud/metering/hostsource"
)

func init() { register(newComputeCmd) }

func newComputeCmd(g *globals) *cobra.Command {
	var (
		host, provider, metricsListen string
		auth                          hostAuth
		startLibvirtd, reportStatus   bool
		sendConsole                   bool
		lcfg                          libvirt.Config
		ncfg                          netns.Config
	)
	cmd := &cobra.Command{
		Use:   "compute",
		Short: "Run the compute agent: VMs and volumes on the segment bridges",
		Long: `compute makes the VMs and volumes the controller placed on this host and keeps them so.
It long-polls the controller for the host's desired state over HTTPS (--controller or
GOVCLOUD_API), authenticated by the host's client certificate (host.crt/host.key in
--state-dir, obtained once with --join-token and renewed before expiry; or an agent token from
--token-file or GOVCLOUD_TOKEN) and reconciles: VMs no longer wanted are deleted
with their root disk, taps and console log; wanted ones are created, and changed ones brought to
their spec (libvirt: spec.powerState running|stopped stops and starts the VM; raising
spec.restartGeneration reboots it once; new vCPUs, memory, NICs or volumes restart it; the root
disk is kept through all of these and only a new image makes a new one; a VM found not running
is started again). Volumes stay until their Volume object is deleted (detached or with their VM
deleted too), in files named gc-vol-NAME@HOST: a host touches only its own, so several hosts may
share one storage pool. Each NIC's host side is named as the network agent expects
(agent.GuestPort) and joins the segment bridge.

--provider libvirt (default) runs real VMs under libvirtd (qemu, direct kernel boot of the
built-in tiny guest, qcow2 overlays in the storage pool --pool). A VM whose image is an Image
object boots an overlay on that file of --image-store ('make image-debian' puts the Debian image
there) once its sha256 matches the object's (a mismatch is the VM's error, in 'govcloud status'),
with a NoCloud seed disk (label cidata) of its own: hostname, spec.sshKeys, addresses and
gateways. --provider netns makes a
network namespace per VM (gc-vm-NAME) serving HTTP, for the lab and fast tests (no power
state: powerState stopped is the VM's error). Domains are
tagged with --host, so agents of several hosts may share one libvirtd. A VM that backs a dsr
service gets the VIP on its lo (at boot, and through the guest's serial shell when it changes).

Everything it makes is named gc-...; at start and on every pass, owned leftovers of a killed
agent are removed. After 30 s without a change a resync pass puts back what went away (a
qemu that died). With the controller away nothing changes (fail-static). The end of each
libvirt VM's serial console log (last 64 KiB) goes to the controller when it grows, for
'govcloud console VM' (--send-console). Serves /status
(JSON) and /metrics (govcloud_vm_vcpu_seconds_total, govcloud_vm_memory_bytes,
govcloud_volume_allocated_bytes) on --metrics-listen.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			// Flags checked before anything is dialed or made, every bad one named.
			var flagErrs []error
			if provider != "libvirt" && provider != "netns" {
				flagErrs = append(flagErrs, fmt.Errorf("--provider %q: want libvirt or netns", provider))
			}
			if metricsListen != "" {
				if err := checkListen("--metrics-listen", metricsListen); err != nil {
					flagErrs = append(flagErrs, err)
				}
			}
			if lcfg.StopTimeout < 0 {
				flagErrs = append(flagErrs, fmt.Errorf("--stop-timeout %s: want 0 (power off at once) or more", lcfg.StopTimeout))
			}
			flagErrs = append(flagErrs, auth.check(lcfg.StateDir)...)
			if err := errors.Join(flagErrs...); err != nil {
				return err
			}
			if host == "" {
				host, _ = os.Hostname()
			}
			c, renew, err := auth.client(ctx, host, lcfg.StateDir, g.log)
			if err != nil {
				return err
			}
			go renew(ctx)
			var p compute.Provider
			switch provider {
			case "libvirt":
				if startLibvirtd {
					if err := libvirt.StartDaemon(ctx, lcfg.Socket); err != nil {
						return err
					}
				}
				lcfg.Log = g.log.With("component", "libvirt")
				lcfg.Host = host
				lp, err := libvirt.New(ctx, lcfg)
				if err != nil {
					return err
				}
				defer lp.Close()
				p = lp
			case "netns":
				ncfg.Log = g.log.With("component", "netns")
				if ncfg.StateDir, err = netnsStateDir(ncfg.StateDir, host); err != nil {
					return err
				}
				np, err := netns.New(ncfg)
				if err != nil {
					return err
				}
				p = np
			default:
				return fmt.Errorf("--provider %q: want libvirt or netns", provider)
			}
			rs := &reportServer{}
			a := &compute.Agent{
				Host: host, Source: c, Provider: p, Log: g.log,
				Naming: compute.Naming{
					Bridge: func(vlan int) string { return netdev.BridgeName(uint16(vlan)) },
					Port:   agent.GuestPort,
				},
				Sink: func(ctx context.Context, r compute.Report) {
					rs.set(r)
					if reportStatus {
						if err := c.PutComputeStatus(ctx, host, r); err != nil {
							g.log.Warn("report status", "err", err)
						}
					}
				},
			}
			if metricsListen != "" {
				srv, err := serveStatus(metricsListen, rs, hostsource.Compute(ctx, p, host))
				if err != nil {
					return err
				}
				defer srv.Close()
			}
			// vCPU-seconds, memory and volume levels to the controller's usage ledger.
			go hostsource.ComputeReporter(ctx, p, host, &metering.Client{Base: c.Base, HTTP: c.FailoverHTTP()}).Run(ctx)
			go auth.repointOnHangup(ctx, c, g.log, nil)
			if logs, ok := p.(compute.ConsoleSource); ok && sendConsole {
				go (&compute.ConsoleSender{Provider: p, Logs: logs, Log: g.log,
					Send: func(ctx context.Context, vm string, end int64, data []byte) error {
						return c.PutConsole(ctx, host, vm, end, data)
					}}).Run(ctx)
			}
			g.log.Info("compute agent running", "host", host, "provider", provider, "controllers", c.Bases)
			return a.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&host, "host", "", "this host's name in the controller (default: hostname)")
	auth.flags(f)
	f.StringVar(&provider, "provider", "libvirt", "libvirt (real VMs) or netns (namespace guests)")
	f.StringVar(&metricsListen, "metrics-listen", "127.0.0.1:9481", "serve /status and /metrics here (empty: off)")
	f.BoolVar(&startLibvirtd, "start-libvirtd", false, "start virtlogd and libvirtd when their socket does not answer (hosts without systemd)")
	f.BoolVar(&sendConsole, "send-console", true, "send the end of each VM's serial console log (libvirt) to the controller, for 'govcloud console VM'")
	f.BoolVar(&reportStatus, "report-status", false, "also send each report to the controller (its compute status of the host; 'govcloud status' shows it)")
	f.StringVar(&lcfg.Socket, "libvirt-socket", "/run/libvirt/libvirt-sock", "libvirtd socket")
	f.StringVar(&lcfg.Pool, "pool", "gc-pool", "libvirt storage pool for volumes")
	f.StringVar(&lcfg.PoolType, "pool-type", "dir", "storage pool type: dir, or another libvirt type with --pool-xml")
	f.StringVar(&lcfg.PoolXML, "pool-xml", "", "pool definition used when the pool does not exist and is not a dir pool (e.g. rbd)")
	f.StringVar(&lcfg.LibvirtNetns, "libvirt-netns", "", "libvirtd's network namespace when it is not this process's (the lab): NICs get a bridge there and a veth into this one")
	f.StringVar(&lcfg.ImageStore, "image-store", "/var/cache/govcloud/images", "libvirt provider: directory of the Image objects' files (spec.source is relative to it)")
	f.DurationVar(&lcfg.StopTimeout, "stop-timeout", 30*time.Second, "libvirt provider: how long a VM of an image is given to shut down (ACPI) when stopped or restarted before it is powered off (the tiny guest is powered off at once)")
	f.StringVar(&lcfg.StateDir, "state-dir", "/var/lib/govcloud/compute", "guest image, dir pool and console logs")
	f.StringVar(&lcfg.BackupDir, "volume-backup-dir", "", "volume backups ('govcloud volume backup'): a Volume with spec.restoreFrom is made from one here (default STATE-DIR/volume-backups; meant to be shared or remote storage)")
	f.StringVar(&ncfg.StateDir, "netns-state-dir", "", "netns provider: per-guest state files; the provider owns exactly the guests here (default /run/govcloud/compute/netns/HOST)")
	return cmd
}

// netnsStateDir is the netns provider's state directory: flag when given, else one per host
// under /run/govcloud/compute/netns. A provider owns (lists, prunes) exactly the guests in its
// directory, so two hosts' agents on one machine (the lab, a test) keep apart.
func netnsStateDir(flag, host string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if host == "" || host == "." || host == ".." || strings.ContainsAny(host, "/\\\x00") {
		return "", fmt.Errorf("--host %q: not usable as a directory name (give --netns-state-dir)", host)
	}
	return filepath.Join("/run/govcloud/compute/netns", host), nil
}

// reportServer serves the last compute report as JSON (metrics come from metering).
type reportServer struct {
	mu sync.Mutex
	r  compute.Report
}

func (s *reportServer) set(r compute.Report) { s.mu.Lock(); s.r = r; s.mu.Unlock() }

func (s *reportServer) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	s.mu.Lock()
	r := s.r
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(r)
}
