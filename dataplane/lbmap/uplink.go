package lbmap

import (
	"fmt"
	"net"

	"github.com/cilium/ebpf/link"
)

// AttachUplink puts the load-balancing program (Program) on the named interface of the
// calling thread's namespace, through AttachXDP: pinned when the dataplane has a pin path, and
// a link an earlier agent pinned for the interface is updated in place. Attaching the interface
// it is already on does nothing; another interface moves it (the old one is detached first).
//
// First it makes every VLAN tag reach the program inside the frame (exposeVLANTags): the
// uplink's rx VLAN offload off and, on a veth, the peer's tx VLAN offload off; what it changed
// is logged and reported by UplinkVLAN. Where that cannot be done the program is not attached
// and the error wraps ErrVLANTagsHidden: a department's frame must never be balanced as
// public. Errors name the interface.
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
		d.uplink, d.uplinkIf, d.uplinkVLAN = nil, "", ""
	}
	if _, err := net.InterfaceByName(ifname); err != nil {
		return fmt.Errorf("attaching xdp: interface %q: %w", ifname, err)
	}
	done, err := exposeVLANTags(ifname)
	if err != nil {
		d.log.Error("not attaching the load balancer: VLAN tags would be hidden from it", "uplink", ifname, "err", err)
		return fmt.Errorf("attaching xdp to %s: %w", ifname, err)
	}
	if done != "" {
		d.log.Info("VLAN offload turned off so xdp_lb sees every tag in the frame", "uplink", ifname, "changed", done)
	}
	l, err := d.AttachXDP(ifname, d.Program())
	if err != nil {
		return err
	}
	d.uplink, d.uplinkIf = l, ifname
	d.uplinkVLAN = "vlan tags in the frame"
	if done != "" {
		d.uplinkVLAN += " (" + done + ")"
	}
	return nil
}

// UplinkVLAN says how the uplink AttachUplink attached to hands VLAN tags to xdp_lb, e.g.
// "vlan tags in the frame (rx-vlan-hw-parse off on eth0)"; "" when nothing is attached.
func (d *Dataplane) UplinkVLAN() string {
	d.uplinkMu.Lock()
	defer d.uplinkMu.Unlock()
	return d.uplinkVLAN
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
	d.uplink, d.uplinkIf, d.uplinkVLAN = nil, "", ""
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
	l, d.uplink, d.uplinkIf, d.uplinkVLAN = d.uplink, nil, "", ""
	if l == nil {
		return nil
	}
	return l.Close()
}
