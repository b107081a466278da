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
		Use:   "create --name NAME --role admin|network|department|agent [--ttl 24h] | --role agent --host H --join [--ttl 15m]",
		Short: "Create a token and print it (shown once)",
		Long: `create makes a bearer token and prints it once (only its SHA-256 is stored). --ttl makes
it expire (a Go duration, e.g. 24h or 720h); without it the token lasts until revoked. Names
may not hold control characters.`,
		Args: cobra.NoArgs,
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
	create.Flags().StringVar(&req.TTL, "ttl", "", "lifetime, e.g. 24h (default: until revoked; join tokens: 15m, at most 24h)")
	addJoinFlags(create) // token_join.go: --join
	var byID bool
	revoke := &cobra.Command{
		Use:   "revoke NAME | --id ID",
		Short: "Revoke every token with this name, or the one token with this id",
		Long: `revoke removes tokens at once. By name it removes every token of that name; with --id only
the token of that id ("tok_…", see 'govcloud token list'). Revoking the last valid admin token
is refused: create another admin token first.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := client.FromEnv()
			revoke, what := c.RevokeToken, "token"
			if byID {
				revoke, what = c.RevokeTokenID, "token id"
			}
			if err := revoke(cmd.Context(), args[0]); err != nil {
				return cliError(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s %q\n", what, args[0])
			return nil
		},
	}
	revoke.Flags().BoolVar(&byID, "id", false, "the argument is a token id, not a name")
	list := &cobra.Command{
		Use:   "list",
		Short: "List grants (id, name, role, department, host, expiry)",
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
