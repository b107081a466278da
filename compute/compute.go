// Package compute is the host's compute agent: it turns the controller's desired VMs and volumes
// into guests through a Provider (libvirt for real VMs, network namespaces for the lab and fast
// tests), reconciles what exists against what is wanted (crash-safe: everything it makes carries
// the "gc-" mark, so leftovers from a killed agent are found and removed) and reports usage.
package compute

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/govcloud/govcloud/controlplane/desired"
)

// State is where a VM is in its lifecycle.
type State string

// The lifecycle of a VM.
const (
	Pending  State = "pending"
	Creating State = "creating"
	Running  State = "running"
	Stopped  State = "stopped"
	Error    State = "error"
	Deleting State = "deleting"
)

// NIC is one VM interface on a segment: the guest side gets MAC, Addr and Addr6 (each with the
// segment's prefix length: 198.18.20.10/24, 2001:db8:20::a/64; Addr6 zero on a segment without
// IPv6), the host side is a port named Port on the bridge Bridge. Gateway and Gateway6 are the
// segment's gateways, the guest's default routes.
type NIC struct {
	Segment  string
	VLAN     int
	MAC      net.HardwareAddr
	Addr     netip.Prefix
	Gateway  netip.Addr
	Addr6    netip.Prefix
	Gateway6 netip.Addr
	Bridge   string // segment bridge on the host
	Port     string // host-side interface name (tap or veth); the network agent filters on it
}

// VolumeSpec is a block volume attached to a VM.
type VolumeSpec struct {
	Name    string
	SizeGiB int
	Image   string
	// RestoreFrom is a volume backup id the volume is made from when it does not exist yet
	// (not part of the Fingerprint: it never changes a volume that exists).
	RestoreFrom string
}

// VMSpec is everything a provider needs to make one VM.
type VMSpec struct {
	Name       string
	Department string
	VCPUs      int
	MemoryMiB  int
	Image      string
	Volumes    []VolumeSpec
	NICs       []NIC
	// Serves are the VIPs the VM answers as a dsr backend (on its lo, replying from the VIP).
	// They are not part of the Fingerprint: a provider applies a change to a running guest.
	Serves []netip.Addr
	// ImageFile is the Image object named by Image; zero for the built-in tiny guest.
	ImageFile Image
	// SSHKeys are the OpenSSH public keys root accepts in the guest (through its seed).
	SSHKeys []string
	// PowerState is PowerRunning (also when empty) or PowerStopped: a stopped VM keeps its
	// definition and disks. Not part of the Fingerprint (Decide reads it).
	PowerState string
	// RestartGeneration reboots the VM (stop, start; disks kept) each time it is raised. Not
	// part of the Fingerprint (Decide reads it).
	RestartGeneration int
}

// The values of VMSpec.PowerState (config.VMSpec.PowerState).
const (
	PowerRunning = "running"
	PowerStopped = "stopped"
)

// WantsRunning says whether the spec asks the VM to run (PowerState empty or running).
func (s VMSpec) WantsRunning() bool { return s.PowerState != PowerStopped }

// Image is a guest image file in the host's image store: Source relative to the store, SHA256
// the lower-case hex sha256 the file must have, OS its family (config.ImageOS).
type Image struct {
	Name   string
	Source string
	SHA256 string
	OS     string
}

// VMStatus is what a provider reports about one VM.
type VMStatus struct {
	Name       string   `json:"name"`
	Department string   `json:"department,omitempty"`
	State      State    `json:"state"`
	Message    string   `json:"message,omitempty"`
	Addresses  []string `json:"addresses,omitempty"`
	Ports      []string `json:"ports,omitempty"`
	PID        int      `json:"pid,omitempty"`
}

// Usage is one VM's consumption for metering.
type Usage struct {
	VM          string  `json:"vm"`
	Department  string  `json:"department"`
	VCPUs       int     `json:"vcpus"`
	VCPUSeconds float64 `json:"vcpuSeconds"`
	MemoryBytes uint64  `json:"memoryBytes"`
	VolumeBytes uint64  `json:"volumeBytes"` // allocated (not capacity) bytes of its volumes
	// Volumes are the same bytes per volume: each data volume by its Volume name, and the
	// VM's root disk as RootVolume(VM).
	Volumes []VolumeUsage `json:"volumes,omitempty"`
}

// VolumeUsage is one volume's allocated (not capacity) bytes.
type VolumeUsage struct {
	Name           string `json:"name"`
	AllocatedBytes uint64 `json:"allocatedBytes"`
}

// RootVolume is the name a VM's root disk is reported under: "<vm>/root" (no Volume object
// can be named so, names have no slash).
func RootVolume(vm string) string { return vm + "/root" }

// Provider makes and removes VMs. Ensure is idempotent by name: calling it again with the same
// spec is a no-op, with a changed spec it replaces the VM. Delete of an absent VM is not an error.
// List reports only what the provider owns.
type Provider interface {
	Ensure(ctx context.Context, spec VMSpec) (VMStatus, error)
	Delete(ctx context.Context, name string) error
	List(ctx context.Context) ([]VMStatus, error)
	Usage(ctx context.Context) ([]Usage, error)
}

// VolumePruner is a provider that also keeps volumes apart from VMs: Prune removes the owned
// volumes whose names are not in keep.
type VolumePruner interface {
	PruneVolumes(ctx context.Context, keep map[string]bool) error
}

// Sweeper is a provider that can find host-side leftovers no VM owns (taps of a qemu that died
// with libvirtd) and remove them; Reconcile calls it after deleting unwanted VMs.
type Sweeper interface {
	Sweep(ctx context.Context) error
}

// Naming gives the host-side names the network agent expects: the segment bridge of a VLAN and
// the port of a VM's NIC on a segment (desired.GuestPort).
type Naming struct {
	Bridge func(vlan int) string
	Port   func(vm, segment string) string
}

// ValidName reports whether a VM or volume name is usable in interface, namespace and file names.
func ValidName(name string) error {
	if name == "" || len(name) > 48 {
		return fmt.Errorf("name %q: must be 1-48 characters", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return fmt.Errorf("name %q: character %q not allowed (a-z 0-9 - . _)", name, c)
		}
	}
	return nil
}

// FromDesired turns the controller's state for this host into VM specs, sorted by name.
func FromDesired(st *desired.State, n Naming) ([]VMSpec, error) {
	vols := map[string]desired.Volume{}
	for _, v := range st.Volumes {
		vols[v.Name] = v
	}
	serves := st.DSRVIPs()
	images := map[string]Image{}
	for _, im := range st.Images {
		images[im.Name] = Image{Name: im.Name, Source: im.Source, SHA256: im.SHA256, OS: im.OS}
	}
	var out []VMSpec
	var errs []error
	for _, vm := range st.VMs {
		s := VMSpec{Name: vm.Name, Department: vm.Department, VCPUs: vm.VCPUs, MemoryMiB: vm.MemoryMiB, Image: vm.Image, Serves: serves[vm.Name],
			ImageFile: images[vm.Image], SSHKeys: vm.SSHKeys, PowerState: vm.PowerState, RestartGeneration: vm.RestartGeneration}
		if vm.Image != "" && vm.Image != "tiny" && s.ImageFile.Name == "" {
			errs = append(errs, fmt.Errorf("vm %q: image %q is not in the host's desired images", vm.Name, vm.Image))
			continue
		}
		slices.SortFunc(s.Serves, netip.Addr.Compare)
		if err := ValidName(vm.Name); err != nil {
			errs = append(errs, fmt.Errorf("vm %q: %w", vm.Name, err))
			continue
		}
		for _, name := range vm.Volumes {
			v, ok := vols[name]
			if !ok {
				errs = append(errs, fmt.Errorf("vm %q: volume %q is not in the host's desired volumes", vm.Name, name))
				continue
			}
			s.Volumes = append(s.Volumes, VolumeSpec{Name: v.Name, SizeGiB: v.SizeGiB, Image: v.Image, RestoreFrom: v.RestoreFrom})
		}
		for _, ifc := range vm.Interfaces {
			nic := NIC{Segment: ifc.Segment, VLAN: ifc.VLAN, Bridge: n.Bridge(ifc.VLAN), Port: n.Port(vm.Name, ifc.Segment)}
			var err error
			if ifc.MAC != "" {
				if nic.MAC, err = net.ParseMAC(ifc.MAC); err != nil {
					errs = append(errs, fmt.Errorf("vm %q: segment %q: mac %q: %w", vm.Name, ifc.Segment, ifc.MAC, err))
					continue
				}
			}
			nic.Addr, nic.Gateway = ifc.Prefix4, ifc.Gateway4
			if ifc.Prefix6.IsValid() {
				nic.Addr6, nic.Gateway6 = ifc.Prefix6, ifc.Gateway6
			}
			s.NICs = append(s.NICs, nic)
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, errors.Join(errs...)
}

// ServesText is the spec's VIPs as a sorted, comma-separated list (providers store it).
func (s VMSpec) ServesText() string {
	var v []string
	for _, a := range s.Serves {
		v = append(v, a.String())
	}
	slices.Sort(v)
	return strings.Join(v, ",")
}

// Fingerprint is a stable text of a spec; providers store it to tell "same VM" from "changed".
func (s VMSpec) Fingerprint() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s|%s|%d|%d|%s", s.Name, s.Department, s.VCPUs, s.MemoryMiB, s.Image)
	if s.ImageFile.SHA256 != "" { // only then: a tiny guest's fingerprint is what it was
		fmt.Fprintf(&b, "|i:%s:%s:%s|k:%s", s.ImageFile.Source, s.ImageFile.SHA256, s.ImageFile.OS, strings.Join(s.SSHKeys, ","))
	}
	for _, v := range s.Volumes {
		fmt.Fprintf(&b, "|v:%s:%d:%s", v.Name, v.SizeGiB, v.Image)
	}
	for _, n := range s.NICs {
		fmt.Fprintf(&b, "|n:%s:%d:%s:%s:%s:%s:%s", n.Segment, n.VLAN, n.MAC, n.Addr, n.Gateway, n.Bridge, n.Port)
		if n.Addr6.IsValid() { // only then: an IPv4-only guest's fingerprint is what it was
			fmt.Fprintf(&b, ":6:%s:%s", n.Addr6, n.Gateway6)
		}
	}
	return b.String()
}
