package main

import (
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
		Use:   "plan -f FILE|DIR",
		Short: "Show what apply would create, update and delete; changes nothing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := sendApply(cmd, file, out, client.ApplyOptions{DryRun: true, Prune: prune}, "Plan")
			return err
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "YAML file, directory of *.yaml/*.yml files, or '-' for standard input")
	cmd.Flags().StringVarP(&out, "output", "o", "text", "text or json")
	cmd.Flags().BoolVar(&prune, "prune", false, "also show deletion of stored objects absent from FILE")
	return cmd
}
