// Package nsexec runs work inside another network namespace safely: on a goroutine whose OS
// thread is locked, entered into the namespace and switched back afterwards. If switching
// back fails the thread stays locked, so Go destroys it rather than hand a thread in the wrong
// namespace to other goroutines. Sockets and other handles created inside keep their
// namespace after the work returns.
package nsexec

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Do runs fn inside target and returns fn's error (or why the namespace could not be entered
// or left).
func Do(target netns.NsHandle, fn func() error) error {
	return run(func() error {
		if err := netns.Set(target); err != nil {
			return fmt.Errorf("entering namespace: %w", err)
		}
		return nil
	}, fn)
}

// InNew runs fn inside a new network namespace (unshare), made for it, and returns fn's error
// (or why the namespace could not be made or left). The namespace lives on while something
// holds it (a bind mount of /proc/thread-self/ns/net made by fn, a socket).
func InNew(fn func() error) error {
	return run(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		return nil
	}, fn)
}

// run calls enter and then fn on a locked OS thread, and moves the thread back to its
// namespace afterwards.
func run(enter, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := enter(); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leaving namespace: %w", err)) // the thread dies locked
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// DoNamed runs fn inside the namespace named name ('ip netns' name).
func DoNamed(name string, fn func() error) error {
	h, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	defer h.Close()
	if err := Do(h, fn); err != nil {
		return fmt.Errorf("in namespace %s: %w", name, err)
	}
	return nil
}
