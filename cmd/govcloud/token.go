package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/controlplane/client"
)

func init() { register(newTokenCmd) }

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage API tokens (admin)"}
	var req client.TokenRequest
	create := &cobra.Command{
		Use:   "create --name NAME --role admin|network|department|agent | --role agent --host H --join [--ttl 15m]",
		Short: "Create a token and print it (shown once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := client.FromEnv().CreateToken(cmd.Context(), req)
			if err != nil {
				return cliError(err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	create.Flags().StringVar(&req.Name, "name", "", "who the token is for")
	create.Flags().StringVar(&req.Role, "role", "", "admin, network, department or agent")
	create.Flags().StringVar(&req.Department, "department", "", "department (role department)")
	create.Flags().StringVar(&req.Host, "host", "", "host (role agent)")
	addJoinFlags(create) // token_join.go: --join
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke every token with this name",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := client.FromEnv().RevokeToken(cmd.Context(), args[0]); err != nil {
				return cliError(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked token %q\n", args[0])
			return nil
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List grants (name, role, department, host)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, err := client.FromEnv().TokensRaw(cmd.Context())
			if err != nil {
				return cliError(err)
			}
			return printData(cmd.OutOrStdout(), raw, "yaml")
		},
	}
	cmd.AddCommand(create, revoke, list)
	return cmd
}
