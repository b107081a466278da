package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/controlplane/api"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/store"
	"github.com/govcloud/govcloud/controlplane/usageapi"
	"github.com/govcloud/govcloud/metering"
)

func init() {
	register(newUsageCmd)
	controllerExtensions = append(controllerExtensions, usageLedger)
}

// usageLedger serves the usage ledger from the controller, in its store under
// <prefix>metering/: agents POST /v1/usage/reports (their own host only; the ledger accepts only
// departments and VMs the desired state puts on that host, see metering.Ledger), GET /v1/usage
// gives a month's bill (a department token sees only its department). Every report, counted or
// refused, is in the audit log. Prices come from the file GOVCLOUD_PRICES names, else the
// built-in list (deploy/examples/prices.yaml); GOVCLOUD_MAX_LINK_RATE (bits/s, e.g. 400e9)
// raises the link rate reports are bounded by (default 100 Gbit/s).
func usageLedger(_ context.Context, srv *api.Server, st *store.Store) error {
	cfg := usageapi.Config{Prices: metering.DefaultPrices(), Now: func() time.Time { return usageClock() }}
	if f := os.Getenv("GOVCLOUD_PRICES"); f != "" {
		p, err := metering.LoadPrices(f)
		if err != nil {
			return fmt.Errorf("GOVCLOUD_PRICES: %w", err)
		}
		cfg.Prices = p
	}
	if v := os.Getenv("GOVCLOUD_MAX_LINK_RATE"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 1e6 || f > 1e13 {
			return fmt.Errorf("GOVCLOUD_MAX_LINK_RATE %q: want bits per second from 1e6 to 1e13", v)
		}
		cfg.MaxBitRate = uint64(f)
	}
	usageapi.Mount(srv, st, cfg)
	return nil
}

// usageClock is the controller's clock for the ledger (tests set it).
var usageClock = time.Now

func newUsageCmd(_ *globals) *cobra.Command {
	var month, dept, out string
	cmd := &cobra.Command{
		Use:   "usage",
		Short: "Monthly chargeback: each department's metered quantities and charges, with totals",
		Long: `usage asks the controller's usage ledger for a month's quantities per department
(network bytes in and out, vCPU-seconds, memory and volume GiB-seconds) rated with the
controller's price list: built in (the same as deploy/examples/prices.yaml), or the file
GOVCLOUD_PRICES names in the controller's environment. Every delta the agents report is counted
exactly once. Output: table (default), csv or json.`,
		Example: "  govcloud usage --month 2026-11 -o csv\n  govcloud usage --month 2026-11 --department lands",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out, "table", "csv", "json"); err != nil {
				return err
			}
			if month == "" {
				month = metering.Month(time.Now())
			}
			if _, err := time.Parse("2006-01", month); err != nil {
				return fmt.Errorf("--month %q: want YYYY-MM", month)
			}
			c := client.FromEnv()
			mc := &metering.Client{Base: c.Base, Token: c.Token, HTTP: c.HTTP}
			bill, err := mc.Bill(cmd.Context(), month, dept)
			if err != nil {
				return err
			}
			return bill.Write(cmd.OutOrStdout(), out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&month, "month", "", "month YYYY-MM (default: this month, UTC)")
	f.StringVar(&dept, "department", "", "only this department")
	f.StringVarP(&out, "output", "o", "table", "table, csv or json")
	return cmd
}
