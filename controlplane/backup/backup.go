// Package backup makes, checks, lists and restores backups of the controller's store: an etcd
// snapshot taken through etcd's maintenance API (clientv3 Maintenance.Snapshot, so embedded and
// external etcd alike) and a manifest, together in one tar file written atomically (temporary
// file, fsync, rename). Restore builds a new controller data directory with etcdutl's snapshot
// restore; nothing here parses etcd's files by hand (counts come from etcd's mvcc store).
//
// File layout (format version 1), an uncompressed tar with exactly two members in this order:
//
//	manifest.json   Manifest
//	etcd.snapshot   the snapshot as etcd streamed it (bbolt database + sha256 trailer)
package backup

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/pkg/v3/traceutil"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.uber.org/zap"

	"github.com/govcloud/govcloud/controlplane/store"
)

// FormatVersion is the backup file format this code writes and the only one it reads.
const FormatVersion = 1

// Member names inside a backup file.
const (
	manifestName = "manifest.json"
	snapshotName = "etcd.snapshot"
)

// Ext is the backup files' name suffix; List and Prune consider only such files.
const Ext = ".gcbackup"

// maxManifest bounds the manifest member (a corrupt header must not make us allocate much).
const maxManifest = 1 << 20

// Manifest describes one backup.
type Manifest struct {
	FormatVersion   int            `json:"formatVersion"`   // FormatVersion
	Time            time.Time      `json:"time"`            // when the snapshot was taken (UTC)
	Revision        int64          `json:"revision"`        // etcd revision the snapshot holds
	Prefix          string         `json:"prefix"`          // the store's key prefix, e.g. /govcloud/
	Counts          map[string]int `json:"counts"`          // keys under Prefix by kind: object kinds (Segment, ...) and record kinds (audit, tokens, metering, pki, ...)
	TotalKeys       int            `json:"totalKeys"`       // every live key of the snapshot, inside Prefix or not
	SnapshotBytes   int64          `json:"snapshotBytes"`   // size of etcd.snapshot
	SHA256          string         `json:"sha256"`          // hex SHA-256 of etcd.snapshot
	GovcloudVersion string         `json:"govcloudVersion"` // the controller's build (module version or "devel")
	EtcdVersion     string         `json:"etcdVersion,omitempty"`
}

// Version is this build's version string for manifests.
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok || bi.Main.Version == "" {
		return "devel"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			v += "+" + s.Value
		}
	}
	return v
}

// FileName is the name Create gives a backup taken at t of revision rev.
func FileName(t time.Time, rev int64) string {
	return fmt.Sprintf("govcloud-%s-rev%d%s", t.UTC().Format("20060102T150405.000Z"), rev, Ext)
}

// SnapshotIdle is how long Snapshot waits for each piece of etcd's snapshot stream.
var SnapshotIdle = 10 * time.Second

var errSnapshotIdle = errors.New("etcd sent nothing of the snapshot in time")

// Snapshot streams a snapshot of cli's etcd (the member cli is connected to) into w through
// etcd's Maintenance.Snapshot RPC and returns the etcd server's version ("" before etcd 3.6).
// It calls the RPC itself rather than clientv3's wrapper, which logs each snapshot to stdout.
//
// The stream may last as long as the store needs, but etcd must send something every
// SnapshotIdle: an etcd that stopped answering ends it with a store.TimeoutError (a 503 when
// the API takes the backup) instead of holding the caller.
func Snapshot(ctx context.Context, cli *clientv3.Client, w io.Writer) (string, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	idle := SnapshotIdle
	dog := time.AfterFunc(idle, func() { cancel(errSnapshotIdle) })
	defer dog.Stop()
	silent := func(err error) error {
		if context.Cause(ctx) == errSnapshotIdle {
			return &store.TimeoutError{After: idle, Err: fmt.Errorf("etcd snapshot: %w", err)}
		}
		return fmt.Errorf("etcd snapshot: %w", err)
	}
	ss, err := pb.NewMaintenanceClient(cli.ActiveConnection()).Snapshot(ctx, &pb.SnapshotRequest{})
	if err != nil {
		return "", silent(err)
	}
	version := ""
	for {
		resp, err := ss.Recv()
		if errors.Is(err, io.EOF) {
			return version, nil
		}
		if err != nil {
			return "", silent(fmt.Errorf("read stream: %w", err))
		}
		dog.Reset(idle)
		if v := resp.GetVersion(); v != "" {
			version = v
		}
		if _, err := w.Write(resp.GetBlob()); err != nil {
			return "", fmt.Errorf("etcd snapshot: write: %w", err)
		}
	}
}

// Create takes a snapshot of cli's etcd and writes it with its manifest to a new file in dir,
// atomically: a reader of dir sees the whole file or none. It returns the file's path.
func Create(ctx context.Context, cli *clientv3.Client, prefix, dir string) (string, Manifest, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", Manifest{}, fmt.Errorf("backup dir %s: %w", dir, err)
	}
	work, err := os.MkdirTemp(dir, ".backup-work-")
	if err != nil {
		return "", Manifest{}, fmt.Errorf("backup dir %s: %w", dir, err)
	}
	defer os.RemoveAll(work)
	snapPath := filepath.Join(work, snapshotName)
	f, err := os.OpenFile(snapPath, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", Manifest{}, err
	}
	h := sha256.New()
	t := time.Now().UTC()
	ev, err := Snapshot(ctx, cli, io.MultiWriter(f, h))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", Manifest{}, err
	}
	m, err := inspect(snapPath, prefix, work)
	if err != nil {
		return "", Manifest{}, fmt.Errorf("snapshot just taken: %w", err)
	}
	m.Time, m.SHA256, m.EtcdVersion = t, hex.EncodeToString(h.Sum(nil)), ev
	path := filepath.Join(dir, FileName(t, m.Revision))
	if err := writeFile(path, m, snapPath); err != nil {
		return "", Manifest{}, err
	}
	return path, m, nil
}

// inspect opens a snapshot with etcd's own code: the integrity check and revision of etcdutl's
// snapshot status, then the live keys under prefix through etcd's mvcc store (on a copy in
// work: opening a backend may write to it).
func inspect(snapPath, prefix, work string) (Manifest, error) {
	lg := zap.NewNop()
	st, err := snapshot.NewV3(lg).Status(snapPath)
	if err != nil {
		return Manifest{}, fmt.Errorf("open etcd snapshot: %w", err)
	}
	fi, err := os.Stat(snapPath)
	if err != nil {
		return Manifest{}, err
	}
	cp := filepath.Join(work, "inspect.db")
	if err := copyFile(cp, snapPath); err != nil {
		return Manifest{}, err
	}
	defer os.Remove(cp)
	be := backend.NewDefaultBackend(lg, cp)
	defer be.Close()
	kv := mvcc.NewStore(lg, be, &lease.FakeLessor{}, mvcc.StoreConfig{})
	defer kv.Close()
	end := []byte(prefix)
	end[len(end)-1]++ // the prefix's range end (prefixes end in '/', never 0xff)
	txn := kv.Read(mvcc.ConcurrentReadTxMode, traceutil.TODO())
	r, err := txn.Range(context.Background(), []byte(prefix), end, mvcc.RangeOptions{})
	txn.End()
	if err != nil {
		return Manifest{}, fmt.Errorf("read keys under %s: %w", prefix, err)
	}
	counts := map[string]int{}
	for _, k := range r.KVs {
		counts[Kind(strings.TrimPrefix(string(k.Key), prefix))]++
	}
	return Manifest{FormatVersion: FormatVersion, Revision: st.Revision, Prefix: prefix, Counts: counts,
		TotalKeys: st.TotalKey, SnapshotBytes: fi.Size(), GovcloudVersion: Version()}, nil
}

// Kind names what a key (relative to the store's prefix) holds: the object kind for
// objects/KIND/NAME, else its first path element (audit, tokens, metering, pki, certs, ...).
func Kind(rel string) string {
	first, rest, _ := strings.Cut(rel, "/")
	if first == "objects" {
		if kind, _, ok := strings.Cut(rest, "/"); ok {
			return kind
		}
	}
	return first
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return out.Close()
}

// writeFile writes the tar of m and the snapshot at snapPath to path through a temporary file
// in the same directory, fsynced and renamed into place.
func writeFile(path string, m Manifest, snapPath string) error {
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return fmt.Errorf("backup %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after the rename: nothing
	fail := func(err error) error {
		tmp.Close()
		return fmt.Errorf("backup %s: %w", path, err)
	}
	tw := tar.NewWriter(tmp)
	hdr := &tar.Header{Name: manifestName, Mode: 0o600, Size: int64(len(mb)), ModTime: m.Time, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return fail(err)
	}
	if _, err := tw.Write(mb); err != nil {
		return fail(err)
	}
	sf, err := os.Open(snapPath)
	if err != nil {
		return fail(err)
	}
	defer sf.Close()
	hdr = &tar.Header{Name: snapshotName, Mode: 0o600, Size: m.SnapshotBytes, ModTime: m.Time, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return fail(err)
	}
	if _, err := io.Copy(tw, sf); err != nil {
		return fail(err)
	}
	if err := tw.Close(); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("backup %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("backup %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync() // the rename survives a crash of the machine
		d.Close()
	}
	return nil
}

// ReadManifest reads only the manifest of the backup file at path (no checks of the snapshot).
func ReadManifest(path string) (Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return Manifest{}, err
	}
	defer f.Close()
	return readManifest(tar.NewReader(f), path)
}

func readManifest(tr *tar.Reader, path string) (Manifest, error) {
	hdr, err := tr.Next()
	if err != nil {
		return Manifest{}, fmt.Errorf("backup %s: not a govcloud backup (no manifest: %v)", path, err)
	}
	if hdr.Name != manifestName || hdr.Size > maxManifest {
		return Manifest{}, fmt.Errorf("backup %s: not a govcloud backup (first member %q of %d bytes, want %s)", path, hdr.Name, hdr.Size, manifestName)
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		return Manifest{}, fmt.Errorf("backup %s: manifest truncated: %w", path, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return Manifest{}, fmt.Errorf("backup %s: manifest: %w", path, err)
	}
	if m.FormatVersion != FormatVersion {
		return m, fmt.Errorf("backup %s: format version %d, this govcloud reads only version %d", path, m.FormatVersion, FormatVersion)
	}
	if m.Prefix == "" || !strings.HasSuffix(m.Prefix, "/") || len(m.SHA256) != 64 || m.SnapshotBytes <= 0 {
		return m, fmt.Errorf("backup %s: manifest incomplete (prefix %q, sha256 %q, snapshotBytes %d)", path, m.Prefix, m.SHA256, m.SnapshotBytes)
	}
	return m, nil
}

// ErrCorrupt wraps every reason Verify refuses a backup whose manifest was readable.
var ErrCorrupt = errors.New("backup corrupt")

// Verify checks the backup file at path: the manifest (format version, fields), the snapshot's
// size and SHA-256 against it, that etcd opens the snapshot (bbolt integrity check), and that
// its revision and key counts equal the manifest's. It extracts the snapshot into work (a
// directory; "" = a temporary one) and returns the extracted path with the manifest; the caller
// removes it (empty on error).
func Verify(path, work string) (Manifest, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return Manifest{}, "", err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	m, err := readManifest(tr, path)
	if err != nil {
		return m, "", err
	}
	hdr, err := tr.Next()
	if err != nil {
		return m, "", fmt.Errorf("backup %s: %w: no snapshot after the manifest (%v); the file is truncated", path, ErrCorrupt, err)
	}
	if hdr.Name != snapshotName || hdr.Size != m.SnapshotBytes {
		return m, "", fmt.Errorf("backup %s: %w: member %q of %d bytes, manifest says %s of %d", path, ErrCorrupt, hdr.Name, hdr.Size, snapshotName, m.SnapshotBytes)
	}
	if work == "" {
		if work, err = os.MkdirTemp("", "govcloud-verify-"); err != nil {
			return m, "", err
		}
	}
	snapPath := filepath.Join(work, snapshotName)
	out, err := os.OpenFile(snapPath, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return m, "", err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), tr)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	fail := func(err error) (Manifest, string, error) {
		os.Remove(snapPath)
		return m, "", err
	}
	if err != nil {
		return fail(fmt.Errorf("backup %s: %w: snapshot truncated after %d of %d bytes: %v", path, ErrCorrupt, n, m.SnapshotBytes, err))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != m.SHA256 {
		return fail(fmt.Errorf("backup %s: %w: snapshot sha256 %s, manifest says %s", path, ErrCorrupt, got, m.SHA256))
	}
	got, err := inspect(snapPath, m.Prefix, work)
	if err != nil {
		return fail(fmt.Errorf("backup %s: %w: %v", path, ErrCorrupt, err))
	}
	if got.Revision != m.Revision || got.TotalKeys != m.TotalKeys {
		return fail(fmt.Errorf("backup %s: %w: snapshot holds revision %d with %d keys, manifest says revision %d with %d", path, ErrCorrupt, got.Revision, got.TotalKeys, m.Revision, m.TotalKeys))
	}
	if d := diffCounts(got.Counts, m.Counts); d != "" {
		return fail(fmt.Errorf("backup %s: %w: counts differ from the manifest: %s", path, ErrCorrupt, d))
	}
	return m, snapPath, nil
}

func diffCounts(got, want map[string]int) string {
	var d []string
	for k, n := range want {
		if got[k] != n {
			d = append(d, fmt.Sprintf("%s %d (manifest %d)", k, got[k], n))
		}
	}
	for k, n := range got {
		if _, ok := want[k]; !ok {
			d = append(d, fmt.Sprintf("%s %d (manifest 0)", k, n))
		}
	}
	sort.Strings(d)
	return strings.Join(d, ", ")
}

// Entry is one backup file found by List.
type Entry struct {
	Path     string
	Size     int64
	Manifest Manifest
	Err      error // the manifest could not be read
}

// List returns the backups in dir (files named *.gcbackup), oldest first by manifest time.
func List(dir string) ([]Entry, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("backup dir %s: %w", dir, err)
	}
	var out []Entry
	for _, de := range des {
		if de.IsDir() || !strings.HasSuffix(de.Name(), Ext) || strings.HasPrefix(de.Name(), ".") {
			continue
		}
		p := filepath.Join(dir, de.Name())
		e := Entry{Path: p}
		if fi, err := de.Info(); err == nil {
			e.Size = fi.Size()
		}
		e.Manifest, e.Err = ReadManifest(p)
		out = append(out, e)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Manifest.Time.Equal(out[j].Manifest.Time) {
			return out[i].Manifest.Time.Before(out[j].Manifest.Time)
		}
		return out[i].Path < out[j].Path
	})
	return out, nil
}

// Prune removes the oldest readable backups in dir until keep remain (keep <= 0: none
// removed); unreadable files are left for a person to look at. It returns the removed paths.
func Prune(dir string, keep int) ([]string, error) {
	if keep <= 0 {
		return nil, nil
	}
	es, err := List(dir)
	if err != nil {
		return nil, err
	}
	var good []Entry
	for _, e := range es {
		if e.Err == nil {
			good = append(good, e)
		}
	}
	var removed []string
	for i := 0; i < len(good)-keep; i++ {
		if err := os.Remove(good[i].Path); err != nil {
			return removed, fmt.Errorf("prune backup %s: %w", good[i].Path, err)
		}
		removed = append(removed, good[i].Path)
	}
	return removed, nil
}
