package lbmap

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/govcloud/govcloud/dataplane/ethtool"
	"github.com/govcloud/govcloud/dataplane/nsexec"
)

// ErrVLANTagsHidden: the uplink would hand xdp_lb frames whose VLAN tag is in skb metadata
// (or a NIC descriptor) instead of the frame, so a department's frame would look untagged and
// be balanced in the public domain. AttachUplink refuses to attach then.
var ErrVLANTagsHidden = errors.New("VLAN tags would be hidden from xdp_lb")

// ethtool feature names (the kernel's netdev_features_strings).
const (
	featRxVLAN     = "rx-vlan-hw-parse"       // NIC strips the 802.1Q tag into the descriptor
	featRxVLANSTag = "rx-vlan-stag-hw-parse"  // the same for 802.1ad
	featTxVLAN     = "tx-vlan-hw-insert"      // the tag travels as metadata to the driver
	featTxVLANSTag = "tx-vlan-stag-hw-insert" // the same for 802.1ad
)

// exposeVLANTags makes every VLAN tag reach xdp_lb on ifname (calling thread's namespace) in
// the frame itself, where xdp_lb classifies it, and returns what it did ("" when nothing
// needed changing):
//   - the uplink's rx VLAN offload (802.1Q and 802.1ad) is turned off: a NIC that strips tags
//     hands XDP the frame without them (reading them back needs the rx VLAN metadata kfunc,
//     i.e. a dev-bound program, which this project does not load);
//   - on a veth uplink the peer's tx VLAN offload is turned off: a veth passes an skb's
//     metadata tag (bpf_skb_vlan_push, a bridge forwarding a received tagged frame) to its peer
//     as metadata, which native XDP on the peer never sees; with the offload off the sender
//     puts the tag into the frame (validate_xmit_vlan), as on a wire.
//
// A feature that cannot be turned off (fixed on), or a veth peer whose namespace cannot be
// found, is an error wrapping ErrVLANTagsHidden.
func exposeVLANTags(ifname string) (string, error) {
	var done []string
	changed, err := featuresOff(ifname, featRxVLAN, featRxVLANSTag)
	if err != nil {
		return "", fmt.Errorf("uplink %s: %w", ifname, err)
	}
	if len(changed) > 0 {
		done = append(done, strings.Join(changed, ", ")+" off on "+ifname)
	}
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return "", fmt.Errorf("uplink %s: %w", ifname, err)
	}
	if _, ok := link.(*netlink.Veth); ok {
		peer, changed, err := vethPeerTxOff(link)
		if err != nil {
			return "", fmt.Errorf("uplink %s: veth peer: %w", ifname, err)
		}
		if len(changed) > 0 {
			done = append(done, strings.Join(changed, ", ")+" off on veth peer "+peer)
		}
	}
	return strings.Join(done, "; "), nil
}

// vethPeerTxOff turns the tx VLAN offload off on the peer of veth link, in whatever namespace
// the peer is, and returns the peer's name and the features it changed.
func vethPeerTxOff(link netlink.Link) (string, []string, error) {
	a := link.Attrs()
	if a.ParentIndex == 0 {
		return "", nil, fmt.Errorf("%w: peer of %s unknown", ErrVLANTagsHidden, a.Name)
	}
	var name string
	var changed []string
	work := func() error {
		ifc, err := net.InterfaceByIndex(a.ParentIndex)
		if err != nil {
			return fmt.Errorf("peer ifindex %d: %w", a.ParentIndex, err)
		}
		name = ifc.Name
		changed, err = featuresOff(name, featTxVLAN, featTxVLANSTag)
		return err
	}
	if a.NetNsID < 0 {
		return name, changed, work()
	}
	ns, err := netnsByID(a.NetNsID)
	if err != nil {
		return "", nil, fmt.Errorf("%w: namespace id %d of the peer of %s: %v", ErrVLANTagsHidden, a.NetNsID, a.Name, err)
	}
	defer ns.Close()
	return name, changed, nsexec.Do(ns, work)
}

// netnsByID finds the namespace the calling thread's namespace knows as nsid (a veth peer's
// IFLA_LINK_NETNSID), among the named namespaces and those of running processes.
func netnsByID(nsid int) (netns.NsHandle, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return 0, err
	}
	defer h.Close()
	named, _ := filepath.Glob("/run/netns/*")
	procs, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	for _, p := range append(named, procs...) {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if id, err := h.GetNetNsIdByFd(fd); err == nil && id == nsid {
			return netns.NsHandle(fd), nil
		}
		unix.Close(fd)
	}
	return 0, os.ErrNotExist
}

// featuresOff is ethtool.FeaturesOff with a feature that stays on wrapping ErrVLANTagsHidden.
func featuresOff(ifname string, names ...string) ([]string, error) {
	on, err := ethtool.FeaturesOff(ifname, names...)
	if stays := (*ethtool.StaysOnError)(nil); errors.As(err, &stays) {
		return nil, fmt.Errorf("%w: %v", ErrVLANTagsHidden, err)
	}
	return on, err
}
