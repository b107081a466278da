package compute

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Action is what a provider does to bring an existing (or missing) VM to its spec.
type Action string

// The actions Decide chooses from. Only Recreate makes a new root disk; every other action
// keeps the VM's disks.
const (
	None     Action = "none"     // as wanted
	Define   Action = "define"   // rewrite the stopped VM's definition (it stays stopped)
	Create   Action = "create"   // no VM yet: make its disks and definition, start it if wanted
	Start    Action = "start"    // found not running, wanted running: start it (disks kept)
	Stop     Action = "stop"     // wanted stopped: power it off (definition and disks kept)
	Restart  Action = "restart"  // rewrite the definition and power-cycle it (resize, reboot)
	Recreate Action = "recreate" // its image changed: a new root disk on the new image
)

// Observed is what a provider found of one VM: whether it exists and runs, and what its
// definition was made from (the provider stores these beside the definition).
type Observed struct {
	Exists  bool
	Running bool
	// Image and ImageSHA256 are the image the root disk was made on (ImageName, the Image
	// object's sha256); Image "" means not recorded (a definition older than the record),
	// taken as the wanted one.
	Image       string
	ImageSHA256 string
	Generation  int // the RestartGeneration it was last started (or defined) with
	VCPUs       int
	MemoryMiB   int
	Shape       string // Shape of the spec it was defined from
}

// Decision is Decide's answer: the action and why (for the log).
type Decision struct {
	Action Action
	Reason string
}

// ImageName is the image a spec boots: its Image, or the built-in "tiny" when empty.
func ImageName(s VMSpec) string {
	if s.Image == "" {
		return "tiny"
	}
	return s.Image
}

// Shape is a short hash of everything in a VM's definition except its image, size (vCPUs,
// memory), power state and restart generation: NICs, volumes, department, SSH keys. A change
// of shape is applied by a restart with the disks kept.
func Shape(s VMSpec) string {
	keys := strings.Join(s.SSHKeys, ",")
	s.VCPUs, s.MemoryMiB, s.Image, s.ImageFile = 0, 0, "", Image{}
	h := sha256.Sum256([]byte(s.Fingerprint() + "|k:" + keys))
	return hex.EncodeToString(h[:8])
}

// Decide chooses what to do with a VM given its spec and what exists. It never chooses a new
// root disk for a change of size or shape (Restart, disks kept), nor for a VM found not
// running (Start): only for a change of image (Recreate). Raising RestartGeneration on a
// running VM restarts it once; lowering it, or raising it while the VM is stopped, is only
// recorded (Define).
func Decide(want VMSpec, have Observed) Decision {
	if !have.Exists {
		return Decision{Create, "no VM yet"}
	}
	if img := ImageName(want); have.Image != "" && (have.Image != img || have.ImageSHA256 != want.ImageFile.SHA256) {
		return Decision{Recreate, fmt.Sprintf("image %s (sha256 %.12s) -> %s (sha256 %.12s): a new root disk", have.Image, have.ImageSHA256, img, want.ImageFile.SHA256)}
	}
	var changed string
	switch {
	case have.VCPUs != want.VCPUs || have.MemoryMiB != want.MemoryMiB:
		changed = fmt.Sprintf("resize %d vCPUs %d MiB -> %d vCPUs %d MiB", have.VCPUs, have.MemoryMiB, want.VCPUs, want.MemoryMiB)
	case have.Shape != Shape(want):
		changed = "spec changed (NICs, volumes, department or keys)"
	}
	gen := want.RestartGeneration != have.Generation
	if !want.WantsRunning() {
		switch {
		case have.Running:
			return Decision{Stop, "powerState stopped"}
		case changed != "":
			return Decision{Define, changed + " while stopped"}
		case gen:
			return Decision{Define, fmt.Sprintf("restartGeneration %d -> %d while stopped", have.Generation, want.RestartGeneration)}
		}
		return Decision{None, "stopped as wanted"}
	}
	switch {
	case !have.Running:
		return Decision{Start, "found not running"}
	case changed != "":
		return Decision{Restart, changed}
	case want.RestartGeneration > have.Generation:
		return Decision{Restart, fmt.Sprintf("restartGeneration %d -> %d", have.Generation, want.RestartGeneration)}
	case gen:
		return Decision{Define, fmt.Sprintf("restartGeneration lowered %d -> %d: recorded, no restart", have.Generation, want.RestartGeneration)}
	}
	return Decision{None, "running as wanted"}
}
