package lbmap

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

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

// ethtool ioctl commands and string set (include/uapi/linux/ethtool.h).
const (
	ethtoolGStrings  = 0x1b
	ethtoolGSSetInfo = 0x37
	ethtoolGFeatures = 0x3a
	ethtoolSFeatures = 0x3b
	ethSSFeatures    = 4
	ethGStringLen    = 32
)

type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data uintptr
	_    [16]byte
}

func ethtoolIoctl(fd int, ifname string, data unsafe.Pointer) error {
	var ifr ifreqData
	copy(ifr.name[:], ifname)
	ifr.data = uintptr(data)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(&ifr)
	if errno != 0 {
		return errno
	}
	return nil
}

// featureIndex maps the kernel's feature names to their bit numbers for ifname.
func featureIndex(fd int, ifname string) (map[string]int, error) {
	info := struct {
		cmd, reserved uint32
		mask          uint64
		data          [1]uint32
	}{cmd: ethtoolGSSetInfo, mask: 1 << ethSSFeatures}
	if err := ethtoolIoctl(fd, ifname, unsafe.Pointer(&info)); err != nil {
		return nil, fmt.Errorf("ethtool string set size: %w", err)
	}
	n := int(info.data[0])
	buf := make([]byte, 12+n*ethGStringLen)
	*(*uint32)(unsafe.Pointer(&buf[0])) = ethtoolGStrings
	*(*uint32)(unsafe.Pointer(&buf[4])) = ethSSFeatures
	*(*uint32)(unsafe.Pointer(&buf[8])) = uint32(n)
	if err := ethtoolIoctl(fd, ifname, unsafe.Pointer(&buf[0])); err != nil {
		return nil, fmt.Errorf("ethtool feature names: %w", err)
	}
	idx := make(map[string]int, n)
	for i := 0; i < n; i++ {
		s := buf[12+i*ethGStringLen : 12+(i+1)*ethGStringLen]
		if j := strings.IndexByte(string(s), 0); j >= 0 {
			s = s[:j]
		}
		idx[string(s)] = i
	}
	return idx, nil
}

// featureBlock is struct ethtool_get_features_block.
type featureBlock struct{ available, requested, active, neverChanged uint32 }

func getFeatures(fd int, ifname string, words int) ([]featureBlock, error) {
	buf := make([]uint32, 2+4*words)
	buf[0], buf[1] = ethtoolGFeatures, uint32(words)
	if err := ethtoolIoctl(fd, ifname, unsafe.Pointer(&buf[0])); err != nil {
		return nil, fmt.Errorf("ethtool get features: %w", err)
	}
	out := make([]featureBlock, words)
	for i := range out {
		b := buf[2+4*i:]
		out[i] = featureBlock{b[0], b[1], b[2], b[3]}
	}
	return out, nil
}

// featuresOff turns the named features off on ifname (calling thread's namespace) and returns
// those that were on. Names the device lacks are skipped; one that stays on is an error
// wrapping ErrVLANTagsHidden.
func featuresOff(ifname string, names ...string) ([]string, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	idx, err := featureIndex(fd, ifname)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ifname, err)
	}
	words := (len(idx) + 31) / 32
	cur, err := getFeatures(fd, ifname, words)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ifname, err)
	}
	set := make([]uint32, 2+2*words) // struct ethtool_sfeatures: valid, requested per word
	set[0], set[1] = ethtoolSFeatures, uint32(words)
	var on []string
	for _, n := range names {
		bit, ok := idx[n]
		if !ok {
			continue
		}
		w, m := bit/32, uint32(1)<<(bit%32)
		if cur[w].active&m == 0 {
			continue
		}
		if cur[w].available&m == 0 || cur[w].neverChanged&m != 0 {
			return nil, fmt.Errorf("%w: %s: %s is fixed on", ErrVLANTagsHidden, ifname, n)
		}
		set[2+2*w] |= m // valid; requested stays 0 (off)
		on = append(on, n)
	}
	if len(on) == 0 {
		return nil, nil
	}
	if err := ethtoolIoctl(fd, ifname, unsafe.Pointer(&set[0])); err != nil {
		return nil, fmt.Errorf("%w: %s: turning %s off: %v", ErrVLANTagsHidden, ifname, strings.Join(on, ", "), err)
	}
	after, err := getFeatures(fd, ifname, words)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ifname, err)
	}
	for _, n := range on {
		bit := idx[n]
		if after[bit/32].active&(1<<(bit%32)) != 0 {
			return nil, fmt.Errorf("%w: %s: %s stays on", ErrVLANTagsHidden, ifname, n)
		}
	}
	return on, nil
}
