package compute

import (
	"net"
	"net/netip"
	"testing"
)

// Decide is the lifecycle's whole policy: a table of specs against what exists.
func TestDecide(t *testing.T) {
	base := VMSpec{Name: "web-1", Department: "lands", VCPUs: 1, MemoryMiB: 128, RestartGeneration: 2,
		NICs: []NIC{{Segment: "app", VLAN: 20, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Addr: netip.MustParsePrefix("198.18.20.10/24")}}}
	deb := base
	deb.Image, deb.ImageFile = "debian-12", Image{Name: "debian-12", Source: "debian-12.qcow2", SHA256: "aa11"}
	seen := func(s VMSpec, running bool) Observed {
		return Observed{Exists: true, Running: running, Image: ImageName(s), ImageSHA256: s.ImageFile.SHA256,
			Generation: s.RestartGeneration, VCPUs: s.VCPUs, MemoryMiB: s.MemoryMiB, Shape: Shape(s)}
	}
	with := func(s VMSpec, f func(*VMSpec)) VMSpec {
		s.NICs = append([]NIC(nil), s.NICs...)
		f(&s)
		return s
	}
	stopped := with(base, func(s *VMSpec) { s.PowerState = PowerStopped })
	legacy := seen(base, true)
	legacy.Image, legacy.ImageSHA256 = "", ""
	for _, tc := range []struct {
		name string
		want VMSpec
		have Observed
		act  Action
	}{
		{"absent", base, Observed{}, Create},
		{"absent, wanted stopped", stopped, Observed{}, Create},
		{"running as wanted", base, seen(base, true), None},
		{"powerState running spelled out", with(base, func(s *VMSpec) { s.PowerState = PowerRunning }), seen(base, true), None},
		{"found not running", base, seen(base, false), Start},
		{"found not running with a new size: start, never recreate", with(base, func(s *VMSpec) { s.VCPUs = 2 }), seen(base, false), Start},
		{"more vCPUs", with(base, func(s *VMSpec) { s.VCPUs = 2 }), seen(base, true), Restart},
		{"less memory", with(base, func(s *VMSpec) { s.MemoryMiB = 96 }), seen(base, true), Restart},
		{"another NIC address", with(base, func(s *VMSpec) { s.NICs[0].Addr = netip.MustParsePrefix("198.18.20.11/24") }), seen(base, true), Restart},
		{"a volume attached", with(base, func(s *VMSpec) { s.Volumes = []VolumeSpec{{Name: "data", SizeGiB: 1}} }), seen(base, true), Restart},
		{"other dsr VIPs: applied live", with(base, func(s *VMSpec) { s.Serves = []netip.Addr{netip.MustParseAddr("198.19.0.1")} }), seen(base, true), None},
		{"restartGeneration raised", with(base, func(s *VMSpec) { s.RestartGeneration = 3 }), seen(base, true), Restart},
		{"restartGeneration lowered", with(base, func(s *VMSpec) { s.RestartGeneration = 1 }), seen(base, true), Define},
		{"stop", stopped, seen(base, true), Stop},
		{"stop with a new size", with(stopped, func(s *VMSpec) { s.MemoryMiB = 256 }), seen(base, true), Stop},
		{"stopped as wanted", stopped, seen(stopped, false), None},
		{"resized while stopped", with(stopped, func(s *VMSpec) { s.VCPUs = 4 }), seen(stopped, false), Define},
		{"restartGeneration raised while stopped", with(stopped, func(s *VMSpec) { s.RestartGeneration = 9 }), seen(stopped, false), Define},
		{"image changed", deb, seen(base, true), Recreate},
		{"image changed while stopped", with(deb, func(s *VMSpec) { s.PowerState = PowerStopped }), seen(base, false), Recreate},
		{"image file replaced (sha256)", with(deb, func(s *VMSpec) { s.ImageFile.SHA256 = "bb22" }), seen(deb, true), Recreate},
		{"image as wanted", deb, seen(deb, true), None},
		{"image not recorded (older definition)", base, legacy, None},
		{"image not recorded, resized", with(base, func(s *VMSpec) { s.VCPUs = 2 }), legacy, Restart},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.want, tc.have)
			if d.Action != tc.act {
				t.Fatalf("Decide = %s (%s), want %s", d.Action, d.Reason, tc.act)
			}
			if d.Reason == "" {
				t.Fatalf("Decide = %s without a reason", d.Action)
			}
		})
	}
}

// The root disk survives every change but the image's: no row above but an image change
// recreates, and Shape ignores size, power, generation and image.
func TestShapeIgnoresSizePowerGeneration(t *testing.T) {
	a := VMSpec{Name: "v", VCPUs: 1, MemoryMiB: 128}
	b := a
	b.VCPUs, b.MemoryMiB, b.PowerState, b.RestartGeneration, b.Image = 8, 4096, PowerStopped, 7, "debian-12"
	if Shape(a) != Shape(b) {
		t.Fatalf("Shape differs for size/power/generation/image: %s vs %s", Shape(a), Shape(b))
	}
	b.Department = "lands"
	if Shape(a) == Shape(b) {
		t.Fatal("Shape ignores the department")
	}
	b.Department, b.SSHKeys = "", []string{"ssh-ed25519 AAAA k"}
	if Shape(a) == Shape(b) {
		t.Fatal("Shape ignores the SSH keys")
	}
}
