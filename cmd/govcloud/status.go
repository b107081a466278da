package main

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/config"
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
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "controller: %s\nleader:     %s (this one: %v)\nrevision:   %d\n", st.ID, st.Leader.Leader, st.Leader.IsLeader, st.Revision)
			for _, k := range config.Kinds {
				fmt.Fprintf(w, "%-12s %d\n", k+":", st.Objects[k])
			}
			hosts := make([]string, 0, len(st.Hosts))
			for h := range st.Hosts {
				hosts = append(hosts, h)
			}
			sort.Strings(hosts)
			for _, h := range hosts {
				var r struct {
					Time string `json:"time"`
				}
				_ = json.Unmarshal(st.Hosts[h], &r)
				fmt.Fprintf(w, "host %s: last report %s\n", h, r.Time)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "table", "table, json or yaml")
	return cmd
}
