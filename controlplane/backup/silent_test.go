package backup

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/store"
	"github.com/govcloud/govcloud/controlplane/store/etcdtest"
)

// TestSnapshotOfSilentEtcd: a snapshot from an etcd that stopped answering ends after
// SnapshotIdle with a store.TimeoutError (the API answers it 503: nothing was done) instead of
// holding its caller — the backup route of a controller cut off from etcd did.
func TestSnapshotOfSilentEtcd(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := store.StartEmbedded(t.TempDir(), log, store.EmbeddedOptions{NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	link := etcdtest.NewLink(t, e.Endpoint)
	st, err := store.Connect([]string{link.URL}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := Snapshot(context.Background(), st.Client(), io.Discard); err != nil {
		t.Fatalf("snapshot while etcd answers: %v", err)
	}
	defer func(d time.Duration) { SnapshotIdle = d }(SnapshotIdle)
	SnapshotIdle = 300 * time.Millisecond
	link.Cut.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t0 := time.Now()
	_, err = Snapshot(ctx, st.Client(), io.Discard)
	took := time.Since(t0)
	link.Cut.Store(false) // etcd's side of the ended stream drains; etcd then stops at once
	var te *store.TimeoutError
	if !errors.As(err, &te) || te.After != SnapshotIdle || took > SnapshotIdle+time.Second {
		t.Fatalf("snapshot from a silent etcd: %v after %s, want a store.TimeoutError after %s", err, took, SnapshotIdle)
	}
	t.Logf("snapshot from a silent etcd: %v after %s", err, took.Round(time.Millisecond))
}
