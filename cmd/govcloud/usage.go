package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/controlplane/api"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/store"
	"github.com/govcloud/govcloud/metering"
)

func init() {
	register(newUsageCmd)
	controllerExtensions = append(controllerExtensions, usageLedger)
}

// usageLedger serves the usage ledger from the controller, in its store under
// <prefix>metering/: agents POST /v1/usage/reports (their own host only), GET /v1/usage gives
// a month's bill (a department token sees only its department). Prices come from the file
// GOVCLOUD_PRICES names, else the built-in list (deploy/examples/prices.yaml).
func usageLedger(_ context.Context, srv *api.Server, st *store.Store) error {
	prices := metering.DefaultPrices()
	if f := os.Getenv("GOVCLOUD_PRICES"); f != "" {
		p, err := metering.LoadPrices(f)
		if err != nil {
			return fmt.Errorf("GOVCLOUD_PRICES: %w", err)
		}
		prices = p
	}
	m := &metering.API{Ledger: metering.NewLedgerAt(metering.EtcdKV{C: st.Client()}, st.Prefix()+"metering/"), Prices: prices}
	for _, rt := range m.Routes() {
		srv.Handle(rt.Pattern, func(w http.ResponseWriter, r *http.Request, p api.Principal) error {
			return httpError(rt.Handle(w, r, metering.Caller{Name: p.Name, Role: p.Role, Host: p.Host, Department: p.Department}))
		})
	}
	return nil
}

// httpError gives a metering error its HTTP status.
func httpError(err error) error {
	var re *metering.RequestError
	var fe *metering.ForbiddenError
	switch {
	case errors.As(err, &re):
		return &api.HTTPError{Status: http.StatusBadRequest, Code: "invalid", Message: err.Error()}
	case errors.As(err, &fe):
		return &api.HTTPError{Status: http.StatusForbidden, Code: "forbidden", Message: err.Error()}
	}
	return err
}

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
