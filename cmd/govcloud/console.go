package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/controlplane/client"
)

func init() { register(newConsoleCmd) }

func newConsoleCmd(g *globals) *cobra.Command {
	var (
		tail, follow, raw bool
		lines             int
		every             time.Duration
	)
	cmd := &cobra.Command{
		Use:   "console VM --tail",
		Short: "Show a VM's serial console through the API (read-only: --tail)",
		Long: `console --tail prints the last --lines lines of VM's serial console log and, with --follow
(the default), what it prints next, until interrupted. It is read-only: typing into the
console is not supported yet (on the host, 'sudo virsh console gc-VM' is).

The log comes through the controller's API (GET /v1/vms/VM/console): the compute agent of
the VM's host sends the end of each libvirt VM's serial log (last 64 KiB) to the controller
every few seconds when it grew. A token is needed (GOVCLOUD_TOKEN, even in the lab), a
department token opens only its department's VMs, and each session is in the audit log
('govcloud audit', action "console"). Network-namespace guests (the lab's default) have no
serial console. Control characters other than newline and tab are left out unless --raw, so
a guest cannot drive the terminal.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !tail {
				return errors.New("only the read-only --tail is supported: 'govcloud console " + args[0] + " --tail'")
			}
			if every < 100*time.Millisecond {
				return fmt.Errorf("--interval %s: want 100ms or more", every)
			}
			if lines < 0 {
				return fmt.Errorf("--lines %d: want 0 or more", lines)
			}
			return tailConsole(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), client.FromEnv().Console, args[0], lines, follow, raw, every)
		},
	}
	cmd.Flags().BoolVar(&tail, "tail", false, "show the console log (read-only)")
	cmd.Flags().IntVarP(&lines, "lines", "n", 20, "how many of the last lines to show first")
	cmd.Flags().BoolVar(&follow, "follow", true, "keep printing what the VM prints (--follow=false: print and exit)")
	cmd.Flags().BoolVar(&raw, "raw", false, "print control characters (escape sequences) as the VM wrote them")
	cmd.Flags().DurationVar(&every, "interval", time.Second, "how often to ask the controller for more")
	return cmd
}

// consoleReader is client.Client.Console.
type consoleReader func(ctx context.Context, vm string, after int64) (*client.ConsoleTail, error)

// tailConsole prints the last lines of vm's console to w, then (follow) what follows, asking
// read every interval until ctx ends. Notes (nothing sent yet, the log restarted) go to errw.
func tailConsole(ctx context.Context, w, errw io.Writer, read consoleReader, vm string, lines int, follow, raw bool, interval time.Duration) error {
	t, err := read(ctx, vm, -1)
	if err != nil {
		return cliError(err)
	}
	note := t.Note
	if note != "" {
		fmt.Fprintf(errw, "console %s: %s\n", vm, note)
	}
	_, _ = w.Write(consoleText(lastLines(t.Data, lines), raw))
	end := t.End
	for follow {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
		t, err := read(ctx, vm, end)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return cliError(err)
		}
		if t.Note != "" && t.Note != note {
			fmt.Fprintf(errw, "console %s: %s\n", vm, t.Note)
		}
		note = t.Note
		if t.End < end {
			fmt.Fprintf(errw, "console %s: the log started again (the VM was made again)\n", vm)
		}
		_, _ = w.Write(consoleText(t.Data, raw))
		end = t.End
	}
	return nil
}

// lastLines is the last n lines of b (a last line without a newline counts).
func lastLines(b []byte, n int) []byte {
	if n == 0 {
		return nil
	}
	i := len(b)
	if i > 0 && b[i-1] == '\n' {
		i--
	}
	for ; n > 0; n-- {
		j := bytes.LastIndexByte(b[:i], '\n')
		if j < 0 {
			return b
		}
		i = j
	}
	return b[i+1:]
}

// consoleText is b for a terminal: without raw, control characters other than newline and
// tab (C0 and C1: escape sequences, carriage returns, bells) are left out and bytes that are
// not UTF-8 become U+FFFD.
func consoleText(b []byte, raw bool) []byte {
	if raw {
		return b
	}
	out := make([]byte, 0, len(b))
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		b = b[n:]
		if unicode.IsControl(r) && r != '\n' && r != '\t' {
			continue
		}
		out = utf8.AppendRune(out, r)
	}
	return out
}
