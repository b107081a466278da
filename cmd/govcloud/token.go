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
		Use:   "create --name NAME --role admin|network|department|agent",
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
	cmd.AddCommand(create)
	return cmd
}
