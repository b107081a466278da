package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/govcloud/govcloud/controlplane/store"
)

func startEtcd(t *testing.T, dir string) *store.Store {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := store.StartEmbedded(dir, log, store.EmbeddedOptions{NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	st, err := store.Connect([]string{e.Endpoint}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// seed writes keys of several kinds and returns them.
func seed(t *testing.T, cli *clientv3.Client) map[string]string {
	t.Helper()
	kv := map[string]string{
		"/govcloud/objects/Segment/lands-web":  `{"kind":"Segment"}`,
		"/govcloud/objects/Segment/lands-db":   `{"kind":"Segment"}`,
		"/govcloud/objects/Service/lands-http": `{"kind":"Service"}`,
		"/govcloud/tokens/abc":                 `{"role":"admin"}`,
		"/govcloud/audit/00000000000000000001": `{"action":"apply"}`,
		"/govcloud/metering/2026-12/lands":     `{"bytes":123}`,
		"/govcloud/pki/ca":                     `{"cert":"x"}`,
		"/other/key":                           "outside the prefix",
	}
	for k, v := range kv {
		if _, err := cli.Put(context.Background(), k, v); err != nil {
			t.Fatal(err)
		}
	}
	return kv
}

func TestCreateVerifyRestore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st := startEtcd(t, filepath.Join(t.TempDir(), "d"))
	kv := seed(t, st.Client())
	dir := t.TempDir()
	path, m, err := Create(ctx, st.Client(), "/govcloud/", dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"Segment": 2, "Service": 1, "tokens": 1, "audit": 1, "metering": 1, "pki": 1}
	if d := diffCounts(m.Counts, want); d != "" {
		t.Fatalf("manifest counts: %s", d)
	}
	if m.TotalKeys != len(kv) || m.Revision < int64(len(kv)) || m.FormatVersion != FormatVersion || len(m.SHA256) != 64 {
		t.Fatalf("manifest %+v", m)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	des, _ := os.ReadDir(dir)
	if len(des) != 1 {
		t.Fatalf("backup dir holds %d entries, want only the backup (no temporary files)", len(des))
	}
	vm, snap, err := Verify(path, "")
	if err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Dir(snap))
	if vm.SHA256 != m.SHA256 {
		t.Fatalf("verify read sha %s, create wrote %s", vm.SHA256, m.SHA256)
	}
	es, err := List(dir)
	if err != nil || len(es) != 1 || es[0].Err != nil || es[0].Manifest.Revision != m.Revision {
		t.Fatalf("list: %+v %v", es, err)
	}

	data := filepath.Join(t.TempDir(), "restored")
	if _, err := Restore(path, data); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(path, data); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("second restore into the same dir: %v, want refusal", err)
	}
	st2 := startEtcd(t, data)
	for k, v := range kv {
		r, err := st2.Client().Get(ctx, k)
		if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != v {
			t.Errorf("restored %s: %v %v, want %q", k, r, err, v)
		}
	}
}

// rewrite copies the backup at src to a new file with the manifest changed by fm and the
// snapshot bytes changed by fs.
func rewrite(t *testing.T, src string, fm func(*Manifest), fs func([]byte) []byte) string {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var m Manifest
	var snap []byte
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		if h.Name == manifestName {
			_ = json.Unmarshal(b, &m)
		} else {
			snap = b
		}
	}
	fm(&m)
	snap = fs(snap)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mb, _ := json.Marshal(m)
	_ = tw.WriteHeader(&tar.Header{Name: manifestName, Mode: 0o600, Size: int64(len(mb))})
	_, _ = tw.Write(mb)
	_ = tw.WriteHeader(&tar.Header{Name: snapshotName, Mode: 0o600, Size: int64(len(snap))})
	_, _ = tw.Write(snap)
	_ = tw.Close()
	out := filepath.Join(t.TempDir(), "bad"+Ext)
	if err := os.WriteFile(out, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRefusedBackupsWriteNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st := startEtcd(t, filepath.Join(t.TempDir(), "d"))
	seed(t, st.Client())
	good, m, err := Create(ctx, st.Client(), "/govcloud/", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(good)
	same := func(*Manifest) {}
	keep := func(b []byte) []byte { return b }
	truncated := filepath.Join(t.TempDir(), "truncated"+Ext)
	_ = os.WriteFile(truncated, raw[:len(raw)/2], 0o600)
	cases := []struct {
		desc, file, want string
	}{
		{"truncated file", truncated, "truncated"},
		{"one byte of the snapshot flipped", rewrite(t, good, same, func(b []byte) []byte {
			c := append([]byte(nil), b...)
			c[len(c)/2] ^= 0xff
			return c
		}), "sha256"},
		{"snapshot shortened, manifest adjusted", rewrite(t, good, func(m *Manifest) { m.SnapshotBytes /= 2 }, func(b []byte) []byte { return b[:len(b)/2] }), "sha256"},
		{"garbage snapshot with a matching sha256", func() string {
			junk := bytes.Repeat([]byte("not a bbolt database "), 1000)
			return rewrite(t, good, func(m *Manifest) {
				m.SnapshotBytes = int64(len(junk))
				m.SHA256 = fmt.Sprintf("%x", sha(junk))
			}, func([]byte) []byte { return junk })
		}(), "open etcd snapshot"},
		{"format version 2", rewrite(t, good, func(m *Manifest) { m.FormatVersion = 2 }, keep), "format version 2"},
		{"format version 0 (no manifest version)", rewrite(t, good, func(m *Manifest) { m.FormatVersion = 0 }, keep), "format version 0"},
		{"counts differ from the manifest", rewrite(t, good, func(m *Manifest) { m.Counts["Segment"] = 3 }, keep), "counts differ"},
		{"revision differs from the manifest", rewrite(t, good, func(m *Manifest) { m.Revision++ }, keep), "revision"},
		{"not a backup at all", func() string {
			p := filepath.Join(t.TempDir(), "x"+Ext)
			_ = os.WriteFile(p, []byte("hello"), 0o600)
			return p
		}(), "not a govcloud backup"},
	}
	_ = m
	for _, tc := range cases {
		t.Run(tc.desc, func(t *testing.T) {
			if _, _, err := Verify(tc.file, ""); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("verify: %v, want an error naming %q", err, tc.want)
			}
			parent := t.TempDir()
			data := filepath.Join(parent, "data")
			_, err := Restore(tc.file, data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("restore: %v, want an error naming %q", err, tc.want)
			}
			if des, _ := os.ReadDir(parent); len(des) != 0 {
				t.Fatalf("refused restore left %d entries in %s (first %s)", len(des), parent, des[0].Name())
			}
		})
	}
}

func TestPrune(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st := startEtcd(t, filepath.Join(t.TempDir(), "d"))
	dir := t.TempDir()
	var paths []string
	for i := 0; i < 4; i++ {
		if _, err := st.Client().Put(ctx, "/govcloud/objects/Segment/s", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
		p, _, err := Create(ctx, st.Client(), "/govcloud/", dir)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	removed, err := Prune(dir, 2)
	if err != nil || len(removed) != 2 || removed[0] != paths[0] || removed[1] != paths[1] {
		t.Fatalf("prune removed %v (%v), want the two oldest %v", removed, err, paths[:2])
	}
	es, _ := List(dir)
	if len(es) != 2 || es[0].Path != paths[2] || es[1].Path != paths[3] {
		t.Fatalf("left %+v", es)
	}
}

func sha(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}
