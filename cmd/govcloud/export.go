package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/config"
)

func init() { register(newExportCmd) }

func newExportCmd(_ *globals) *cobra.Command {
	var out, department string
	cmd := &cobra.Command{
		Use:   "export [KIND] [-o yaml|json]",
		Short: "Print every object (or one KIND) as YAML that 'apply -f' takes back unchanged",
		Long: `export prints the objects you may read as apiVersion/kind/metadata/spec documents: no
status, no revision, no fields the controller fills in (allocated VLANs, VIPs, addresses and
MACs stay in the store and in backups; an applied export keeps them, since apply leaves an
object whose spec did not change untouched). Applying an export to the same controller
changes nothing; applying it to a fresh controller recreates the objects (allocations chosen
afresh unless the spec fixed them). A backup a person can read and keep in git; for a
whole-store backup (allocations, tokens, audit, ledger, CA) use 'govcloud backup create'.
-o json prints a JSON list of the same documents.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(out, "yaml", "json"); err != nil {
				return err
			}
			kind := ""
			if len(args) == 1 && args[0] != "all" {
				if kind = config.NormalizeKind(args[0]); kind == "" {
					return fmt.Errorf("unknown kind %q (want one of %s, or all)", args[0], strings.Join(config.Kinds, ", "))
				}
			}
			raw, err := client.FromEnv().ListDepartmentRaw(cmd.Context(), kind, department)
			if err != nil {
				return cliError(err)
			}
			var objs []client.Object
			if err := json.Unmarshal(raw, &objs); err != nil {
				return fmt.Errorf("export: decode the controller's answer: %w", err)
			}
			return exportObjects(cmd.OutOrStdout(), objs, out)
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "yaml", "yaml or json")
	cmd.Flags().StringVarP(&department, "department", "d", "", "only this department's objects")
	return cmd
}

// exportDoc is the user's part of an object, in the order apply files are written.
type exportDoc struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   config.Metadata `json:"metadata"`
	Spec       config.Spec     `json:"spec"`
}

// exportObjects writes objs (sorted by kind, in apply's dependency order, then name) as
// re-appliable documents: YAML documents separated by "---", or a JSON list.
func exportObjects(w io.Writer, objs []client.Object, format string) error {
	sort.SliceStable(objs, func(i, j int) bool {
		if objs[i].Kind != objs[j].Kind {
			return config.KindOrder(objs[i].Kind) < config.KindOrder(objs[j].Kind)
		}
		return objs[i].Metadata.Name < objs[j].Metadata.Name
	})
	docs := make([]exportDoc, len(objs))
	for i, o := range objs {
		api := o.APIVersion
		if api == "" {
			api = "govcloud/v1"
		}
		docs[i] = exportDoc{APIVersion: api, Kind: o.Kind, Metadata: o.Metadata, Spec: o.Spec}
	}
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(docs)
	}
	for _, d := range docs {
		// JSON (the API's encoding, whose omitempty leaves out unset fields) is YAML: decoding it
		// into a node keeps the field order; block style and plain scalars where YAML allows
		// (the encoder still quotes a string that would read as a number or bool).
		b, err := json.Marshal(d)
		if err != nil {
			return fmt.Errorf("export %s %q: %w", d.Kind, d.Metadata.Name, err)
		}
		var n yaml.Node
		if err := yaml.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("export %s %q: %w", d.Kind, d.Metadata.Name, err)
		}
		plainStyle(&n)
		fmt.Fprintln(w, "---")
		enc := yaml.NewEncoder(w)
		enc.SetIndent(2)
		if err := enc.Encode(&n); err != nil {
			return fmt.Errorf("export %s %q: %w", d.Kind, d.Metadata.Name, err)
		}
		if err := enc.Close(); err != nil {
			return err
		}
	}
	return nil
}

func plainStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		plainStyle(c)
	}
}
