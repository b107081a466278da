package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/config"
)

func init() { register(newGetCmd) }

func newGetCmd(g *globals) *cobra.Command {
	var out, department string
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "Show objects (departments, segments, pools, services, hosts, vms, volumes, all)",
		Long: `get lists objects of KIND, or one object. JSON output includes, for each object, name,
department, status, and for services "vip", for VMs "addresses". YAML output is what
'govcloud export' prints: apiVersion/kind/metadata/spec documents that 'apply -f' takes back
unchanged (no status or server fields).`,
		Args: getArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out, "table", "json", "yaml"); err != nil {
				return err
			}
			kind := ""
			if args[0] != "all" {
				if kind = config.NormalizeKind(args[0]); kind == "" {
					return fmt.Errorf("unknown kind %q (want one of %s, or all)", args[0], strings.Join(config.Kinds, ", "))
				}
			}
			c := client.FromEnv()
			var raw json.RawMessage
			var err error
			if len(args) == 2 {
				if kind == "" {
					return fmt.Errorf("get all takes no name")
				}
				raw, err = c.GetRaw(cmd.Context(), kind, args[1])
			} else {
				raw, err = c.ListDepartmentRaw(cmd.Context(), kind, department)
			}
			if err != nil {
				return cliError(err)
			}
			if out == "json" {
				return printData(cmd.OutOrStdout(), raw, out)
			}
			var objs []client.Object
			if len(args) == 2 {
				var o client.Object
				if err := json.Unmarshal(raw, &o); err != nil {
					return err
				}
				objs = []client.Object{o}
			} else if err := json.Unmarshal(raw, &objs); err != nil {
				return err
			}
			if out == "yaml" {
				return exportObjects(cmd.OutOrStdout(), objs, "yaml")
			}
			return printTable(cmd.OutOrStdout(), objs)
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "table", "table, json or yaml")
	cmd.Flags().StringVarP(&department, "department", "d", "", "only this department's objects")
	return cmd
}

// getKinds is what get takes as KIND, for the message of a get without one.
const getKinds = "departments, pools, segments, hosts, images, volumes, vms, services, pricelists, securitypolicies, all"

// getArgs wants a KIND and an optional NAME, listing the kinds when none is given.
func getArgs(_ *cobra.Command, args []string) error {
	switch {
	case len(args) == 0:
		return fmt.Errorf("get needs a KIND: one of %s (e.g. 'govcloud get services')", getKinds)
	case len(args) > 2:
		return fmt.Errorf("get takes KIND [NAME], got %d arguments: %s", len(args), strings.Join(args, " "))
	}
	return nil
}
