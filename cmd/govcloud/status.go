package main

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/agent"

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
					Time   string       `json:"time"`
					Status agent.Status `json:"status"`
				}
				_ = json.Unmarshal(st.Hosts[h], &r)
				ready := "ready"
				if !r.Status.Ready {
					ready = "NOT READY: " + r.Status.Error
				}
				fmt.Fprintf(w, "host %s: %s (revision %d, last report %s)\n", h, ready, r.Status.Revision, r.Time)
				if r.Status.XDP != "" {
					fmt.Fprintf(w, "  load balancer: %s; advertising %d VIP(s)\n", r.Status.XDP, len(r.Status.Advertise))
				}
				for _, p := range r.Status.BGP {
					fmt.Fprintf(w, "  bgp peer %-15s AS%-6d %-12s advertised %d received %d accepted %d", p.Address, p.ASN, p.State, p.Advertised, p.Received, p.Accepted)
					if p.Reason != "" {
						fmt.Fprintf(w, " (%s)", p.Reason)
					}
					fmt.Fprintln(w)
				}
				for _, kind := range []map[string]string{r.Status.Segments, r.Status.Services, r.Status.Backends} {
					names := make([]string, 0, len(kind))
					for n := range kind {
						names = append(names, n)
					}
					sort.Strings(names)
					for _, n := range names {
						if v := kind[n]; v != "ready" && v != "up" {
							fmt.Fprintf(w, "  %s: %s\n", n, v)
						}
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "table", "table, json or yaml")
	return cmd
}
