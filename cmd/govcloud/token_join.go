package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/controlplane/client"
)

func init() { register(newCertCmd) }

// addJoinFlags adds --join (and --ttl, unless token create has it already) to 'token create':
// with --join it makes a single-use join token for a host instead of a bearer token.
func addJoinFlags(create *cobra.Command) {
	var join bool
	create.Flags().BoolVar(&join, "join", false, "make a single-use join token (role agent, --host) that a host exchanges for its certificate, valid --ttl")
	if create.Flags().Lookup("ttl") == nil {
		create.Flags().Duration("ttl", 0, "how long the token is valid (join tokens: default 15m, at most 24h)")
	}
	run := create.RunE
	create.RunE = func(cmd *cobra.Command, args []string) error {
		if !join {
			return run(cmd, args)
		}
		role, _ := cmd.Flags().GetString("role")
		host, _ := cmd.Flags().GetString("host")
		if role != "" && role != "agent" {
			return fmt.Errorf("--join: role %q: join tokens are for hosts (--role agent)", role)
		}
		if host == "" {
			return fmt.Errorf("--join needs --host")
		}
		req := client.JoinTokenRequest{Host: host, Role: "agent"}
		if f := cmd.Flags().Lookup("ttl"); f != nil && f.Changed {
			d, err := time.ParseDuration(f.Value.String())
			if err != nil {
				return fmt.Errorf("--ttl %q: %w", f.Value.String(), err)
			}
			req.TTL = d.String()
		}
		res, err := client.FromEnv().CreateJoinToken(cmd.Context(), req)
		if err != nil {
			return cliError(err)
		}
		fmt.Fprintln(cmd.OutOrStdout(), res.Token)
		fmt.Fprintf(cmd.ErrOrStderr(), "join token for host %q, single use, valid until %s: govcloud agent --host %s --join-token-file FILE\n",
			res.Host, res.Expires.Local().Format(time.RFC3339), res.Host)
		return nil
	}
}

func newCertCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "cert", Short: "Host certificates issued by the controller (admin)"}
	list := &cobra.Command{
		Use:   "list",
		Short: "List host certificates (serial, host, validity, how issued, revoked)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, err := client.FromEnv().CertsRaw(cmd.Context())
			if err != nil {
				return cliError(err)
			}
			return printData(cmd.OutOrStdout(), raw, "yaml")
		},
	}
	var host string
	revoke := &cobra.Command{
		Use:   "revoke SERIAL | --host HOST",
		Short: "Revoke a host certificate by serial (hex), or every certificate of a host",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			serial := ""
			if len(args) == 1 {
				serial = args[0]
			}
			if (serial == "") == (host == "") {
				return fmt.Errorf("revoke: give a SERIAL or --host, not both")
			}
			revoked, err := client.FromEnv().RevokeCert(cmd.Context(), serial, host)
			if err != nil {
				return cliError(err)
			}
			for _, s := range revoked {
				fmt.Fprintf(cmd.OutOrStdout(), "revoked certificate %s\n", s)
			}
			return nil
		},
	}
	revoke.Flags().StringVar(&host, "host", "", "revoke every certificate of this host")
	cmd.AddCommand(list, revoke)
	return cmd
}
