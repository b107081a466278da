package backup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"github.com/govcloud/govcloud/controlplane/store"
)

// Restore builds a new controller data directory dataDir from the backup file at path: the
// embedded etcd's data (etcdutl snapshot restore, a fresh single-member cluster holding every
// key of the backup: objects with their allocations, tokens, audit, usage ledger, the CA) and
// its peer port file. The controller started on dataDir then mirrors the CA to ca.crt/ca.key
// and makes its server certificate from it; the admin token file is not in a backup (the
// token's grant is; keep the token itself).
//
// It verifies the backup first (see Verify) and builds everything in a temporary sibling of
// dataDir renamed into place at the end, so a refused or failed restore writes nothing at
// dataDir. dataDir must not exist or be empty.
func Restore(path, dataDir string) (Manifest, error) {
	dataDir = filepath.Clean(dataDir)
	if des, err := os.ReadDir(dataDir); err == nil && len(des) > 0 {
		return Manifest{}, fmt.Errorf("restore into %s: the directory is not empty (restore makes a new data dir; remove it or choose another)", dataDir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return Manifest{}, fmt.Errorf("restore into %s: %w", dataDir, err)
	}
	parent := filepath.Dir(dataDir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return Manifest{}, fmt.Errorf("restore into %s: %w", dataDir, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dataDir)+".restore-")
	if err != nil {
		return Manifest{}, fmt.Errorf("restore into %s: %w", dataDir, err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o700); err != nil {
		return Manifest{}, err
	}
	work := filepath.Join(tmp, ".verify")
	if err := os.Mkdir(work, 0o700); err != nil {
		return Manifest{}, err
	}
	m, snapPath, err := Verify(path, work)
	if err != nil {
		return m, err
	}
	peer, err := store.WritePeerPort(tmp)
	if err != nil {
		return m, err
	}
	err = snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        snapPath,
		Name:                store.EmbeddedMember,
		OutputDataDir:       filepath.Join(tmp, store.EtcdSubdir),
		PeerURLs:            []string{peer},
		InitialCluster:      store.EmbeddedMember + "=" + peer,
		InitialClusterToken: "etcd-cluster", // embed.NewConfig's default, which StartEmbedded keeps
		// The restored member starts a new history: a revision well past the backup's, and
		// marked compacted, so no watcher can mistake the restored store for the old one.
		RevisionBump:  1_000_000,
		MarkCompacted: true,
	})
	if err != nil {
		return m, fmt.Errorf("restore %s into %s: etcd snapshot restore: %w", path, dataDir, err)
	}
	if err := os.RemoveAll(work); err != nil {
		return m, err
	}
	if err := os.Remove(dataDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return m, fmt.Errorf("restore into %s: %w", dataDir, err)
	}
	if err := os.Rename(tmp, dataDir); err != nil {
		return m, fmt.Errorf("restore into %s: %w", dataDir, err)
	}
	done = true
	return m, nil
}
