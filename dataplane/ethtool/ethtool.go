// Package ethtool turns a network device's offload features off through the SIOCETHTOOL ioctl
// ('ethtool -K DEV FEATURE off' without the process), in the calling thread's namespace.
package ethtool

import (
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TxChecksum is what 'ethtool -K DEV tx off' turns off: every TX checksum offload feature
// (the kernel's netdev_features_strings names).
var TxChecksum = []string{"tx-checksum-ipv4", "tx-checksum-ip-generic", "tx-checksum-ipv6", "tx-checksum-fcoe-crc", "tx-checksum-sctp"}

// StaysOnError: a feature asked off is still on (fixed on, or the device refused).
type StaysOnError struct{ Msg string }

func (e *StaysOnError) Error() string { return e.Msg }

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

func ioctl(fd int, ifname string, data unsafe.Pointer) error {
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
	if err := ioctl(fd, ifname, unsafe.Pointer(&info)); err != nil {
		return nil, fmt.Errorf("ethtool string set size: %w", err)
	}
	n := int(info.data[0])
	buf := make([]byte, 12+n*ethGStringLen)
	*(*uint32)(unsafe.Pointer(&buf[0])) = ethtoolGStrings
	*(*uint32)(unsafe.Pointer(&buf[4])) = ethSSFeatures
	*(*uint32)(unsafe.Pointer(&buf[8])) = uint32(n)
	if err := ioctl(fd, ifname, unsafe.Pointer(&buf[0])); err != nil {
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
	if err := ioctl(fd, ifname, unsafe.Pointer(&buf[0])); err != nil {
		return nil, fmt.Errorf("ethtool get features: %w", err)
	}
	out := make([]featureBlock, words)
	for i := range out {
		b := buf[2+4*i:]
		out[i] = featureBlock{b[0], b[1], b[2], b[3]}
	}
	return out, nil
}

// FeaturesOff turns the named features off on ifname (calling thread's namespace) and returns
// those that were on. Names the device lacks are skipped; one that stays on is a
// *StaysOnError.
func FeaturesOff(ifname string, names ...string) ([]string, error) {
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
			return nil, &StaysOnError{fmt.Sprintf("%s: %s is fixed on", ifname, n)}
		}
		set[2+2*w] |= m // valid; requested stays 0 (off)
		on = append(on, n)
	}
	if len(on) == 0 {
		return nil, nil
	}
	if err := ioctl(fd, ifname, unsafe.Pointer(&set[0])); err != nil {
		return nil, &StaysOnError{fmt.Sprintf("%s: turning %s off: %v", ifname, strings.Join(on, ", "), err)}
	}
	after, err := getFeatures(fd, ifname, words)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ifname, err)
	}
	for _, n := range on {
		bit := idx[n]
		if after[bit/32].active&(1<<(bit%32)) != 0 {
			return nil, &StaysOnError{fmt.Sprintf("%s: %s stays on", ifname, n)}
		}
	}
	return on, nil
}
