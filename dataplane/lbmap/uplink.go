package lbmap

import (
	"fmt"

	"github.com/cilium/ebpf/link"
)

// AttachUplink puts the load-balancing program (Program) on the named interface of the
// calling thread's namespace, through AttachXDP: pinned when the dataplane has a pin path, and
// a link an earlier agent pinned for the interface is updated in place. Attaching the interface
// it is already on does nothing; another interface moves it (the old one is detached first).
// Errors name the interface.
func (d *Dataplane) AttachUplink(ifname string) error {
	d.uplinkMu.Lock()
	defer d.uplinkMu.Unlock()
	if d.uplink != nil && d.uplinkIf == ifname {
		return nil
	}
	if d.uplink != nil {
		if err := DetachXDP(d.uplink); err != nil {
			return fmt.Errorf("moving xdp from %s to %s: %w", d.uplinkIf, ifname, err)
		}
		d.uplink, d.uplinkIf = nil, ""
	}
	l, err := d.AttachXDP(ifname, d.Program())
	if err != nil {
		return err
	}
	d.uplink, d.uplinkIf = l, ifname
	return nil
}

// DetachUplink removes the program from the interface AttachUplink put it on (unpins and
// closes the link); without one it does nothing.
func (d *Dataplane) DetachUplink() error {
	d.uplinkMu.Lock()
	defer d.uplinkMu.Unlock()
	if d.uplink == nil {
		return nil
	}
	err := DetachXDP(d.uplink)
	d.uplink, d.uplinkIf = nil, ""
	if err != nil {
		return fmt.Errorf("detaching xdp from uplink: %w", err)
	}
	return nil
}

// closeUplink releases this process's handle of the uplink link; a pinned link stays attached.
func (d *Dataplane) closeUplink() error {
	d.uplinkMu.Lock()
	defer d.uplinkMu.Unlock()
	var l link.Link
	l, d.uplink, d.uplinkIf = d.uplink, nil, ""
	if l == nil {
		return nil
	}
	return l.Close()
}
