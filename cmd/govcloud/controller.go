package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/controlplane/alloc"
	"github.com/govcloud/govcloud/controlplane/api"
	"github.com/govcloud/govcloud/controlplane/controller"
	"github.com/govcloud/govcloud/controlplane/store"
)

func init() { register(newControllerCmd) }

// controllerExtensions are appended from other files' init (e.g. the usage ledger) to serve
// more routes from the controller without editing this file.
var controllerExtensions []func(ctx context.Context, srv *api.Server, st *store.Store) error

func newControllerCmd(g *globals) *cobra.Command {
	var (
		opt        controller.Options
		endpoints  string
		vlanRanges []string
		tableRange string
		asn        uint32
	)
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run the controller: REST API, store (etcd), allocators",
		Long: `controller serves the REST API (JSON under /v1, OpenAPI at /v1/openapi.json).

By default it embeds a single-node etcd under --data-dir; --etcd-endpoints uses an external
cluster instead (configure it with --max-txn-ops and --max-request-bytes large enough for
one apply, e.g. 100000 and 67108864). Several controllers sharing one etcd elect a leader,
which runs the allocation sweep; any controller serves the API. On first start it writes an
admin token to DATA-DIR/admin-token (0600) and prints only that path, never the token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if endpoints != "" {
				opt.EtcdEndpoints = strings.Split(endpoints, ",")
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
			tr, err := alloc.ParseRange(tableRange)
			if err != nil {
				return fmt.Errorf("--table-range: %w", err)
			}
			opt.Alloc.Tables = tr
			opt.Out = cmd.OutOrStdout()
			opt.Extend = controllerExtensions
			return controller.Run(cmd.Context(), g.log, opt)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opt.DataDir, "data-dir", "/var/lib/govcloud", "directory for the embedded etcd and the admin token")
	f.StringVar(&opt.Listen, "listen", "127.0.0.1:8480", "address:port of the REST API")
	f.StringVar(&endpoints, "etcd-endpoints", "", "comma-separated external etcd client URLs (default: embedded etcd)")
	f.StringArrayVar(&vlanRanges, "vlan-range", nil, "VLAN allocation range, [FABRIC=]FIRST-LAST (default 100-3999); repeatable")
	f.StringVar(&tableRange, "table-range", "1000-1999", "routing table IDs for department VRFs")
	f.Uint32Var(&asn, "asn", 65000, "unused: departments get no route distinguisher/target (VRF-lite routes by table)")
	_ = f.MarkDeprecated("asn", "departments have no RD/RT; the flag does nothing and will be removed")
	f.BoolVar(&opt.AnonymousRead, "anonymous-read", false, "allow reads without a token (lab only)")
	f.DurationVar(&opt.ElectionTTL, "election-ttl", 5*time.Second, "leader lease: how fast a dead leader is replaced")
	f.StringVar(&opt.ID, "id", "", "this controller's name in leader election (default host/listen address)")
	return cmd
}
