package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/internal/buildinfo"
)

func init() { register(newVersionCmd) }

func newVersionCmd(*globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print this binary's version, commit, build date, Go version and eBPF object hash",
		Long: `version prints what this binary is: the release version, git commit, build (commit) date,
Go toolchain, platform and the SHA-256 of the eBPF objects compiled into it. 'make build'
stamps them; a plain 'go build' takes commit and date from Go's build information. The
controller shows the same under "version" on GET /v1/status.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "text", "json", "yaml"); err != nil {
				return err
			}
			return printVersion(cmd.OutOrStdout(), output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text, json or yaml")
	return cmd
}

func printVersion(w io.Writer, output string) error {
	in := buildinfo.Get()
	if output == "json" || output == "yaml" {
		raw, err := json.Marshal(in)
		if err != nil {
			return err
		}
		return printData(w, raw, output)
	}
	_, err := fmt.Fprintf(w, "govcloud %s\ncommit:     %s\ndate:       %s\ngo:         %s\nplatform:   %s\nbpf sha256: %s\n",
		in.Version, in.Commit, in.Date, in.Go, in.Platform, in.BPFSHA256)
	return err
}

// versionTemplate is --version's output: the same text as 'govcloud version'.
func versionTemplate() string {
	var b strings.Builder
	_ = printVersion(&b, "text")
	return strings.ReplaceAll(b.String(), "{{", "{{`{{`}}")
}
