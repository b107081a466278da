package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/config"
)

func init() { register(newDeleteCmd) }

func newDeleteCmd(g *globals) *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "delete KIND NAME",
		Short: "Delete one object (refused while other objects refer to it)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind := config.NormalizeKind(args[0])
			if kind == "" {
				return fmt.Errorf("unknown kind %q (want one of %s)", args[0], strings.Join(config.Kinds, ", "))
			}
			res, err := client.FromEnv().Delete(cmd.Context(), kind, args[1], dryRun)
			if err != nil {
				return cliError(err)
			}
			verb := "Deleted"
			if dryRun {
				verb = "Plan"
			}
			printChanges(cmd.OutOrStdout(), res, verb)
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only show what would be deleted")
	return cmd
}
