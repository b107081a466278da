package libvirt

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/compute/guestimage"
)

// aliasPrefix marks the per-NIC bridges made in libvirtd's namespace: "govcloud:HOST:PORT".
const aliasPrefix = "govcloud:"

// openNetns opens netlink in libvirtd's namespace (or this one) and, with LibvirtNetns set,
// keeps a handle of this process's namespace for the veth ends.
func (p *Provider) openNetns() error {
	if p.cfg.LibvirtNetns == "" {
		h, err := netlink.NewHandle()
		if err != nil {
			return fmt.Errorf("netlink: %w", err)
		}
		p.lh = h
		return nil
	}
	ns, err := netns.GetFromPath(p.cfg.LibvirtNetns)
	if err != nil {
		return fmt.Errorf("libvirtd's network namespace %s: %w", p.cfg.LibvirtNetns, err)
	}
	defer ns.Close()
	if p.lh, err = netlink.NewHandleAt(ns); err != nil {
		return fmt.Errorf("netlink in %s: %w", p.cfg.LibvirtNetns, err)
	}
	if p.own, err = netns.Get(); err != nil {
		p.lh.Close()
		return fmt.Errorf("own network namespace: %w", err)
	}
	return nil
}

func (p *Provider) closeNetns() {
	if p.lh != nil {
		p.lh.Close()
	}
	if p.own >= 0 {
		p.own.Close()
	}
}

// split reports whether NICs need a bridge and veth pair of their own (libvirtd elsewhere).
func (p *Provider) split() bool { return p.cfg.LibvirtNetns != "" }

// plumbNames are the per-NIC bridge and veth end in libvirtd's namespace for a guest port.
func plumbNames(port string) (bridge, veth string) {
	h := fnv.New32a()
	h.Write([]byte(port))
	s := h.Sum32()
	return fmt.Sprintf("gq%08x", s), fmt.Sprintf("gr%08x", s)
}

// bridgeFor is the bridge the VM's tap joins.
func (p *Provider) bridgeFor(n compute.NIC) string {
	if !p.split() {
		return n.Bridge
	}
	br, _ := plumbNames(n.Port)
	return br
}

// plumb makes, with libvirtd in another namespace, the NIC's bridge there and a veth pair from
// it to this namespace, whose end here (named as the guest port) joins the segment bridge.
func (p *Provider) plumb(n compute.NIC) error {
	if !p.split() {
		return nil
	}
	brName, vethName := plumbNames(n.Port)
	seg, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return fmt.Errorf("segment bridge %s: %w", n.Bridge, err)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: brName}}
	if err := p.lh.LinkAdd(br); err != nil {
		return fmt.Errorf("bridge %s in %s: %w", brName, p.cfg.LibvirtNetns, err)
	}
	if err := p.lh.LinkSetAlias(br, aliasPrefix+p.cfg.Host+":"+n.Port); err != nil {
		return fmt.Errorf("bridge %s: alias: %w", brName, err)
	}
	if err := p.lh.LinkSetUp(br); err != nil {
		return fmt.Errorf("bridge %s: up: %w", brName, err)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: vethName, MasterIndex: br.Attrs().Index, MTU: seg.Attrs().MTU},
		PeerName: n.Port, PeerNamespace: netlink.NsFd(p.own)}
	if err := p.lh.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth %s-%s: %w", vethName, n.Port, err)
	}
	if err := p.lh.LinkSetUp(veth); err != nil {
		return fmt.Errorf("veth %s: up: %w", vethName, err)
	}
	port, err := netlink.LinkByName(n.Port)
	if err != nil {
		return fmt.Errorf("guest port %s: %w", n.Port, err)
	}
	if err := netlink.LinkSetMaster(port, seg); err != nil {
		return fmt.Errorf("guest port %s on %s: %w", n.Port, n.Bridge, err)
	}
	if err := netlink.LinkSetUp(port); err != nil {
		return fmt.Errorf("guest port %s: up: %w", n.Port, err)
	}
	return nil
}

// unplug removes a guest port's tap and, with libvirtd elsewhere, its bridge and veth pair.
// Absent links are fine.
func (p *Provider) unplug(port string) {
	del := func(h *netlink.Handle, name string) {
		if l, err := h.LinkByName(name); err == nil {
			_ = h.LinkDel(l)
		}
	}
	del(p.lh, port)
	if p.split() {
		br, veth := plumbNames(port)
		del(p.lh, veth)
		del(p.lh, br)
		if l, err := netlink.LinkByName(port); err == nil && l.Type() == "veth" {
			_ = netlink.LinkDel(l)
		}
	}
}

// sweepPlumbing removes the per-NIC bridges (and veths) of this host that no domain uses.
func (p *Provider) sweepPlumbing(used map[string]bool) error {
	if !p.split() {
		return nil
	}
	links, err := p.lh.LinkList()
	if err != nil {
		return fmt.Errorf("list links in %s: %w", p.cfg.LibvirtNetns, err)
	}
	for _, l := range links {
		port, ok := strings.CutPrefix(l.Attrs().Alias, aliasPrefix+p.cfg.Host+":")
		if !ok || l.Type() != "bridge" || used[port] {
			continue
		}
		p.log.Info("deleting leftover guest port plumbing", "bridge", l.Attrs().Name, "port", port)
		p.unplug(port)
	}
	return nil
}

// setServes changes the VIPs on a running guest's lo through its shell, then the metadata.
func (p *Provider) setServes(ctx context.Context, d golibvirt.Domain, vm string, m meta, want string) error {
	has, wants := listOf(m.Serves), listOf(want)
	var script []string
	for _, v := range wants {
		if !slices.Contains(has, v) {
			script = append(script, "ip addr replace "+hostPrefix(v)+" dev lo")
		}
	}
	for _, v := range has {
		if !slices.Contains(wants, v) {
			script = append(script, "{ ip addr del "+hostPrefix(v)+" dev lo 2>/dev/null; true; }")
		}
	}
	if len(script) > 0 {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		out, rc, err := guestimage.Run(ctx, p.ShellSocket(vm), strings.Join(script, " && "))
		if err != nil || rc != 0 {
			return fmt.Errorf("vm %q: set VIPs %q on the guest: rc %d: %v %s", vm, want, rc, err, out)
		}
	}
	m.Serves = want
	if err := p.setMeta(d, m); err != nil {
		return fmt.Errorf("vm %q: metadata: %w", vm, err)
	}
	p.log.Info("vm VIPs changed", "vm", vm, "serves", want)
	return nil
}

// listOf splits a comma-separated list; "" is the empty list.
func listOf(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func hostPrefix(v string) string {
	a, err := netip.ParseAddr(v)
	if err != nil {
		return v
	}
	return netip.PrefixFrom(a, a.BitLen()).String()
}
