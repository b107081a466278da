// Command govcloud is the one binary of the project: controller, host agent, compute agent,
// the CLI verbs against the controller, and the single-machine lab. This package only wires
// flags, signals and subcommands; the work lives in controlplane/, dataplane/, compute/,
// metering/ and lb/.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/internal/buildinfo"
)

// subcommands is filled by each subcommand's file through register, so that files for
// different subcommands never edit the same lines.
var subcommands []func(*globals) *cobra.Command

func register(f func(*globals) *cobra.Command) { subcommands = append(subcommands, f) }

// globals holds what every subcommand may use.
type globals struct {
	logLevel string
	log      *slog.Logger
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "govcloud",
		Short: "Network and compute layer for a shared multi-department cloud",
		Long: `govcloud realizes department segments, VRFs, isolation, an XDP load balancer,
BGP advertisement of VIPs, metering and VMs from declarative YAML.

The CLI verbs find the controller through GOVCLOUD_API (default https://127.0.0.1:8480;
several URLs comma-separated for failover: a controller that cannot be reached, goes silent
for 1 s or answers 503 is left for the next, round robin, and the one that answered last is
tried first), verify it with
the CA certificate in GOVCLOUD_CA (default: /var/lib/govcloud/ca.crt and the lab's
/var/lib/govcloud-lab/controller/ca.crt, those readable) and send the bearer token in
GOVCLOUD_TOKEN.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
			}
			g.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			return nil
		},
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.Version = buildinfo.Get().Version // --version: the same as 'govcloud version'
	root.SetVersionTemplate(versionTemplate())
	for _, f := range subcommands {
		root.AddCommand(f(g))
	}
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "govcloud:", err)
		os.Exit(1)
	}
}
