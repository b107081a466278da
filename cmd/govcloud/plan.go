package main

import (
	"encoding/json"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/controlplane/client"
)

func init() { register(newPlanCmd) }

func newPlanCmd(g *globals) *cobra.Command {
	var (
		file, out string
		prune     bool
	)
	cmd := &cobra.Command{
		Use:   "plan -f FILE",
		Short: "Show what apply would create, update and delete; changes nothing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out, "text", "json"); err != nil {
				return err
			}
			data, name, err := readInput(file)
			if err != nil {
				return err
			}
			res, err := client.FromEnv().Apply(cmd.Context(), name, data, client.ApplyOptions{DryRun: true, Prune: prune})
			if err != nil {
				return cliError(err)
			}
			if out == "json" {
				b, _ := json.Marshal(res)
				return printData(cmd.OutOrStdout(), b, "json")
			}
			printChanges(cmd.OutOrStdout(), res, "Plan")
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "YAML file ('-' for standard input)")
	cmd.Flags().StringVarP(&out, "output", "o", "text", "text or json")
	cmd.Flags().BoolVar(&prune, "prune", false, "also show deletion of stored objects absent from FILE")
	return cmd
}
