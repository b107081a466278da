package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
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
	controllerFlagHooks = append(controllerFlagHooks, func(cmd *cobra.Command) {
		cmd.Flags().DurationVar(&usageGrace, "usage-grace", time.Hour, "a month's usage closes this long after the next month began: later reports dated in it are refused and its invoice is frozen ('govcloud usage invoice')")
		cmd.Long += `

Usage ledger: bills are rated with the PriceList objects ('govcloud apply -f', admin), each
from its effectiveFrom day; days before the first PriceList are rated with the list in the
file GOVCLOUD_PRICES names (format: deploy/examples/prices.yaml), else the built-in list.
GOVCLOUD_MAX_LINK_RATE (bits/s, default 100e9) bounds a report's traffic. A month closes
--usage-grace after the next began; its invoice is then frozen and never changes.`
	})
}

// usageGrace is the controller's --usage-grace.
var usageGrace = time.Hour

// usageLedger serves the usage ledger from the controller, in its store under
// <prefix>metering/: agents POST /v1/usage/reports (their own host only; the ledger accepts only
// departments and VMs the desired state puts on that host, see metering.Ledger), GET /v1/usage
// gives a month's bill (a department token sees only its department), GET /v1/usage/invoice a
// closed month's frozen one. Every report, counted or refused, is in the audit log. Prices come
// from the PriceList objects; before the first, from the file GOVCLOUD_PRICES names, else the
// built-in list (deploy/examples/prices.yaml); GOVCLOUD_MAX_LINK_RATE (bits/s, e.g. 400e9)
// raises the link rate reports are bounded by (default 100 Gbit/s). Every minute it freezes
// the invoices of months that closed.
func usageLedger(ctx context.Context, srv *api.Server, st *store.Store) error {
	if usageGrace <= 0 {
		return fmt.Errorf("--usage-grace %s: want a positive duration", usageGrace)
	}
	cfg := usageapi.Config{Prices: metering.DefaultPrices(), Grace: usageGrace, Now: func() time.Time { return usageClock() }}
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
	m := usageapi.Mount(srv, st, cfg)
	go func() {
		tk := time.NewTicker(time.Minute)
		defer tk.Stop()
		for {
			_ = m.FreezeClosed(ctx) // retried every minute; a read freezes too
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
		}
	}()
	return nil
}

// usageClock is the controller's clock for the ledger (tests set it).
var usageClock = time.Now

func newUsageCmd(_ *globals) *cobra.Command {
	var month, dept, out, by, cc string
	bill := func(cmd *cobra.Command, invoice bool) error {
		if err := checkOutput(out, "table", "csv", "json"); err != nil {
			return err
		}
		if month == "" {
			month = metering.Month(time.Now())
		}
		if _, err := time.Parse("2006-01", month); err != nil {
			return fmt.Errorf("--month %q: want YYYY-MM", month)
		}
		if by != "" && !slices.Contains(metering.Breakdowns, by) {
			return fmt.Errorf("--by %q: want one of %s", by, strings.Join(metering.Breakdowns, ", "))
		}
		c := client.FromEnv()
		mc := &metering.Client{Base: c.Base, HTTP: c.FailoverHTTP()}
		opt := metering.BillOptions{Department: dept, CostCentre: cc, By: by}
		get := mc.BillWith
		if invoice {
			get = mc.Invoice
		}
		b, err := get(cmd.Context(), month, opt)
		if err != nil {
			return err
		}
		return b.Write(cmd.OutOrStdout(), out)
	}
	flags := func(cmd *cobra.Command) {
		f := cmd.Flags()
		f.StringVar(&month, "month", "", "month YYYY-MM (default: this month, UTC)")
		f.StringVar(&dept, "department", "", "only this department (an unknown one is an error)")
		f.StringVar(&cc, "cost-centre", "", "only the departments of this cost centre (e.g. one CSV per cost centre for the finance system)")
		f.StringVar(&by, "by", "", "break each department down: vm (compute), service (north-south VIP bytes) or segment (east-west bytes)")
		f.StringVarP(&out, "output", "o", "table", "table, csv or json")
	}
	cmd := &cobra.Command{
		Use:   "usage",
		Short: "Monthly chargeback: each department's metered quantities and charges, with totals",
		Long: `usage asks the controller's usage ledger for a month's bill: every department (those
without usage too) with its display name and cost centre, and per billable resource the
quantity in the priced unit, the price per unit and the charge, cut where a price list takes
effect. Resources (README "What a department's network usage is"):
  network_tx_bytes      east-west: bytes its segments sent to other hosts over the trunk
  network_vip_in_bytes  north-south: bytes from the fabric to its public VIPs
  vcpu_seconds, memory_mib_seconds, volume_gib_seconds   its VMs' vCPU time and allocations
Prices are PriceList objects ('govcloud get pricelists'), each from its effectiveFrom day;
days before the first are rated with the controller's GOVCLOUD_PRICES file, else the built-in
list (deploy/examples/prices.yaml). Agents report every minute: the bill says up to when each
host's usage is counted. A month closes after the controller's --usage-grace (default 1h into
the next month); its bill is then frozen ('govcloud usage invoice'). Output: table (default),
csv (one row per line, then department, cost-centre and grand totals) or json.`,
		Example: "  govcloud usage --month 2026-11 -o csv\n  govcloud usage --month 2026-11 --department lands --by vm\n  govcloud usage invoice --month 2026-11 --cost-centre CC-1001 -o csv",
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return bill(cmd, false) },
	}
	flags(cmd)
	inv := &cobra.Command{
		Use:   "invoice",
		Short: "A closed month's frozen bill (the same bytes every time)",
		Long: `invoice prints a closed month's invoice: the bill frozen when the month closed
(--usage-grace after the next month began). A later PriceList, department rename or report
never changes it; the same options give the same bytes. An open month is an error.`,
		Example: "  govcloud usage invoice --month 2026-11 -o csv\n  govcloud usage invoice --month 2026-11 --cost-centre CC-1001 -o csv",
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return bill(cmd, true) },
	}
	flags(inv)
	cmd.AddCommand(inv)
	return cmd
}
