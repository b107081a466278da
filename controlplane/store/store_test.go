package store

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/govcloud/govcloud/controlplane/config"
)

func obj(t *testing.T, name, displayName string) *config.Object {
	objs, err := config.Parse("t", []byte("apiVersion: govcloud/v1\nkind: Department\nmetadata: {name: "+name+"}\nspec: {displayName: "+displayName+"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	return objs[0]
}

func TestCommitStaleAndIncrementalReload(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := StartEmbedded(t.TempDir(), log, EmbeddedOptions{NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	a, err := Connect([]string{e.Endpoint}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Connect([]string{e.Endpoint}, log) // a second controller
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	s0, _ := a.Snapshot(ctx)
	if _, err := a.Commit(ctx, s0, []*config.Object{obj(t, "x", "X"), obj(t, "y", "Y")}, nil, AuditEntry{Who: "t"}); err != nil {
		t.Fatal(err)
	}
	// A commit against the old snapshot is refused and writes nothing.
	if _, err := a.Commit(ctx, s0, []*config.Object{obj(t, "z", "Z")}, nil, AuditEntry{Who: "t"}); !errors.Is(err, ErrStale) {
		t.Fatalf("stale commit: %v", err)
	}
	sb, err := b.Snapshot(ctx)
	if err != nil || len(sb.State.Objects) != 2 {
		t.Fatalf("b sees %v objects (%v)", len(sb.State.Objects), err)
	}
	// a changes x and deletes y; b's incremental reload must show both.
	s1, _ := a.Snapshot(ctx)
	if _, err := a.Commit(ctx, s1, []*config.Object{obj(t, "x", "X2")}, []config.Key{{Kind: config.KindDepartment, Name: "y"}}, AuditEntry{Who: "t"}); err != nil {
		t.Fatal(err)
	}
	sb2, err := b.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	x := sb2.State.Get(config.KindDepartment, "x")
	if len(sb2.State.Objects) != 1 || x == nil || x.Spec.(*config.DepartmentSpec).DisplayName != "X2" {
		t.Fatalf("b after change: %d objects, x=%+v", len(sb2.State.Objects), x)
	}
	if sb2.Revision <= sb.Revision {
		t.Errorf("revision did not move: %d -> %d", sb.Revision, sb2.Revision)
	}
	audit, _ := a.Audit(ctx, 10)
	if len(audit) != 2 || audit[0].BeforeRevision != s1.Revision || audit[0].AfterRevision != sb2.Revision {
		t.Errorf("audit %+v", audit)
	}
}
