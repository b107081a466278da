package main

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/controlplane/client"
)

func init() { register(newApplyCmd) }

func newApplyCmd(g *globals) *cobra.Command {
	var (
		file, out string
		opt       client.ApplyOptions
		wait      bool
		wopt      = waitOptions{Poll: time.Second, Progress: 5 * time.Second}
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR [--wait [--timeout D]]",
		Short: "Apply YAML atomically (every document or none), optionally waiting until the hosts realize it",
		Long: `apply sends every document of FILE to the controller, which validates them together with
what it stores and commits all of them in one transaction, or nothing. An object changed by
someone else while this apply ran (or after --base-revision) is a conflict: nothing changes.

-f DIR applies every *.yaml and *.yml file of the directory (not its subdirectories), sorted
by name, as one transaction; errors name the file, its line and the document in it.

--wait then waits until every object of the apply is realized on its hosts at the applied
revision or a later one, as the hosts' agents report it (what 'govcloud status' shows):
segments and services ready on every host's network agent, hosts ready, VMs running on
their host's compute agent (which must run with --report-status), departments, policies and
volumes reached by every agent. It prints what is still waited on at most every 5 s, exits
0 once all is realized, and non-zero with the host's reason when a VM cannot be placed (at
once), when a VM is in error or a host reports an object of the apply not ready for
--fail-after (agents retry: a guest port may appear a moment later), or at --timeout, naming
what was still not realized.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !wait && (cmd.Flags().Changed("timeout") || cmd.Flags().Changed("fail-after")) {
				return errors.New("--timeout and --fail-after need --wait")
			}
			res, err := sendApply(cmd, file, out, opt, "Applied")
			if err != nil || !wait || res.DryRun {
				return err
			}
			w := cmd.OutOrStdout()
			if out == "json" {
				w = cmd.ErrOrStderr()
			}
			return waitRealized(cmd.Context(), w, res, fetchView(client.FromEnv()), wopt)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "YAML file, directory of *.yaml/*.yml files, or '-' for standard input")
	cmd.Flags().StringVarP(&out, "output", "o", "text", "text or json")
	cmd.Flags().BoolVar(&opt.Prune, "prune", false, "also delete stored objects absent from FILE (admin)")
	cmd.Flags().Int64Var(&opt.BaseRevision, "base-revision", 0, "fail if an object in FILE changed after this revision (from 'plan')")
	cmd.Flags().BoolVar(&wait, "wait", false, "after the apply, wait until the hosts realize every object (progress on standard output, or standard error with -o json)")
	cmd.Flags().DurationVar(&wopt.Timeout, "timeout", 5*time.Minute, "with --wait: give up after this long, naming what is not realized")
	cmd.Flags().DurationVar(&wopt.FailAfter, "fail-after", 30*time.Second, "with --wait: fail when a VM stays in error or a host reports an object not ready this long")
	return cmd
}

// sendApply sends -f PATH to the controller's apply (a plan with opt.DryRun) and prints the
// changes as text (headed by verb) or JSON.
func sendApply(cmd *cobra.Command, file, out string, opt client.ApplyOptions, verb string) (*client.ApplyResult, error) {
	if err := checkOutput(out, "text", "json"); err != nil {
		return nil, err
	}
	in, err := readInputs(file)
	if err != nil {
		return nil, cliError(err)
	}
	res, err := client.FromEnv().Apply(cmd.Context(), in.name, in.data, opt)
	if err != nil {
		return nil, cliError(in.remap(err))
	}
	if out == "json" {
		b, _ := json.Marshal(res)
		return res, printData(cmd.OutOrStdout(), b, "json")
	}
	printChanges(cmd.OutOrStdout(), res, verb)
	return res, nil
}
