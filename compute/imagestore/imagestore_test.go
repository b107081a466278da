package imagestore

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	dir := t.TempDir()
	data := []byte("a guest image")
	sum := sha256.Sum256(data)
	good := hex.EncodeToString(sum[:])
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"img.qcow2", "sub/img.qcow2"} {
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := New(dir)
	if p, err := s.Verify("deb", "img.qcow2", good); err != nil || p != filepath.Join(dir, "img.qcow2") {
		t.Fatalf("good image: %q %v", p, err)
	}
	if _, err := s.Verify("deb", "sub/img.qcow2", good); err != nil {
		t.Fatalf("good image in a subdirectory: %v", err)
	}
	for _, tc := range []struct {
		desc, source, sum string
		want              []string
	}{
		{"wrong sum", "img.qcow2", strings.Repeat("0", 64), []string{`image "deb"`, "has sha256 " + good, "wants " + strings.Repeat("0", 64), "refusing"}},
		{"missing file", "nosuch.qcow2", good, []string{`image "deb"`, "nosuch.qcow2 is not in this host's image store " + dir}},
		{"escapes the store", "../img.qcow2", good, []string{`source "../img.qcow2"`, "not a path inside the image store"}},
		{"absolute", "/etc/passwd", good, []string{`source "/etc/passwd"`}},
		{"a directory", "sub", good, []string{"not a regular file"}},
	} {
		if _, err := s.Verify("deb", tc.source, tc.sum); err == nil {
			t.Errorf("%s: accepted", tc.desc)
		} else {
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: error %q lacks %q", tc.desc, err, w)
				}
			}
		}
	}
	// A changed file (same size, new mtime) is hashed again and refused.
	if err := os.WriteFile(filepath.Join(dir, "img.qcow2"), []byte("A guest image"), 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(filepath.Join(dir, "img.qcow2"), later, later); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify("deb", "img.qcow2", good); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("changed image: %v", err)
	}
}

func TestQCOW2Size(t *testing.T) {
	dir := t.TempDir()
	h := make([]byte, 64)
	copy(h, "QFI\xfb")
	binary.BigEndian.PutUint64(h[24:], 2<<30)
	p := filepath.Join(dir, "a.qcow2")
	if err := os.WriteFile(p, h, 0o644); err != nil {
		t.Fatal(err)
	}
	if n, err := QCOW2Size(p); err != nil || n != 2<<30 {
		t.Fatalf("size %d, %v", n, err)
	}
	raw := filepath.Join(dir, "a.raw")
	if err := os.WriteFile(raw, make([]byte, 64), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := QCOW2Size(raw); err == nil || !strings.Contains(err.Error(), "not a qcow2 image") {
		t.Fatalf("raw file: %v", err)
	}
}
