package main

import (
	"encoding/json"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/controlplane/client"
)

func init() { register(newApplyCmd) }

func newApplyCmd(g *globals) *cobra.Command {
	var (
		file, out string
		opt       client.ApplyOptions
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Apply a YAML file atomically: every document or none",
		Long: `apply sends every document of FILE to the controller, which validates them together with
what it stores and commits all of them in one transaction, or nothing. An object changed by
someone else while this apply ran (or after --base-revision) is a conflict: nothing changes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return sendApply(cmd, file, out, opt, "Applied")
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "YAML file ('-' for standard input)")
	cmd.Flags().StringVarP(&out, "output", "o", "text", "text or json")
	cmd.Flags().BoolVar(&opt.Prune, "prune", false, "also delete stored objects absent from FILE (admin)")
	cmd.Flags().Int64Var(&opt.BaseRevision, "base-revision", 0, "fail if an object in FILE changed after this revision (from 'plan')")
	return cmd
}

// sendApply sends FILE to the controller's apply (a plan with opt.DryRun) and prints the
// changes as text (headed by verb) or JSON.
func sendApply(cmd *cobra.Command, file, out string, opt client.ApplyOptions, verb string) error {
	if err := checkOutput(out, "text", "json"); err != nil {
		return err
	}
	data, name, err := readInput(file)
	if err != nil {
		return err
	}
	res, err := client.FromEnv().Apply(cmd.Context(), name, data, opt)
	if err != nil {
		return cliError(err)
	}
	if out == "json" {
		b, _ := json.Marshal(res)
		return printData(cmd.OutOrStdout(), b, "json")
	}
	printChanges(cmd.OutOrStdout(), res, verb)
	return nil
}
