package compute

import (
	"context"
	"fmt"
	"sort"
	"sync"
)

// Fake is an in-memory Provider for unit tests. Fail, when set, makes Ensure of that VM fail.
type Fake struct {
	mu      sync.Mutex
	vms     map[string]VMSpec
	Fail    map[string]error
	Ensures int // calls that created or replaced a VM
	Deletes int
	// Kept is the keep set of the last PruneVolumes.
	Kept map[string]bool
}

// PruneVolumes records the volumes kept.
func (f *Fake) PruneVolumes(_ context.Context, keep map[string]bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Kept = keep
	return nil
}

// NewFake returns an empty fake provider.
func NewFake() *Fake { return &Fake{vms: map[string]VMSpec{}, Fail: map[string]error{}} }

// Ensure records the VM.
func (f *Fake) Ensure(_ context.Context, s VMSpec) (VMStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.Fail[s.Name]; err != nil {
		return VMStatus{}, fmt.Errorf("create vm %q: %w", s.Name, err)
	}
	if old, ok := f.vms[s.Name]; !ok || old.Fingerprint() != s.Fingerprint() {
		f.vms[s.Name] = s
		f.Ensures++
	}
	return f.status(s), nil
}

func (f *Fake) status(s VMSpec) VMStatus {
	st := VMStatus{Name: s.Name, Department: s.Department, State: Running}
	for _, n := range s.NICs {
		st.Addresses = append(st.Addresses, n.Addr.Addr().String())
		st.Ports = append(st.Ports, n.Port)
	}
	return st
}

// Delete forgets the VM.
func (f *Fake) Delete(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.vms[name]; ok {
		delete(f.vms, name)
		f.Deletes++
	}
	return nil
}

// List returns the recorded VMs by name.
func (f *Fake) List(context.Context) ([]VMStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []VMStatus
	for _, s := range f.vms {
		out = append(out, f.status(s))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Usage reports the specs' sizes with no CPU time.
func (f *Fake) Usage(context.Context) ([]Usage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Usage
	for _, s := range f.vms {
		u := Usage{VM: s.Name, Department: s.Department, VCPUs: s.VCPUs, MemoryBytes: uint64(s.MemoryMiB) << 20}
		for _, v := range s.Volumes {
			u.VolumeBytes += uint64(v.SizeGiB) << 30
			u.Volumes = append(u.Volumes, VolumeUsage{Name: v.Name, AllocatedBytes: uint64(v.SizeGiB) << 30})
		}
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VM < out[j].VM })
	return out, nil
}
