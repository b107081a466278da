package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/metering"
)

func init() { register(newUsageCmd) }

func newUsageCmd(_ *globals) *cobra.Command {
	var month, dept, out string
	cmd := &cobra.Command{
		Use:   "usage",
		Short: "Monthly chargeback: each department's metered quantities and charges, with totals",
		Long: `usage asks the controller's usage ledger for a month's quantities per department
(network bytes in and out, vCPU-seconds, memory and volume GiB-seconds) rated with the
controller's price list (deploy/examples/prices.yaml). Every delta the agents report is counted
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
