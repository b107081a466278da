package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/controlplane/client"
)

func init() { register(newAuditCmd) }

// safeText shows s on one table cell: control characters (newlines, tabs, escapes) and
// invalid UTF-8 are written as Go escapes, so text from names cannot forge lines or columns.
func safeText(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) || r == utf8.RuneError }) {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

func newAuditCmd(g *globals) *cobra.Command {
	var (
		out   string
		limit int
	)
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit log of writes, newest first (admin, network)",
		Long: `audit shows the newest writes first: who (token name, role and id, client address), what,
and for object changes the state revisions before and after (those 'apply' and 'status' print;
"-" for writes that change no object: tokens, status reports, usage reports, refusals, whose
CHANGES column shows what they did).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(out, "table", "json", "yaml"); err != nil {
				return err
			}
			raw, err := client.FromEnv().Audit(cmd.Context(), limit)
			if err != nil {
				return cliError(err)
			}
			if out != "table" {
				return printData(cmd.OutOrStdout(), raw, out)
			}
			return writeAudit(cmd.OutOrStdout(), raw)
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "table", "table, json or yaml")
	cmd.Flags().IntVar(&limit, "limit", 50, "how many entries")
	return cmd
}

// auditEntry is what the table shows of an audit entry.
type auditEntry struct {
	Time           string                                `json:"time"`
	Who            string                                `json:"who"`
	Role           string                                `json:"role"`
	TokenID        string                                `json:"tokenId"`
	Remote         string                                `json:"remote"`
	Action         string                                `json:"action"`
	Result         string                                `json:"result"`
	Error          string                                `json:"error"`
	BeforeRevision int64                                 `json:"beforeRevision"`
	AfterRevision  int64                                 `json:"afterRevision"`
	Changes        []struct{ Kind, Name, Action string } `json:"changes"`
	Detail         map[string]any                        `json:"detail"`
}

// writeAudit prints the entries (the API's JSON list) as a table. REVISIONS are the state
// revisions an object change went from and to, as 'apply', 'plan' and 'status' print them;
// other writes change no state revision ("-"). CHANGES lists object changes, or for other
// writes their details (token id, name, role, ...), sorted by key.
func writeAudit(w io.Writer, raw []byte) error {
	var entries []auditEntry
	if err := json.Unmarshal(raw, &entries); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tWHO\tTOKEN\tFROM\tACTION\tREVISIONS\tCHANGES")
	for _, e := range entries {
		var ch []string
		for _, c := range e.Changes {
			ch = append(ch, c.Action+" "+c.Kind+"/"+c.Name)
		}
		if len(ch) > 4 {
			ch = append(ch[:4], fmt.Sprintf("... %d more", len(e.Changes)-4))
		}
		if len(ch) == 0 {
			for _, k := range slices.Sorted(maps.Keys(e.Detail)) {
				v := e.Detail[k]
				if v == nil || v == "" {
					continue
				}
				if _, ok := v.(string); !ok {
					b, _ := json.Marshal(v)
					v = string(b)
				}
				ch = append(ch, fmt.Sprintf("%s=%v", k, v))
			}
		}
		action := e.Action
		if e.Result != "" {
			action += " " + e.Result + ": " + e.Error
		}
		revs := "-"
		if len(e.Changes) > 0 && e.Result == "" {
			revs = fmt.Sprintf("%d->%d", e.BeforeRevision, e.AfterRevision)
		}
		sep := ", "
		if len(e.Changes) == 0 {
			sep = " "
		}
		// Every field is escaped: a name cannot start a line or a column of its own.
		fmt.Fprintf(tw, "%s\t%s (%s)\t%s\t%s\t%s\t%s\t%s\n", safeText(e.Time), safeText(e.Who), safeText(e.Role), safeText(e.TokenID), safeText(e.Remote),
			safeText(action), revs, safeText(strings.Join(ch, sep)))
	}
	return tw.Flush()
}
