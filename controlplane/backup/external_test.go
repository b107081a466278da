package backup

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/store"
	"github.com/govcloud/govcloud/controlplane/store/etcdtest"
)

// TestExternalEtcd: the same Create works against an external etcd (Debian's etcd-server, a
// separate process and an older etcd), and its backup restores into an embedded data dir.
func TestExternalEtcd(t *testing.T) {
	dir := t.TempDir()
	curl, out := etcdtest.Start(t, dir, "http")
	var err error
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var st *store.Store
	for deadline := time.Now().Add(30 * time.Second); ; {
		if st, err = store.Connect([]string{curl}, log); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("external etcd not up after 30s: %v\n%s", err, out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer st.Close()
	kv := seed(t, st.Client())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	path, m, err := Create(ctx, st.Client(), "/govcloud/", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if m.Counts["Segment"] != 2 || m.Counts["metering"] != 1 || m.TotalKeys != len(kv) {
		t.Fatalf("manifest of the external etcd's backup: %+v", m)
	}
	data := filepath.Join(t.TempDir(), "restored")
	if _, err := Restore(path, data); err != nil {
		t.Fatal(err)
	}
	st2 := startEtcd(t, data)
	for k, v := range kv {
		r, err := st2.Client().Get(ctx, k)
		if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != v {
			t.Errorf("restored %s: %v %v, want %q", k, r, err, v)
		}
	}
}
