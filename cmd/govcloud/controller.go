package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/controlplane/alloc"
	"github.com/govcloud/govcloud/controlplane/api"
	"github.com/govcloud/govcloud/controlplane/controller"
	"github.com/govcloud/govcloud/controlplane/store"
	"github.com/govcloud/govcloud/internal/buildinfo"
)

func init() { register(newControllerCmd) }

// controllerExtensions are appended from other files' init (e.g. the usage ledger) to serve
// more routes from the controller without editing this file.
var controllerExtensions []func(ctx context.Context, srv *api.Server, st *store.Store) error

// controllerFlagHooks add other files' flags and help to the controller command (the usage
// ledger's --usage-grace).
var controllerFlagHooks []func(*cobra.Command)

func newControllerCmd(g *globals) *cobra.Command {
	var (
		opt        controller.Options
		endpoints  string
		vlanRanges []string
		tableRange string
		asn        uint32
		etcdCA     string
		etcdCert   string
		etcdKey    string
	)
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run the controller: REST API, store (etcd), allocators",
		Long: `controller serves the REST API (JSON under /v1, OpenAPI at /v1/openapi.json) over HTTPS.

On first start it makes a CA (DATA-DIR/ca.crt, ca.key 0600) and a server certificate
(server.crt, server.key; names: the listen address, 127.0.0.1, ::1, localhost, the hostname
and --tls-san), or serves --tls-cert/--tls-key. Clients verify it with GOVCLOUD_CA (default:
DATA-DIR/ca.crt when readable). Hosts authenticate with client certificates of that CA,
obtained once with a join token ('govcloud token create --role agent --host H --join') and
renewed before expiry (--cert-ttl); --client-ca adds CAs whose client certificates are
accepted too. --insecure-http serves plain HTTP instead (bearer tokens in clear; logged).
It writes an admin token to DATA-DIR/admin-token (0600) on first start and prints only that
path, never the token.

By default it embeds a single-node etcd under --data-dir, reachable only through the unix
socket DATA-DIR/etcd.sock (the directory is 0700). --etcd-endpoints uses an external cluster
instead, with --etcd-cacert/--etcd-cert/--etcd-key for TLS and client certificates (configure
it with --max-txn-ops and --max-request-bytes large enough for one apply, e.g. 100000 and
67108864). Several controllers sharing one etcd elect a leader, which runs the allocation
sweep, and share one CA (kept in etcd); any controller serves the API.

With --backup-dir the leader writes a backup (see 'govcloud backup') every --backup-interval
and keeps the newest --backup-keep; --metrics-listen serves their state as Prometheus metrics
(govcloud_backup_last_success_timestamp_seconds, govcloud_backup_last_size_bytes, ...).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if endpoints != "" {
				opt.EtcdEndpoints = strings.Split(endpoints, ",")
			}
			for _, e := range opt.EtcdEndpoints {
				if err := checkEtcdEndpoint(e); err != nil {
					return err
				}
			}
			if err := checkControllerFlags(&opt, tableRange); err != nil {
				return err
			}
			opt.Alloc = alloc.DefaultConfig()
			for _, v := range vlanRanges {
				fabric, r, ok := strings.Cut(v, "=")
				if !ok {
					fabric, r = "default", v
				}
				rr, err := alloc.ParseRange(r)
				if err != nil {
					return fmt.Errorf("--vlan-range %q: %w", v, err)
				}
				if rr.Last > 4094 {
					return fmt.Errorf("--vlan-range %q: VLAN IDs stop at 4094", v)
				}
				opt.Alloc.VLANs[fabric] = rr
			}
			opt.Alloc.Tables, _ = parseTableRange(tableRange) // checked above
			var err error
			if opt.EtcdTLS, err = store.EtcdTLS(etcdCA, etcdCert, etcdKey); err != nil {
				return err
			}
			if opt.EtcdTLS != nil && len(opt.EtcdEndpoints) == 0 {
				return fmt.Errorf("--etcd-cacert/--etcd-cert/--etcd-key need --etcd-endpoints (the embedded etcd is a unix socket)")
			}
			opt.Out = cmd.OutOrStdout()
			opt.Version = buildinfo.Get()
			opt.Extend = controllerExtensions
			return controller.Run(cmd.Context(), g.log, opt)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opt.DataDir, "data-dir", "/var/lib/govcloud", "directory (0700) for the embedded etcd, the CA, the server certificate and the admin token")
	f.StringVar(&opt.Listen, "listen", "127.0.0.1:8480", "address:port of the REST API")
	f.StringVar(&endpoints, "etcd-endpoints", "", "comma-separated external etcd client URLs (default: embedded etcd)")
	f.StringVar(&etcdCA, "etcd-cacert", "", "CA certificate (PEM) verifying the external etcd's server certificates")
	f.StringVar(&etcdCert, "etcd-cert", "", "client certificate (PEM) for the external etcd (its --client-cert-auth)")
	f.StringVar(&etcdKey, "etcd-key", "", "private key (PEM) of --etcd-cert")
	f.BoolVar(&opt.TLS.InsecureHTTP, "insecure-http", false, "serve the API over plain HTTP (tokens in clear, no host certificates); only for tests")
	f.StringVar(&opt.TLS.CertFile, "tls-cert", "", "the API's certificate, PEM (default: DATA-DIR/server.crt, made from the controller's CA)")
	f.StringVar(&opt.TLS.KeyFile, "tls-key", "", "private key of --tls-cert, PEM")
	f.StringVar(&opt.TLS.ClientCAFile, "client-ca", "", "more CA certificates (PEM) whose client certificates are accepted as hosts")
	f.StringArrayVar(&opt.TLS.SANs, "tls-san", nil, "another DNS name or IP address for the made server certificate; repeatable")
	f.DurationVar(&opt.TLS.CertTTL, "cert-ttl", 24*time.Hour, "lifetime of host certificates issued at join and renewal (renewed at 2/3)")
	f.StringArrayVar(&vlanRanges, "vlan-range", nil, "VLAN allocation range, [FABRIC=]FIRST-LAST (default 100-3999); repeatable")
	f.StringVar(&tableRange, "table-range", "1000-1999", "routing table IDs for department VRFs, FIRST-LAST (not the kernel's 253-255)")
	f.Uint32Var(&asn, "asn", 65000, "unused: departments get no route distinguisher/target (VRF-lite routes by table)")
	_ = f.MarkDeprecated("asn", "departments have no RD/RT; the flag does nothing and will be removed")
	f.BoolVar(&opt.AnonymousRead, "anonymous-read", false, "allow reads without a token (lab only)")
	f.StringVar(&opt.Backup.Dir, "backup-dir", "", "scheduled backups: the leader writes one every --backup-interval to DIR (meant to be another site's mount); see 'govcloud backup'")
	f.DurationVar(&opt.Backup.Interval, "backup-interval", time.Hour, "time between scheduled backups (with --backup-dir)")
	f.IntVar(&opt.Backup.Keep, "backup-keep", 48, "newest scheduled backups kept in --backup-dir; older ones are removed (0: keep all)")
	f.StringVar(&opt.MetricsListen, "metrics-listen", "", "ADDR:PORT serving Prometheus /metrics over plain HTTP without a token (backup state and leadership only; nothing secret), e.g. 127.0.0.1:9482")
	f.DurationVar(&opt.ElectionTTL, "election-ttl", 2*time.Second, "leader lease, 500ms to 1m: a leader not renewing it for this long stops writing at once and is replaced after etcd's lease (this, rounded up to whole seconds) ends; sub-second values are kept")
	f.StringVar(&opt.AdvertiseURL, "advertise-url", "", "URL other controllers forward writes to, https://HOST:PORT (default: the listen address; required with external etcd when --listen is 0.0.0.0 or [::])")
	f.DurationVar(&opt.Compaction, "etcd-compaction", controller.DefaultCompaction, "with --etcd-endpoints: the leader compacts etcd's history every this long, to the revision one interval before (negative: never; the embedded etcd compacts itself)")
	f.DurationVar(&opt.AuditMaxAge, "audit-max-age", controller.DefaultAuditMaxAge, "audit entries older than this are deleted (negative: keep all ages)")
	f.Int64Var(&opt.AuditMaxEntries, "audit-max-entries", controller.DefaultAuditMaxEntries, "the oldest audit entries beyond this count are deleted (negative: no limit)")
	f.DurationVar(&opt.RetentionInterval, "audit-retention-interval", controller.DefaultRetentionInterval, "how often the leader applies --audit-max-age and --audit-max-entries")
	f.StringVar(&opt.ID, "id", "", "this controller's name in leader election (default host/listen address)")
	for _, h := range controllerFlagHooks {
		h(cmd)
	}
	return cmd
}

// Bounds of the controller's flags (checkControllerFlags).
const (
	minElectionTTL = 500 * time.Millisecond // renewals every TTL/3: more often would load etcd
	maxElectionTTL = time.Minute            // a dead leader blocks writes this long
	maxTableID     = 0x7fffffff             // the kernel's routing table IDs the agent accepts
)

// checkControllerFlags refuses, before anything is written, every flag value the controller
// cannot work with, naming each flag and value: an election TTL outside 500ms..1m, a table
// range holding the kernel's reserved tables (253 default, 254 main, 255 local) or beyond
// 2^31-1, backup and retention intervals of 0 or less, a negative backup count, a host
// certificate lifetime of 0 or less, and an advertise URL that is not https://HOST:PORT.
func checkControllerFlags(opt *controller.Options, tableRange string) error {
	var errs []error
	if opt.ElectionTTL < minElectionTTL || opt.ElectionTTL > maxElectionTTL {
		errs = append(errs, fmt.Errorf("--election-ttl %s: want %s to %s (default 2s)", opt.ElectionTTL, minElectionTTL, maxElectionTTL))
	}
	if _, err := parseTableRange(tableRange); err != nil {
		errs = append(errs, err)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--backup-interval", opt.Backup.Interval}, {"--audit-retention-interval", opt.RetentionInterval}, {"--cert-ttl", opt.TLS.CertTTL}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: must be more than 0", d.flag, d.v))
		}
	}
	for _, l := range []struct{ flag, v string }{{"--listen", opt.Listen}, {"--metrics-listen", opt.MetricsListen}} {
		if l.v != "" {
			if err := checkListen(l.flag, l.v); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if (opt.TLS.CertFile == "") != (opt.TLS.KeyFile == "") {
		errs = append(errs, fmt.Errorf("--tls-cert %q and --tls-key %q: give both or neither", opt.TLS.CertFile, opt.TLS.KeyFile))
	}
	for _, f := range []struct{ flag, path string }{{"--tls-cert", opt.TLS.CertFile}, {"--tls-key", opt.TLS.KeyFile}, {"--client-ca", opt.TLS.ClientCAFile}} {
		if f.path == "" {
			continue
		}
		if b, err := os.ReadFile(f.path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.flag, err))
		} else if !strings.Contains(string(b), "-----BEGIN ") {
			errs = append(errs, fmt.Errorf("%s %s: no PEM block", f.flag, f.path))
		}
	}
	if opt.Backup.Keep < 0 {
		errs = append(errs, fmt.Errorf("--backup-keep %d: want 0 (keep all) or more", opt.Backup.Keep))
	}
	if opt.AdvertiseURL != "" {
		scheme := "https://"
		if opt.TLS.InsecureHTTP {
			scheme = "http://"
		}
		if _, err := controller.AdvertiseURL(opt.AdvertiseURL, scheme, opt.Listen, len(opt.EtcdEndpoints) > 0); err != nil {
			errs = append(errs, err)
		} else if u, err := url.Parse(opt.AdvertiseURL); err == nil {
			if _, err := strconv.ParseUint(u.Port(), 10, 16); err != nil || u.Port() == "0" {
				errs = append(errs, fmt.Errorf("--advertise-url %q: port %q is not a number from 1 to 65535", opt.AdvertiseURL, u.Port()))
			}
		}
	}
	return errors.Join(errs...)
}

// parseTableRange parses --table-range: FIRST-LAST of routing table IDs for department VRFs,
// none of them reserved by the kernel (253, 254, 255) and none beyond 2^31-1.
func parseTableRange(s string) (alloc.Range, error) {
	r, err := alloc.ParseRange(s)
	switch {
	case err != nil:
		return r, fmt.Errorf("--table-range: %w", err)
	case r.First <= 255 && r.Last >= 253:
		return r, fmt.Errorf("--table-range %q: holds the kernel's reserved tables 253 (default), 254 (main) and 255 (local); use e.g. 1000-1999", s)
	case r.Last > maxTableID:
		return r, fmt.Errorf("--table-range %q: table IDs stop at %d", s, maxTableID)
	}
	return r, nil
}

// checkEtcdEndpoint refuses an --etcd-endpoints entry the etcd client could not dial, before
// the client's dial timeout would: http(s)://host:port, unix(s)://path, or host:port.
func checkEtcdEndpoint(e string) error {
	if u, err := url.Parse(e); err == nil && u.Opaque == "" {
		switch u.Scheme {
		case "http", "https":
			if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" {
				return fmt.Errorf("--etcd-endpoints %q: want %s://host:port", e, u.Scheme)
			}
			return nil
		case "unix", "unixs":
			if u.Host+u.Path == "" {
				return fmt.Errorf("--etcd-endpoints %q: no socket path", e)
			}
			return nil
		}
	}
	if _, port, err := net.SplitHostPort(e); err != nil || port == "" {
		return fmt.Errorf("--etcd-endpoints %q: want http(s)://host:port, unix://path or host:port", e)
	}
	return nil
}
