package trunktest

import (
	"testing"

	"golang.org/x/sys/unix"
)

// BPFFS mounts a private bpffs on a temporary directory for the test's pins and unmounts it
// when the test ends, so tests never touch /sys/fs/bpf. Needs root.
func BPFFS(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		tb.Fatalf("mounting bpffs on %s: %v", dir, err)
	}
	tb.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			tb.Errorf("unmounting bpffs %s: %v", dir, err)
		}
	})
	return dir
}
