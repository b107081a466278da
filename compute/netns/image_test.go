package netns

import (
	"context"
	"strings"
	"testing"

	"github.com/govcloud/govcloud/compute"
)

// Issue 23: a namespace guest cannot run a disk image: a VM of an Image object is refused with
// the image named, before anything is made (no root needed: nothing is touched).
func TestImageRefused(t *testing.T) {
	p, err := New(Config{StateDir: t.TempDir(), HTTPCommand: func(string) []string { return []string{"true"} }})
	if err != nil {
		t.Fatal(err)
	}
	s := compute.VMSpec{Name: "d1", Image: "debian-12", ImageFile: compute.Image{Name: "debian-12", Source: "debian-12.qcow2", SHA256: strings.Repeat("a", 64), OS: "debian"}}
	if _, err := p.Ensure(context.Background(), s); err == nil || !strings.Contains(err.Error(), `image "debian-12"`) {
		t.Fatalf("ensure: %v, want a refusal naming the image", err)
	}
	if _, ok := p.load("d1"); ok {
		t.Fatal("state recorded for a refused VM")
	}
}

// A namespace guest has no power state: powerState stopped is refused with the VM and the
// value named, before anything is made.
func TestStoppedRefused(t *testing.T) {
	p, err := New(Config{StateDir: t.TempDir(), HTTPCommand: func(string) []string { return []string{"true"} }})
	if err != nil {
		t.Fatal(err)
	}
	s := compute.VMSpec{Name: "s1", PowerState: compute.PowerStopped}
	if _, err := p.Ensure(context.Background(), s); err == nil || !strings.Contains(err.Error(), `vm "s1": powerState "stopped"`) {
		t.Fatalf("ensure: %v, want a refusal naming the VM and the power state", err)
	}
	if _, ok := p.load("s1"); ok {
		t.Fatal("state recorded for a refused VM")
	}
}
