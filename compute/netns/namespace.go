package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/govcloud/govcloud/dataplane/nsexec"
)

// netnsDir holds the named namespaces ('ip netns' names).
const netnsDir = "/run/netns"

// addNamespace makes the named network namespace as 'ip netns add' does: /run/netns a shared
// mount point (so names made and removed reach other mount namespaces), an empty file there,
// and a new namespace bind-mounted onto it. The namespace is made by a locked thread that is
// switched back afterwards (netns.NewNamed would leave it in the new namespace, and its file
// behind on a failed mount).
func addNamespace(name string) error {
	if err := sharedNetnsDir(); err != nil {
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	path := filepath.Join(netnsDir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	f.Close()
	if err := nsexec.InNew(func() error {
		return unix.Mount("/proc/self/task/"+strconv.Itoa(unix.Gettid())+"/ns/net", path, "none", unix.MS_BIND, "")
	}); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	return nil
}

// sharedNetnsDir makes /run/netns a mount point with shared propagation, as 'ip netns add'.
func sharedNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("mount --bind %s: %w", netnsDir, err)
		}
		err = unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("mount --make-shared %s: %w", netnsDir, err)
	}
	return nil
}

// delNamespace removes the named namespace as 'ip netns del' does: detach its mount (it may
// be none: a file left by an agent killed while making it) and remove the file.
func delNamespace(name string) error {
	path := filepath.Join(netnsDir, name)
	_ = unix.Unmount(path, unix.MNT_DETACH)
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	return nil
}

// nsPids lists the processes in the named namespace, as 'ip netns pids', but never this one
// (/proc/PID/ns/net is its main thread's, which nsexec may have entered the namespace).
func nsPids(name string) []int {
	var ns unix.Stat_t
	if unix.Stat(filepath.Join(netnsDir, name), &ns) != nil {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue // not a process, or this one: its main thread may be inside the namespace for a moment (nsexec)
		}
		var st unix.Stat_t
		if unix.Stat(filepath.Join("/proc", e.Name(), "ns/net"), &st) == nil && st.Dev == ns.Dev && st.Ino == ns.Ino {
			pids = append(pids, pid)
		}
	}
	return pids
}
