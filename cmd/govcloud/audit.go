package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/controlplane/client"
)

func init() { register(newAuditCmd) }

func newAuditCmd(g *globals) *cobra.Command {
	var (
		out   string
		limit int
	)
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit log of writes, newest first (admin, network)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out, "table", "json", "yaml"); err != nil {
				return err
			}
			raw, err := client.FromEnv().Audit(cmd.Context(), limit)
			if err != nil {
				return cliError(err)
			}
			if out != "table" {
				return printData(cmd.OutOrStdout(), raw, out)
			}
			var entries []struct {
				Time           string `json:"time"`
				Who            string `json:"who"`
				Role           string `json:"role"`
				Action         string `json:"action"`
				BeforeRevision int64  `json:"beforeRevision"`
				AfterRevision  int64  `json:"afterRevision"`
				Changes        []struct {
					Kind, Name, Action string
				} `json:"changes"`
			}
			if err := json.Unmarshal(raw, &entries); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tWHO\tACTION\tREVISIONS\tCHANGES")
			for _, e := range entries {
				var ch []string
				for _, c := range e.Changes {
					ch = append(ch, c.Action+" "+c.Kind+"/"+c.Name)
				}
				if len(ch) > 4 {
					ch = append(ch[:4], fmt.Sprintf("... %d more", len(e.Changes)-4))
				}
				fmt.Fprintf(tw, "%s\t%s (%s)\t%s\t%d->%d\t%s\n", e.Time, e.Who, e.Role, e.Action, e.BeforeRevision, e.AfterRevision, strings.Join(ch, ", "))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "table", "table, json or yaml")
	cmd.Flags().IntVar(&limit, "limit", 50, "how many entries")
	return cmd
}
