package netns

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// arpAnnouncement is the Ethernet frame announcing that ip is at mac (RFC 5227): a broadcast
// ARP request whose sender and target address are both ip ('arping -U').
func arpAnnouncement(mac net.HardwareAddr, ip netip.Addr) []byte {
	f := make([]byte, 42)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:], unix.ETH_P_ARP)
	binary.BigEndian.PutUint16(f[14:], 1)             // hardware: Ethernet
	binary.BigEndian.PutUint16(f[16:], unix.ETH_P_IP) // protocol: IPv4
	f[18], f[19] = 6, 4                               // address lengths
	binary.BigEndian.PutUint16(f[20:], 1)             // request
	copy(f[22:28], mac)                               // sender hardware address
	a := ip.As4()
	copy(f[28:32], a[:]) // sender protocol address
	copy(f[38:42], a[:]) // target protocol address; target hardware address stays zero
	return f
}

// announce sends the ARP announcement of ip at mac out of interface ifindex, from a packet
// socket of the calling thread's namespace.
func announce(ifindex int, mac net.HardwareAddr, ip netip.Addr) error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0) // protocol 0: receives nothing
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{Ifindex: ifindex, Protocol: htons(unix.ETH_P_ARP), Halen: 6}
	copy(to.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	if err := unix.Sendto(fd, arpAnnouncement(mac, ip), 0, to); err != nil {
		return fmt.Errorf("sending ARP announcement of %s: %w", ip, err)
	}
	return nil
}

// htons is v in network byte order, as the packet socket address wants its protocol.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}
