package libvirt

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVolumeBackupRestore backs up a volume not in use (qemu-img convert) with data written
// at two offsets, lists and verifies the backup, restores it into a new volume (identical to
// the guest: qemu-img compare), and refuses a corrupted backup leaving no volume behind. A
// running VM's volume (libvirt's backup API) is TestLabVMs's.
func TestVolumeBackupRestore(t *testing.T) {
	p := requireLibvirt(t)
	ctx := context.Background()
	dir := t.TempDir()
	p.cfg.BackupDir = dir
	cleanup := func(names ...string) {
		for _, n := range names {
			if v, err := p.l.StorageVolLookupByName(p.pool, p.dataName(n)); err == nil {
				_ = p.l.StorageVolDelete(v, 0)
			}
		}
	}
	cleanup("tbk", "tbk-restored", "tbk-bad")
	t.Cleanup(func() { cleanup("tbk", "tbk-restored", "tbk-bad") })
	vol, _, err := p.volume(p.dataName("tbk"), 64<<20, "")
	if err != nil {
		t.Fatal(err)
	}
	src, err := p.l.StorageVolGetPath(vol)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0xa5 0 1M", "-c", "write -P 0x3c 40M 512k", src).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io: %v: %s", err, out)
	}

	if _, err := p.BackupVolume(ctx, "nosuch", dir, nil); err == nil || !strings.Contains(err.Error(), `volume "nosuch"`) {
		t.Fatalf("backup of a missing volume: %v, want an error naming it", err)
	}
	var calls int
	m, err := p.BackupVolume(ctx, "tbk", dir, func(done, total uint64) { calls++ })
	if err != nil {
		t.Fatal(err)
	}
	if m.Volume != "tbk" || m.Consistency != CrashConsistent || !strings.HasPrefix(m.Method, "qemu-img") || m.CapacityBytes != 64<<20 || m.Bytes <= 1<<20 {
		t.Fatalf("manifest %+v", m)
	}
	bs, err := ListVolumeBackups(dir)
	if err != nil || len(bs) != 1 || bs[0] != m {
		t.Fatalf("list: %v %+v, want [%+v]", err, bs, m)
	}
	if _, _, err := VerifyVolumeBackup(dir, m.ID); err != nil {
		t.Fatal(err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(leftovers) > 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}

	rv, err := p.restoreVolume(ctx, p.dataName("tbk-restored"), 32<<20, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	dst, _ := p.l.StorageVolGetPath(rv)
	if _, capacity, _, _ := p.l.StorageVolGetInfo(rv); capacity != 64<<20 {
		t.Fatalf("restored volume of %d bytes, want the backup's 64 MiB", capacity)
	}
	if out, err := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("restored volume differs from the original: %v: %s", err, out)
	}

	// A flipped byte: refused, nothing made.
	img := filepath.Join(dir, m.ID+BackupImageExt)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := VerifyVolumeBackup(dir, m.ID); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("verify of a corrupted backup: %v", err)
	}
	if _, err := p.restoreVolume(ctx, p.dataName("tbk-bad"), 64<<20, m.ID); err == nil || !strings.Contains(err.Error(), m.ID) {
		t.Fatalf("restore from a corrupted backup: %v, want an error naming it", err)
	}
	if _, err := p.l.StorageVolLookupByName(p.pool, p.dataName("tbk-bad")); err == nil {
		t.Fatal("a refused restore left a volume in the pool")
	}
	for _, id := range []string{"../etc/passwd", ".hidden", ""} {
		if _, _, err := VerifyVolumeBackup(dir, id); err == nil {
			t.Fatalf("backup id %q accepted", id)
		}
	}
	t.Logf("backup %s: %d bytes, progress reported %d times", m.ID, m.Bytes, calls)
}
