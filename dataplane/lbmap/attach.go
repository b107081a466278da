package lbmap

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// AttachXDP attaches prog (Program, DecapProgram, PassProgram) to the named interface of the
// calling thread's namespace, in native (driver) mode. With a pin path the link is pinned, so
// it outlives the process, and a link already pinned for the interface is updated to prog in
// place: a restarted or upgraded agent never detaches the program, flows keep flowing.
func (d *Dataplane) AttachXDP(ifname string, prog *ebpf.Program) (link.Link, error) {
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("attaching xdp: interface %q: %w", ifname, err)
	}
	var pin string
	if d.pinPath != "" {
		pin = filepath.Join(d.pinPath, "link_xdp_"+ifname)
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			if info, ierr := l.Info(); ierr == nil && info.XDP() != nil && int(info.XDP().Ifindex) == ifc.Index {
				if err := l.Update(prog); err != nil {
					l.Close()
					return nil, fmt.Errorf("updating pinned xdp link on %s: %w", ifname, err)
				}
				return l, nil
			}
			// The interface was re-created: the old link is dead.
			_ = l.Unpin()
			l.Close()
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("opening pinned xdp link %s: %w", pin, err)
		}
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: link.XDPDriverMode})
	if err != nil {
		return nil, fmt.Errorf("attaching xdp to %s (native mode): %w", ifname, err)
	}
	if pin != "" {
		if err := l.Pin(pin); err != nil {
			l.Close()
			return nil, fmt.Errorf("pinning xdp link on %s: %w", ifname, err)
		}
	}
	return l, nil
}

// DetachXDP removes the program from the interface: unpins and closes the link.
func DetachXDP(l link.Link) error {
	if err := l.Unpin(); err != nil && !errors.Is(err, os.ErrNotExist) {
		l.Close()
		return fmt.Errorf("unpinning xdp link: %w", err)
	}
	return l.Close()
}

// AttachPass attaches the trivial XDP_PASS program to ifname in the calling thread's namespace
// and pins the link at pin, so it stays after this process exits. A veth whose peer sends
// XDP_TX or redirected frames needs an XDP program of its own to receive them (labs and
// tests emulating a switch port). Remove the pin to detach.
func AttachPass(ifname, pin string) error {
	d, err := Load(Options{ConnTableSize: 1024, NATTableSize: 1024, TableSize: 251})
	if err != nil {
		return err
	}
	defer d.Close()
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("attaching xdp_pass: interface %q: %w", ifname, err)
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: d.PassProgram(), Interface: ifc.Index, Flags: link.XDPDriverMode})
	if err != nil {
		return fmt.Errorf("attaching xdp_pass to %s: %w", ifname, err)
	}
	defer l.Close()
	if err := l.Pin(pin); err != nil {
		return fmt.Errorf("pinning xdp_pass link on %s: %w", ifname, err)
	}
	return nil
}
