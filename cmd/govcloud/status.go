package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
	"github.com/govcloud/govcloud/controlplane/lbtables"
)

func init() { register(newStatusCmd) }

func newStatusCmd(g *globals) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the controller's state: leader, revision, object counts, host reports",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out, "table", "json", "yaml"); err != nil {
				return err
			}
			st, err := client.FromEnv().Status(cmd.Context())
			if err != nil {
				return cliError(err)
			}
			if out != "table" {
				b, _ := json.Marshal(st)
				return printData(cmd.OutOrStdout(), b, out)
			}
			// The controller's shared Maglev tables (an older controller has none: left out).
			ctl := map[string]lbtables.Summary{}
			if sums, err := client.FromEnv().LBTableSummaries(cmd.Context()); err == nil {
				ctl = sums.Tables
			}
			// Every object, for the drains' weights, placement and host addresses; a token
			// that may not read them all still gets the rest.
			var objs []client.Object
			if all, err := client.FromEnv().List(cmd.Context(), ""); err == nil {
				objs = all
			}
			writeStatus(cmd.OutOrStdout(), st, objs, ctl)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "table", "table, json or yaml")
	return cmd
}

// printTables prints, per load-balancer service, the generation and hash of the Maglev table
// the host holds, and whether it is the controller's (ctl: the controller's summaries).
func printTables(w io.Writer, st hoststatus.Status, ctl map[string]lbtables.Summary) {
	if st.TablesMode == "" {
		return
	}
	names := make([]string, 0, len(st.Tables))
	for n := range st.Tables {
		names = append(names, n)
	}
	sort.Strings(names)
	same := 0
	for _, n := range names {
		t := st.Tables[n]
		c, ok := ctl[n]
		if !t.Mismatch && (!ok || (c.Generation == t.Generation && c.Sum == t.Sum)) {
			same++
		}
	}
	fmt.Fprintf(w, "  maglev tables (%s): %d of %d the controller's\n", st.TablesMode, same, len(names))
	for _, n := range names {
		t := st.Tables[n]
		sum := t.Sum
		if len(sum) > 16 {
			sum = sum[:16]
		}
		note := ""
		switch c, ok := ctl[n]; {
		case t.Error != "":
			note = "  NOT VERIFIED: " + t.Error
		case t.Mismatch:
			note = "  MISMATCH"
		case ok && (c.Generation != t.Generation || c.Sum != t.Sum):
			note = fmt.Sprintf("  behind: the controller's is generation %d", c.Generation)
		}
		fmt.Fprintf(w, "  table %-28s generation %-8d sha256 %s%s\n", n, t.Generation, sum, note)
	}
}

// printCompute prints a host's compute report: VMs by state, and the last pass's error.
func printCompute(w io.Writer, raw json.RawMessage) {
	var r struct {
		Time   string         `json:"time"`
		Status compute.Report `json:"status"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		fmt.Fprintf(w, "  compute: unreadable report: %v\n", err)
		return
	}
	states := map[compute.State]int{}
	var notRunning []string
	for _, vm := range r.Status.VMs {
		states[vm.State]++
		if vm.State != compute.Running {
			notRunning = append(notRunning, fmt.Sprintf("%s %s %s", vm.Name, vm.State, vm.Message))
		}
	}
	fmt.Fprintf(w, "  compute: %d VM(s), %d running (revision %d, last report %s)\n", len(r.Status.VMs), states[compute.Running], r.Status.Revision, r.Time)
	for _, n := range notRunning {
		fmt.Fprintf(w, "  vm %s\n", strings.TrimSpace(n))
	}
	if r.Status.Error != "" {
		fmt.Fprintf(w, "  compute error: %s\n", r.Status.Error)
	}
}
