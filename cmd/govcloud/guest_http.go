package main

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

func init() { register(newGuestHTTPCmd) }

// guest-http is what a lab guest (a namespace standing in for a VM) runs: an HTTP server that
// answers with the VM's name, so checks can tell which backend served them.
func newGuestHTTPCmd(g *globals) *cobra.Command {
	var name, listen string
	cmd := &cobra.Command{
		Use:    "guest-http --name VM [--listen :80]",
		Short:  "Serve the VM's name over HTTP (the lab's namespace guests run it)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("--listen %s: %w", listen, err)
			}
			srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "%s\n", name)
			})}
			go func() { <-cmd.Context().Done(); srv.Close() }()
			if err := srv.Serve(ln); err != http.ErrServerClosed {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "guest", "name to answer with")
	cmd.Flags().StringVar(&listen, "listen", ":80", "address to listen on")
	return cmd
}
