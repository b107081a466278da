// Package imagestore finds guest images in a host's image store (a directory, by default
// /var/cache/govcloud/images, where 'make image-debian' puts the Debian image) and verifies them
// against the sha256 of their Image object before a VM boots them. A verified file is not hashed
// again while its size and modification time stay the same.
package imagestore

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// DefaultDir is the image store of a host unless configured otherwise.
const DefaultDir = "/var/cache/govcloud/images"

// Store is one host's image store. It is safe for concurrent use.
type Store struct {
	dir  string
	mu   sync.Mutex
	seen map[string]stamp // path -> the file as it was when its sum was computed
}

type stamp struct {
	size  int64
	mtime time.Time
	sum   string
}

// New returns the store in dir (DefaultDir when empty).
func New(dir string) *Store {
	if dir == "" {
		dir = DefaultDir
	}
	return &Store{dir: dir, seen: map[string]stamp{}}
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// Path returns the file of source in the store. Source must be local to the store (relative,
// without ".." leaving it: the controller validates this too, this is the host's own guard).
func (s *Store) Path(source string) (string, error) {
	if !filepath.IsLocal(source) {
		return "", fmt.Errorf("source %q: not a path inside the image store %s", source, s.dir)
	}
	return filepath.Join(s.dir, source), nil
}

// Verify returns the path of image name's file (source) after checking that its sha256 is
// want (lower-case hex). Errors name the image, the file and both sums; a missing file says
// which store was searched.
func (s *Store) Verify(name, source, want string) (string, error) {
	p, err := s.Path(source)
	if err != nil {
		return "", fmt.Errorf("image %q: %w", name, err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		if os.IsNotExist(err) {
			return "", fmt.Errorf("image %q: %s is not in this host's image store %s", name, source, s.dir)
		}
		return "", fmt.Errorf("image %q: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("image %q: %s is not a regular file", name, p)
	}
	s.mu.Lock()
	st, ok := s.seen[p]
	s.mu.Unlock()
	if !ok || st.size != fi.Size() || !st.mtime.Equal(fi.ModTime()) {
		sum, err := fileSHA256(p)
		if err != nil {
			return "", fmt.Errorf("image %q: %w", name, err)
		}
		st = stamp{size: fi.Size(), mtime: fi.ModTime(), sum: sum}
		s.mu.Lock()
		s.seen[p] = st
		s.mu.Unlock()
	}
	if st.sum != want {
		return "", fmt.Errorf("image %q: %s has sha256 %s, the Image object wants %s: refusing a changed or corrupt image", name, p, st.sum, want)
	}
	return p, nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// QCOW2Size returns the virtual size in bytes of the qcow2 image at path (from its header), or
// an error when the file is not qcow2.
func QCOW2Size(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var h [32]byte
	if _, err := io.ReadFull(f, h[:]); err != nil {
		return 0, fmt.Errorf("%s: not a qcow2 image (short header)", path)
	}
	if string(h[:4]) != "QFI\xfb" {
		return 0, fmt.Errorf("%s: not a qcow2 image (magic %q)", path, h[:4])
	}
	return binary.BigEndian.Uint64(h[24:32]), nil
}
