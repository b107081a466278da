package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/compute/libvirt"
)

func init() { register(newVolumeCmd) }

// defaultVolumeBackupDir is where 'volume backup' writes and the compute agent looks for
// backups when neither is told otherwise (libvirt.Config.BackupDir's default).
const defaultVolumeBackupDir = "/var/lib/govcloud/compute/volume-backups"

func newVolumeCmd(_ *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "volume backup|backups|verify",
		Short: "Back up a data volume on its host, list and verify volume backups",
		Long: `volume backs up data volumes where they live: run it as root on the host that holds
the volume (the host whose compute agent made it, next to its libvirtd). A backup is two files
in the backup directory: ID.qcow2, a self-contained qcow2 image of the volume (backing image
included), and ID.json, its manifest (volume, host, time, capacity, size, sha256, consistency,
how it was copied); ID is VOLUME-YYYYMMDDTHHMMSSZ.

Backups are CRASH-CONSISTENT: the volume as a power cut at that instant would have left it. A
volume attached to a running VM is copied through libvirt's backup API while the VM runs (qemu
copies a point-in-time view); with the QEMU guest agent in the guest its filesystems are frozen
while the copy starts (filesystem-consistent). The built-in tiny guest has no agent.

Restore declaratively: a Volume whose spec.restoreFrom is the backup's ID is made from it
(verified against its sha256 first) by the compute agent of the host it lands on, which finds
backups in its --volume-backup-dir (shared or remote storage, so any host can restore):

  apiVersion: govcloud/v1
  kind: Volume
  metadata: {name: lands-data-restored}
  spec: {department: lands, sizeGiB: 1, restoreFrom: lands-data-20261205T101500Z}`,
	}
	var (
		to, host, pool, socket string
		timeout                time.Duration
	)
	backup := &cobra.Command{
		Use:   "backup NAME [--to DIR]",
		Short: "Copy data volume NAME of this host into a new backup in DIR (crash-consistent qcow2, sha256 in its manifest)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if host == "" {
				host, _ = os.Hostname()
			}
			p, err := libvirt.Open(libvirt.Config{Socket: socket, Pool: pool, Host: host})
			if err != nil {
				return fmt.Errorf("volume %q: %w", args[0], err)
			}
			defer p.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			start := time.Now()
			last := time.Time{}
			m, err := p.BackupVolume(ctx, args[0], to, func(done, total uint64) {
				if time.Since(last) < 2*time.Second || total == 0 {
					return
				}
				last = time.Now()
				fmt.Fprintf(cmd.ErrOrStderr(), "volume %s: %d%% (%d of %d MiB)\n", args[0], done*100/total, done>>20, total>>20)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "volume backup %s written in %v: %s (%d bytes, sha256 %s)\n%s, %s\n",
				m.ID, time.Since(start).Round(time.Millisecond), filepath.Join(to, m.ID+libvirt.BackupImageExt), m.Bytes, m.SHA256, m.Consistency, m.Method)
			return nil
		},
	}
	backup.Flags().StringVar(&to, "to", defaultVolumeBackupDir, "backup directory (made 0711 when missing)")
	backup.Flags().StringVar(&host, "host", "", "this host's name, as the compute agent's --host (default: the hostname)")
	backup.Flags().StringVar(&pool, "pool", "gc-pool", "the compute agent's libvirt storage pool (its --pool)")
	backup.Flags().StringVar(&socket, "libvirt-socket", "/run/libvirt/libvirt-sock", "libvirtd socket")
	backup.Flags().DurationVar(&timeout, "timeout", time.Hour, "give up (and abort the copy) after this long")
	var dir string
	list := &cobra.Command{
		Use:   "backups [--dir DIR]",
		Short: "List the volume backups in DIR, oldest first, with time, size and consistency",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bs, err := libvirt.ListVolumeBackups(dir)
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tVOLUME\tHOST\tTIME\tBYTES\tCAPACITY\tCONSISTENCY")
			for _, b := range bs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", b.ID, b.Volume, b.Host, b.Time.Format(time.RFC3339), b.Bytes, b.CapacityBytes, b.Consistency)
			}
			if ferr := tw.Flush(); err == nil {
				err = ferr
			}
			return err
		},
	}
	list.Flags().StringVar(&dir, "dir", defaultVolumeBackupDir, "backup directory")
	verify := &cobra.Command{
		Use:   "verify ID [--dir DIR]",
		Short: "Check a volume backup's image against its manifest (size, sha256)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, img, err := libvirt.VerifyVolumeBackup(dir, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "volume backup %s: OK (%s, %d bytes, sha256 %s, volume %s of host %s at %s, %s)\n",
				m.ID, img, m.Bytes, m.SHA256, m.Volume, m.Host, m.Time.Format(time.RFC3339), m.Consistency)
			return nil
		},
	}
	verify.Flags().StringVar(&dir, "dir", defaultVolumeBackupDir, "backup directory")
	cmd.AddCommand(backup, list, verify)
	return cmd
}
