package libvirt

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"

	"github.com/govcloud/govcloud/compute"
)

// Volume backups. A backup of data volume V taken at time T has the id V-YYYYMMDDTHHMMSSZ
// (BackupID) and two files in the backup directory: ID.qcow2, a self-contained qcow2 image of
// what the guest sees (backing images included), and ID.json, its VolumeBackup manifest with
// the image's sha256. The manifest is written last, so a backup is listed only once whole.
//
// A volume attached to a running VM is copied through libvirt's backup API (push mode: qemu
// copies a point-in-time view of the disk while the guest runs); one not in use through
// 'qemu-img convert'. Either way the copy is crash-consistent: what a power cut at that
// instant would have left on the disk. It is filesystem-consistent only when the guest runs
// the QEMU guest agent (its domain has the org.qemu.guest_agent.0 channel): then its
// filesystems are frozen (fs-freeze) while the backup starts. The built-in tiny guest has no
// agent: its backups are crash-consistent.

// Backup file name suffixes.
const (
	BackupImageExt    = ".qcow2"
	BackupManifestExt = ".json"
)

// Consistency of a volume backup.
const (
	CrashConsistent      = "crash-consistent"
	FilesystemConsistent = "filesystem-consistent"
)

// VolumeBackupFormat is the manifest format this code writes and reads.
const VolumeBackupFormat = 1

// VolumeBackup is a volume backup's manifest (ID.json beside ID.qcow2).
type VolumeBackup struct {
	FormatVersion int       `json:"formatVersion"`
	ID            string    `json:"id"`
	Volume        string    `json:"volume"`
	Host          string    `json:"host"`
	Time          time.Time `json:"time"`          // when the copy's point in time was taken (UTC)
	CapacityBytes uint64    `json:"capacityBytes"` // the volume's size as the guest sees it
	Bytes         int64     `json:"bytes"`         // size of ID.qcow2
	SHA256        string    `json:"sha256"`        // hex SHA-256 of ID.qcow2
	Consistency   string    `json:"consistency"`   // CrashConsistent or FilesystemConsistent
	Method        string    `json:"method"`        // how it was copied
}

// Progress reports a copy's progress: bytes done of total (total 0: not known yet).
type Progress func(done, total uint64)

// BackupID names the backup of volume taken at t.
func BackupID(volume string, t time.Time) string {
	return volume + "-" + t.UTC().Format("20060102T150405Z")
}

// Open connects to libvirtd and finds the storage pool cfg names, without making anything
// (no pool, base volume or guest image): for tools working on volumes that exist
// ('govcloud volume backup'). Close it when done.
func Open(cfg Config) (*Provider, error) {
	if cfg.Socket == "" {
		cfg.Socket = "/run/libvirt/libvirt-sock"
	}
	if cfg.Pool == "" {
		cfg.Pool = "gc-pool"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	p := &Provider{cfg: cfg, log: cfg.Log, own: -1}
	p.l = golibvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(cfg.Socket), dialers.WithLocalTimeout(5*time.Second)))
	if err := p.l.Connect(); err != nil {
		return nil, fmt.Errorf("connect to libvirtd at %s: %w", cfg.Socket, err)
	}
	pool, err := p.l.StoragePoolLookupByName(cfg.Pool)
	if err != nil {
		p.l.Disconnect()
		return nil, fmt.Errorf("storage pool %q: %w", cfg.Pool, err)
	}
	p.pool = pool
	_ = p.l.StoragePoolRefresh(pool, 0)
	return p, nil
}

// BackupVolume copies data volume volume into a new backup in dir (made 0711 when missing:
// qemu, running as its own user, writes a running VM's copy there) and returns its manifest.
// It is bounded by ctx (a running copy is aborted when ctx ends); progress, when not nil, is
// called as the copy advances. Errors name the volume. Nothing is left in dir on failure.
func (p *Provider) BackupVolume(ctx context.Context, volume, dir string, progress Progress) (VolumeBackup, error) {
	if err := compute.ValidName(volume); err != nil {
		return VolumeBackup{}, fmt.Errorf("volume backup: %w", err)
	}
	if progress == nil {
		progress = func(uint64, uint64) {}
	}
	fail := func(err error) (VolumeBackup, error) {
		return VolumeBackup{}, fmt.Errorf("backup of volume %q: %w", volume, err)
	}
	vol, err := p.l.StorageVolLookupByName(p.pool, p.dataName(volume))
	if err != nil {
		return fail(fmt.Errorf("not in storage pool %q of this host (%s): %w", p.cfg.Pool, p.cfg.Host, err))
	}
	src, err := p.l.StorageVolGetPath(vol)
	if err != nil {
		return fail(err)
	}
	_, capacity, _, err := p.l.StorageVolGetInfo(vol)
	if err != nil {
		return fail(err)
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return fail(err)
	}
	t := time.Now().UTC()
	m := VolumeBackup{FormatVersion: VolumeBackupFormat, ID: BackupID(volume, t), Volume: volume, Host: p.cfg.Host, Time: t,
		CapacityBytes: capacity, Consistency: CrashConsistent}
	img := filepath.Join(dir, m.ID+BackupImageExt)
	if _, err := os.Stat(img); err == nil {
		return fail(fmt.Errorf("%s exists already (one backup per volume and second)", img))
	}
	tmp := filepath.Join(dir, ".tmp-"+m.ID+BackupImageExt)
	_ = os.Remove(tmp)
	defer os.Remove(tmp) // after the rename: nothing
	if dom, dev, agent, ok := p.domainUsing(src); ok {
		m.Method = fmt.Sprintf("libvirt backup (push) of disk %s of running domain %s", dev, dom.Name)
		if m.Consistency, err = p.backupRunning(ctx, dom, dev, agent, tmp, capacity, progress); err != nil {
			return fail(err)
		}
	} else {
		m.Method = "qemu-img convert (volume not in use)"
		if err := qemuImgConvert(ctx, src, tmp, false, capacity, progress); err != nil {
			return fail(err)
		}
	}
	if m.SHA256, m.Bytes, err = hashFile(tmp); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, img); err != nil {
		return fail(err)
	}
	if err := writeManifest(filepath.Join(dir, m.ID+BackupManifestExt), m); err != nil {
		os.Remove(img)
		return fail(err)
	}
	return m, nil
}

// domainUsing finds this host's running domain whose disk is the file path: the domain, the
// disk's target device and whether the guest has the QEMU guest agent's channel.
func (p *Provider) domainUsing(path string) (golibvirt.Domain, string, bool, bool) {
	doms, _, err := p.l.ConnectListAllDomains(1, golibvirt.ConnectListDomainsActive)
	if err != nil {
		return golibvirt.Domain{}, "", false, false
	}
	for _, d := range doms {
		if _, ok := p.meta(d); !ok || !strings.HasPrefix(d.Name, prefix) {
			continue
		}
		x, err := p.l.DomainGetXMLDesc(d, 0)
		if err != nil {
			continue
		}
		var dx diskXML
		if xml.Unmarshal([]byte(x), &dx) != nil {
			continue
		}
		agent := false
		for _, c := range dx.Devices.Channels {
			agent = agent || c.Target.Name == "org.qemu.guest_agent.0"
		}
		for _, disk := range dx.Devices.Disks {
			if disk.Source.File == path {
				return d, disk.Target.Dev, agent, true
			}
		}
	}
	return golibvirt.Domain{}, "", false, false
}

type diskXML struct {
	Devices struct {
		Disks []struct {
			Source struct {
				File string `xml:"file,attr"`
			} `xml:"source"`
			Target struct {
				Dev string `xml:"dev,attr"`
			} `xml:"target"`
		} `xml:"disk"`
		Channels []struct {
			Target struct {
				Name string `xml:"name,attr"`
			} `xml:"target"`
		} `xml:"channel"`
	} `xml:"devices"`
}

// backupRunning copies disk dev of running domain d to the qcow2 file out through libvirt's
// backup API and waits for the job, reporting its progress. With the guest agent the guest's
// filesystems are frozen while the backup's point in time is taken.
func (p *Provider) backupRunning(ctx context.Context, d golibvirt.Domain, dev string, agent bool, out string, capacity uint64, progress Progress) (string, error) {
	x, err := p.l.DomainGetXMLDesc(d, 0)
	if err != nil {
		return "", err
	}
	var dx diskXML
	if err := xml.Unmarshal([]byte(x), &dx); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("<domainbackup mode='push'><disks>")
	for _, disk := range dx.Devices.Disks {
		if disk.Target.Dev == dev {
			fmt.Fprintf(&b, "<disk name='%s' backup='yes' type='file'><driver type='qcow2'/><target file='%s'/></disk>", esc(dev), esc(out))
		} else {
			fmt.Fprintf(&b, "<disk name='%s' backup='no'/>", esc(disk.Target.Dev))
		}
	}
	b.WriteString("</disks></domainbackup>")
	consistency := CrashConsistent
	frozen := false
	if agent {
		if _, err := p.l.DomainFsfreeze(d, nil, 0); err != nil {
			p.log.Warn("guest agent fs-freeze failed; the backup is crash-consistent", "domain", d.Name, "err", err)
		} else {
			frozen, consistency = true, FilesystemConsistent
		}
	}
	err = p.l.DomainBackupBegin(d, b.String(), golibvirt.OptString{}, 0)
	if frozen {
		if _, terr := p.l.DomainFsthaw(d, nil, 0); terr != nil {
			p.log.Error("guest agent fs-thaw failed", "domain", d.Name, "err", terr)
		}
	}
	if err != nil {
		return "", fmt.Errorf("libvirt backup of %s disk %s: %w", d.Name, dev, err)
	}
	tk := time.NewTicker(250 * time.Millisecond)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = p.l.DomainAbortJob(d)
			return "", fmt.Errorf("libvirt backup of %s disk %s: %w (job aborted)", d.Name, dev, ctx.Err())
		case <-tk.C:
		}
		typ, _, _, total, done, _, _, _, _, _, _, _, err := p.l.DomainGetJobInfo(d)
		if err != nil {
			return "", fmt.Errorf("libvirt backup of %s disk %s: job info: %w", d.Name, dev, err)
		}
		if golibvirt.DomainJobType(typ) != golibvirt.DomainJobNone {
			progress(done, total)
			continue
		}
		ctyp, params, err := p.l.DomainGetJobStats(d, golibvirt.DomainJobStatsCompleted)
		if err != nil {
			return "", fmt.Errorf("libvirt backup of %s disk %s: completed job: %w", d.Name, dev, err)
		}
		if golibvirt.DomainJobType(ctyp) != golibvirt.DomainJobCompleted {
			return "", fmt.Errorf("libvirt backup of %s disk %s: job ended %s: %s", d.Name, dev, golibvirt.DomainJobType(ctyp), jobError(params))
		}
		progress(capacity, capacity)
		return consistency, nil
	}
}

func jobError(params []golibvirt.TypedParam) string {
	for _, p := range params {
		if p.Field == "errmsg" {
			return fmt.Sprint(p.Value.I)
		}
	}
	return "no reason given"
}

// qemuImgConvert copies the qcow2 image src (backing images included) into dst with
// 'qemu-img convert', reporting its progress; into an existing dst (a volume libvirt made)
// with existing set.
func qemuImgConvert(ctx context.Context, src, dst string, existing bool, capacity uint64, progress Progress) error {
	if progress == nil {
		progress = func(uint64, uint64) {}
	}
	args := []string{"convert", "-p", "-f", "qcow2", "-O", "qcow2"}
	if existing {
		args = append(args, "-n")
	}
	cmd := exec.CommandContext(ctx, "qemu-img", append(args, src, dst)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("qemu-img (install qemu-utils): %w", err)
	}
	// -p prints "    (12.34/100%)" and a carriage return as it goes.
	sc := bufio.NewScanner(out)
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
			return i + 1, data[:i], nil
		}
		if atEOF && len(data) > 0 {
			return len(data), data, nil
		}
		return 0, nil, nil
	})
	for sc.Scan() {
		f := strings.Trim(strings.TrimSpace(sc.Text()), "()%")
		if pct, _, ok := strings.Cut(f, "/"); ok {
			if v, err := strconv.ParseFloat(pct, 64); err == nil {
				progress(uint64(v/100*float64(capacity)), capacity)
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("qemu-img convert %s: %w", src, ctx.Err())
		}
		return fmt.Errorf("qemu-img convert %s: %v: %s", src, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// writeManifest writes m to path through a temporary file, fsynced and renamed into place.
func writeManifest(path string, m VolumeBackup) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// ListVolumeBackups returns the backups in dir (their manifests), oldest first; a manifest
// that cannot be read is returned as an error naming it.
func ListVolumeBackups(dir string) ([]VolumeBackup, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("volume backup dir %s: %w", dir, err)
	}
	var out []VolumeBackup
	var errs []error
	for _, de := range des {
		id, ok := strings.CutSuffix(de.Name(), BackupManifestExt)
		if !ok || de.IsDir() || strings.HasPrefix(id, ".") {
			continue
		}
		m, err := readManifest(dir, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.Before(out[j].Time)
		}
		return out[i].ID < out[j].ID
	})
	return out, errors.Join(errs...)
}

func readManifest(dir, id string) (VolumeBackup, error) {
	var m VolumeBackup
	b, err := os.ReadFile(filepath.Join(dir, id+BackupManifestExt))
	if err != nil {
		return m, fmt.Errorf("volume backup %q: %w", id, err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("volume backup %q: manifest: %w", id, err)
	}
	if m.FormatVersion != VolumeBackupFormat {
		return m, fmt.Errorf("volume backup %q: format version %d, this govcloud reads only version %d", id, m.FormatVersion, VolumeBackupFormat)
	}
	if m.ID != id || m.Volume == "" || len(m.SHA256) != 64 || m.Bytes <= 0 {
		return m, fmt.Errorf("volume backup %q: manifest incomplete or of another backup (id %q, volume %q, sha256 %q, bytes %d)", id, m.ID, m.Volume, m.SHA256, m.Bytes)
	}
	return m, nil
}

// VerifyVolumeBackup checks backup id in dir: its manifest, and its image's size and sha256
// against it. It returns the manifest and the image's path.
func VerifyVolumeBackup(dir, id string) (VolumeBackup, string, error) {
	if id == "" || strings.ContainsAny(id, "/\\") || strings.HasPrefix(id, ".") {
		return VolumeBackup{}, "", fmt.Errorf("volume backup %q: not a backup id", id)
	}
	m, err := readManifest(dir, id)
	if err != nil {
		return m, "", err
	}
	img := filepath.Join(dir, id+BackupImageExt)
	sum, n, err := hashFile(img)
	if err != nil {
		return m, "", fmt.Errorf("volume backup %q: %w", id, err)
	}
	if n != m.Bytes || sum != m.SHA256 {
		return m, "", fmt.Errorf("volume backup %q: corrupt: image of %d bytes with sha256 %s, manifest says %d bytes with %s", id, n, sum, m.Bytes, m.SHA256)
	}
	return m, img, nil
}

// restoreVolume makes data volume name in the pool from backup id of the backup directory:
// verified first, then copied into a volume of at least size bytes (the backup's capacity
// if larger). On failure nothing is left in the pool.
func (p *Provider) restoreVolume(ctx context.Context, name string, size uint64, id string) (golibvirt.StorageVol, error) {
	dir := p.cfg.BackupDir
	if dir == "" {
		return golibvirt.StorageVol{}, errors.New("no volume backup directory configured (--volume-backup-dir)")
	}
	m, img, err := VerifyVolumeBackup(dir, id)
	if err != nil {
		return golibvirt.StorageVol{}, err
	}
	vol, _, err := p.volume(name, max(size, m.CapacityBytes), "")
	if err != nil {
		return vol, err
	}
	path, err := p.l.StorageVolGetPath(vol)
	if err == nil {
		err = qemuImgConvert(ctx, img, path, true, m.CapacityBytes, nil)
	}
	if err != nil {
		_ = p.l.StorageVolDelete(vol, 0)
		return vol, fmt.Errorf("restore from volume backup %q: %w", id, err)
	}
	p.log.Info("volume restored from backup", "volume", name, "backup", id, "sha256", m.SHA256)
	return vol, nil
}
