package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/controlplane/api"
	"github.com/govcloud/govcloud/controlplane/backup"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/store"
)

func init() {
	register(newBackupCmd)
	register(newRestoreCmd)
	controllerExtensions = append(controllerExtensions, backupRoute)
}

// backupRoute serves GET /v1/backup (admin only): a new backup file streamed to the caller.
// The controller takes it (not the CLI) so that the same verb works for embedded etcd (whose
// socket only the controller's user can open) and external etcd (whose credentials only the
// controller holds), from any machine that reaches the API.
func backupRoute(_ context.Context, srv *api.Server, st *store.Store) error {
	srv.Handle("GET "+client.BackupPath, func(w http.ResponseWriter, r *http.Request, p api.Principal) error {
		if p.Role != "admin" {
			return &api.HTTPError{Status: http.StatusForbidden, Code: "forbidden", Message: fmt.Sprintf("backup: role %q may not take backups (admin only: a backup holds every department's data)", p.Role)}
		}
		dir, err := os.MkdirTemp("", "govcloud-backup-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		path, m, err := backup.Create(r.Context(), st.Client(), st.Prefix(), dir)
		if err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		_ = st.AppendAudit(r.Context(), store.AuditEntry{Who: p.Name, Role: p.Role, TokenID: p.TokenID, Remote: p.Remote, Action: "backup",
			Detail: map[string]any{"revision": m.Revision, "sha256": m.SHA256, "bytes": fi.Size()}})
		// The API's 60 s write timeout is for JSON answers; a large store on a slow link needs longer.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(30 * time.Minute))
		w.Header().Set("Content-Type", "application/x-tar")
		w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
		w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", filepath.Base(path)))
		_, err = io.Copy(w, f)
		return err
	})
	return nil
}

func newBackupCmd(_ *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backup create|list|verify",
		Short: "Back up the controller's whole store (etcd snapshot + manifest), list and verify backups",
		Long: `backup makes and checks backups of the controller's store: every object with its
allocations (VLANs, tables, VIPs, addresses, MACs), tokens (their hashes), the audit log, the
usage ledger and the CA. A backup is one file, NAME.gcbackup: a tar of manifest.json (time,
etcd revision, key counts per kind, sha256 and size of the snapshot, govcloud version, format
version) and etcd.snapshot (etcd's own snapshot, taken through its maintenance API by the
controller, embedded or external etcd alike).

A backup holds the CA's private key and every department's data: keep it as safe as the
controller's data dir. Restore with 'govcloud restore --from FILE --data-dir DIR'.
Scheduled backups: 'govcloud controller --backup-dir DIR --backup-interval 1h --backup-keep 48'.`,
	}
	var to string
	create := &cobra.Command{
		Use:   "create [--to DIR]",
		Short: "Ask the controller (admin token) for a backup and write it to DIR",
		Long: `create asks the controller (GOVCLOUD_API, admin GOVCLOUD_TOKEN) for a consistent snapshot
of its store and writes it to DIR (default: the current directory) atomically (a temporary
file renamed into place once the whole file arrived and verified), then prints its path and
manifest.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := os.MkdirAll(to, 0o700); err != nil {
				return fmt.Errorf("--to %s: %w", to, err)
			}
			rc, name, err := client.FromEnv().Backup(cmd.Context())
			if err != nil {
				return cliError(err)
			}
			defer rc.Close()
			if name == "" || name != filepath.Base(name) || !strings.HasSuffix(name, backup.Ext) {
				return fmt.Errorf("backup: the controller named the file %q; want NAME%s", name, backup.Ext)
			}
			tmp, err := os.CreateTemp(to, ".tmp-"+name+"-")
			if err != nil {
				return fmt.Errorf("--to %s: %w", to, err)
			}
			defer os.Remove(tmp.Name())
			if _, err := io.Copy(tmp, rc); err != nil {
				tmp.Close()
				return fmt.Errorf("backup: receive %s: %w", name, err)
			}
			if err := tmp.Sync(); err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			m, snap, err := backup.Verify(tmp.Name(), "")
			if err != nil {
				return fmt.Errorf("backup received from the controller does not verify: %w", err)
			}
			os.RemoveAll(filepath.Dir(snap))
			dst := filepath.Join(to, name)
			if err := os.Rename(tmp.Name(), dst); err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			fi, _ := os.Stat(dst)
			fmt.Fprintf(cmd.OutOrStdout(), "backup written: %s (%d bytes)\n", dst, fi.Size())
			printManifest(cmd.OutOrStdout(), m)
			return nil
		},
	}
	create.Flags().StringVar(&to, "to", ".", "directory the backup file is written to (made 0700 when missing)")
	var dir string
	list := &cobra.Command{
		Use:   "list [--dir DIR]",
		Short: "List the backups in DIR (oldest first) with time, revision, size and objects",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			es, err := backup.List(dir)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "FILE\tTIME\tREVISION\tBYTES\tOBJECTS\tVERSION")
			for _, e := range es {
				if e.Err != nil {
					fmt.Fprintf(tw, "%s\t-\t-\t%d\t-\tunreadable: %v\n", filepath.Base(e.Path), e.Size, e.Err)
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", filepath.Base(e.Path), e.Manifest.Time.Format(time.RFC3339), e.Manifest.Revision, e.Size, objectCount(e.Manifest), e.Manifest.GovcloudVersion)
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&dir, "dir", ".", "directory holding the backups (files *.gcbackup)")
	verify := &cobra.Command{
		Use:   "verify FILE",
		Short: "Check a backup: manifest, format version, sha256, that etcd opens the snapshot, counts",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, snap, err := backup.Verify(args[0], "")
			if err != nil {
				return err
			}
			os.RemoveAll(filepath.Dir(snap))
			fmt.Fprintf(cmd.OutOrStdout(), "backup %s: OK\n", args[0])
			printManifest(cmd.OutOrStdout(), m)
			return nil
		},
	}
	cmd.AddCommand(create, list, verify)
	return cmd
}

// objectCount is the number of user objects (kinds start upper-case; records such as audit
// and tokens lower-case) in a manifest.
func objectCount(m backup.Manifest) int {
	n := 0
	for k, c := range m.Counts {
		if k != "" && k[0] >= 'A' && k[0] <= 'Z' {
			n += c
		}
	}
	return n
}

func printManifest(w io.Writer, m backup.Manifest) {
	fmt.Fprintf(w, "time %s  revision %d  keys %d  snapshot %d bytes  sha256 %s\ngovcloud %s  etcd %s  format %d\n",
		m.Time.Format(time.RFC3339), m.Revision, m.TotalKeys, m.SnapshotBytes, m.SHA256, m.GovcloudVersion, m.EtcdVersion, m.FormatVersion)
	kinds := make([]string, 0, len(m.Counts))
	for k := range m.Counts {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(w, "  %-16s %d\n", k, m.Counts[k])
	}
}

func newRestoreCmd(_ *globals) *cobra.Command {
	var from, dataDir string
	cmd := &cobra.Command{
		Use:   "restore --from FILE --data-dir DIR",
		Short: "Build a new controller data dir (embedded etcd) from a backup",
		Long: `restore verifies the backup FILE (manifest, format version, sha256, that etcd opens the
snapshot, counts) and builds DIR, a new controller data dir whose embedded etcd holds every key
of the backup: objects with the same allocations, token grants, audit log, usage ledger and
the CA (so hosts' certificates stay valid). Start 'govcloud controller --data-dir DIR' on it;
it writes ca.crt/ca.key and a server certificate from the restored CA. The admin token file
is not in a backup: the old admin token keeps working.

DIR must not exist or be empty. A corrupt, truncated or wrong-version file is refused with
the reason and nothing is written (DIR is built beside it and renamed into place at the end).
etcd's revision is bumped by 1,000,000 so no client mistakes the new history for the old.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || dataDir == "" {
				return errors.New("restore: --from FILE and --data-dir DIR are both required")
			}
			start := time.Now()
			m, err := backup.Restore(from, dataDir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s into %s in %v (revision %d, %d objects)\n", from, dataDir, time.Since(start).Round(time.Millisecond), m.Revision, objectCount(m))
			printManifest(cmd.OutOrStdout(), m)
			fmt.Fprintf(cmd.OutOrStdout(), "next: govcloud controller --data-dir %s\n", dataDir)
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "backup file (NAME.gcbackup)")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the new controller data dir to build (must not exist or be empty)")
	return cmd
}
