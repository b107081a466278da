package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
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
		// SIGUSR1 stops serving (the port refuses, the process stays: its compute agent sees
		// the guest running), SIGUSR2 serves again: how the lab takes a backend down and up.
		RunE: func(cmd *cobra.Command, _ []string) error {
			sig := make(chan os.Signal, 4)
			signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
			handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "%s\n", name)
			})
			var srv *http.Server
			serve := func() error {
				ln, err := net.Listen("tcp", listen)
				if err != nil {
					return fmt.Errorf("--listen %s: %w", listen, err)
				}
				srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: handler}
				go srv.Serve(ln)
				return nil
			}
			if err := serve(); err != nil {
				return err
			}
			for {
				select {
				case <-cmd.Context().Done():
					if srv != nil {
						srv.Close()
					}
					return nil
				case s := <-sig:
					switch {
					case s == syscall.SIGUSR1 && srv != nil:
						srv.Close()
						srv = nil
					case s == syscall.SIGUSR2 && srv == nil:
						if err := serve(); err != nil {
							return err
						}
					}
				}
			}
		},
	}
	cmd.Flags().StringVar(&name, "name", "guest", "name to answer with")
	cmd.Flags().StringVar(&listen, "listen", ":80", "address to listen on")
	return cmd
}
