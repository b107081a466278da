package alloc

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/govcloud/govcloud/controlplane/config"
)

// RootDiskMiB is the disk a VM's root overlay takes besides its volumes: the capacity the
// libvirt compute provider gives it (compute/libvirt: 64<<20 bytes).
const RootDiskMiB = 64

// res is an amount of each placed resource; as a limit, 0 means no limit.
type res struct{ vcpus, memMiB, diskMiB int }

func (a res) plus(b res) res {
	return res{a.vcpus + b.vcpus, a.memMiB + b.memMiB, a.diskMiB + b.diskMiB}
}

// resNames are the resources in the order reasons list them, with how each is read from a res.
var resNames = []struct {
	name string // "4 vCPUs", "2048 MiB memory"
	unit string
	get  func(res) int
}{
	{"vCPUs", "", func(r res) int { return r.vcpus }},
	{"memory", " MiB", func(r res) int { return r.memMiB }},
	{"disk", " MiB", func(r res) int { return r.diskMiB }},
}

// vmNeed is what VM s takes of its host: its vCPUs and memory, and as disk its root overlay
// plus the size of every volume it names.
func vmNeed(st *config.State, s *config.VMSpec) res {
	r := res{vcpus: s.VCPUs, memMiB: s.MemoryMiB, diskMiB: RootDiskMiB}
	for _, v := range s.Volumes {
		if o := st.Get(config.KindVolume, v); o != nil {
			r.diskMiB += o.Spec.(*config.VolumeSpec).SizeGiB * 1024
		}
	}
	return r
}

// hostLimit is what placement may put on host h: each capacity × its overcommit ratio (default
// 1), rounded down; 0 for a resource without a capacity.
func hostLimit(h *config.Object) res {
	cp := h.Spec.(*config.HostSpec).Capacity
	if cp == nil {
		return res{}
	}
	var o config.Overcommit
	if cp.Overcommit != nil {
		o = *cp.Overcommit
	}
	scale := func(v int, ratio float64) int {
		if ratio < 1 {
			ratio = 1
		}
		return int(math.Floor(float64(v) * ratio))
	}
	return res{scale(cp.VCPUs, o.VCPUs), scale(cp.MemoryMiB, o.Memory), scale(cp.DiskGiB*1024, o.Disk)}
}

// short lists the resources where used+n exceeds limit, as "2 vCPUs free" phrases, with the
// matching headline phrases ("4 free vCPUs").
func short(limit, used, n res) (free, want []string) {
	for _, r := range resNames {
		l, u, x := r.get(limit), r.get(used), r.get(n)
		if l > 0 && u+x > l {
			free = append(free, fmt.Sprintf("%d%s %s free", max(l-u, 0), r.unit, r.name))
			want = append(want, fmt.Sprintf("%d%s free %s", x, r.unit, r.name))
		}
	}
	return free, want
}

// selectorText is a host selector as "k=v,k2=v2", keys sorted.
func selectorText(sel map[string]string) string {
	kv := make([]string, 0, len(sel))
	for k, v := range sel {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}

// noRoomReason says why VM vm fits on none of the matching hosts: the resources some host
// lacks, their counts, the selector and what each host has free, e.g.
//
//	no host with 4 free vCPUs for VM "big" among 2 hosts matching rack=r2 (h1: 2 vCPUs free; h2: 3 vCPUs free)
func noRoomReason(vm string, sel map[string]string, matching []*config.Object, limit func(*config.Object) res, used map[string]res, n res) string {
	var wants, per []string
	for _, h := range matching {
		free, want := short(limit(h), used[h.Metadata.Name], n)
		for _, w := range want {
			if !contains(wants, w) {
				wants = append(wants, w)
			}
		}
		if len(per) < 5 {
			per = append(per, h.Metadata.Name+": "+strings.Join(free, ", "))
		}
	}
	if len(matching) > 5 {
		per = append(per, fmt.Sprintf("and %d more", len(matching)-5))
	}
	return fmt.Sprintf("no host with %s for VM %q among %s (%s)", strings.Join(wants, " and "), vm, hostsText(len(matching), sel), strings.Join(per, "; "))
}

// noMatchReason says why no host is a candidate for VM vm.
func noMatchReason(vm string, sel map[string]string, hosts int) string {
	if hosts == 0 {
		return fmt.Sprintf("no host for VM %q: no Host objects exist", vm)
	}
	return fmt.Sprintf("no host for VM %q: none of %d hosts matches hostSelector %s", vm, hosts, selectorText(sel))
}

func hostsText(n int, sel map[string]string) string {
	t := fmt.Sprintf("%d hosts", n)
	if n == 1 {
		t = "1 host"
	}
	if len(sel) > 0 {
		t += " matching " + selectorText(sel)
	}
	return t
}

// overReason says that host h holds more than its limit; the VM is kept there, not moved.
func overReason(h string, limit, used res) string {
	var over []string
	for _, r := range resNames {
		if l, u := r.get(limit), r.get(used); l > 0 && u > l {
			over = append(over, fmt.Sprintf("%d%s %s of %d", u, r.unit, r.name, l))
		}
	}
	return fmt.Sprintf("host %s over capacity: its VMs take %s (capacity × overcommit); kept there, not moved", h, strings.Join(over, ", "))
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
