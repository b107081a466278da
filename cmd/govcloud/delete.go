package main

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/config"
	"github.com/govcloud/govcloud/controlplane/plan"
)

func init() { register(newDeleteCmd) }

func newDeleteCmd(g *globals) *cobra.Command {
	var (
		dryRun, ignoreNotFound bool
		file                   string
	)
	cmd := &cobra.Command{
		Use:   "delete KIND NAME | delete -f FILE|DIR",
		Short: "Delete one object, or every object of a file (refused while other objects refer to them)",
		Long: `delete KIND NAME deletes one object. delete -f deletes every object the documents of FILE
name (kind and name; the rest of each document is ignored but must parse), or of every
*.yaml and *.yml file of DIR (sorted by name): the reverse of 'apply -f' on the same input.

Like apply, it is one transaction: all the objects go, or none (an object another object
still uses is refused unless that one is deleted too; nothing is half-deleted). Each deleted
object is reported, in dependency order (VMs and services before segments, segments before
their department: the reverse of apply's order). As with 'kubectl delete -f', an object that
does not exist is an error naming it (and nothing is deleted); --ignore-not-found skips it.`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case file != "" && len(args) > 0:
				return fmt.Errorf("delete takes KIND NAME or -f FILE, not both (got -f %s and %s)", file, strings.Join(args, " "))
			case file == "" && len(args) != 2:
				return fmt.Errorf("delete needs KIND NAME or -f FILE|DIR (got %d arguments)", len(args))
			case file == "" && ignoreNotFound:
				return errors.New("--ignore-not-found goes with -f")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			verb := "Deleted"
			if dryRun {
				verb = "Plan"
			}
			if file != "" {
				in, err := readInputs(file)
				if err != nil {
					return cliError(err)
				}
				objs, err := in.objects()
				if err != nil {
					return cliError(err)
				}
				if len(objs) == 0 {
					return fmt.Errorf("-f %s: no objects to delete", in.name)
				}
				res, err := client.FromEnv().DeleteObjects(cmd.Context(), deleteOrder(objs), client.DeleteOptions{DryRun: dryRun, IgnoreNotFound: ignoreNotFound})
				if err != nil {
					return cliError(err)
				}
				orderDeletes(res.Changes)
				printChanges(cmd.OutOrStdout(), res, verb)
				return nil
			}
			kind := config.NormalizeKind(args[0])
			if kind == "" {
				return fmt.Errorf("unknown kind %q (want one of %s)", args[0], strings.Join(config.Kinds, ", "))
			}
			res, err := client.FromEnv().Delete(cmd.Context(), kind, args[1], dryRun)
			if err != nil {
				return cliError(err)
			}
			printChanges(cmd.OutOrStdout(), res, verb)
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only show what would be deleted")
	cmd.Flags().StringVarP(&file, "file", "f", "", "delete the objects of this YAML file, directory of *.yaml/*.yml files, or '-' (standard input)")
	cmd.Flags().BoolVar(&ignoreNotFound, "ignore-not-found", false, "with -f: skip objects that do not exist instead of failing")
	return cmd
}

// orderDeletes sorts changes into the order a delete takes effect: dependents first (the
// reverse of apply's kind order), by name within a kind.
func orderDeletes(changes []plan.Change) {
	sort.SliceStable(changes, func(i, j int) bool {
		if a, b := config.KindOrder(changes[i].Kind), config.KindOrder(changes[j].Kind); a != b {
			return a > b
		}
		return changes[i].Name < changes[j].Name
	})
}
