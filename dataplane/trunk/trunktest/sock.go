package trunktest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Sock is a raw AF_PACKET socket bound to one interface of the namespace it was opened in.
type Sock struct {
	fd      int
	ifindex int
	name    string
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Open opens a raw socket on ifname in the calling thread's network namespace (call it from
// netnstest.NS.Do). It receives every frame (both directions) with VLAN tags put back in-band.
func Open(ifname string) (*Sock, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("raw socket on %s: %w", ifname, err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, fmt.Errorf("raw socket on %s: %w", ifname, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding raw socket to %s: %w", ifname, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("PACKET_AUXDATA on %s: %w", ifname, err)
	}
	return &Sock{fd: fd, ifindex: ifi.Index, name: ifname}, nil
}

// Close closes the socket.
func (s *Sock) Close() error { return unix.Close(s.fd) }

// Send transmits one frame out of the interface as is (tags in-band stay in-band).
func (s *Sock) Send(frame []byte) error {
	sa := &unix.SockaddrLinklayer{Ifindex: s.ifindex, Halen: 6}
	copy(sa.Addr[:], frame[:6])
	if err := unix.Sendto(s.fd, frame, 0, sa); err != nil {
		return fmt.Errorf("sending %d bytes on %s: %w", len(frame), s.name, err)
	}
	return nil
}

// Frame is one captured frame.
type Frame struct {
	Data     []byte // VLAN tag from metadata re-inserted in-band
	Outgoing bool   // sent by this interface (PACKET_OUTGOING)
}

// Capture reads frames until d has passed.
func (s *Sock) Capture(d time.Duration) ([]Frame, error) {
	var out []Frame
	deadline := time.Now().Add(d)
	buf := make([]byte, 65536)
	oob := make([]byte, 256)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return out, nil
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return out, err
		}
		n, oobn, _, from, err := unix.Recvmsg(s.fd, buf, oob, 0)
		if err != nil {
			if err == unix.EAGAIN || err == unix.EINTR {
				continue
			}
			return out, fmt.Errorf("capturing on %s: %w", s.name, err)
		}
		data := append([]byte(nil), buf[:n]...)
		if tpid, tci, ok := vlanAux(oob[:oobn]); ok {
			data = Tag(data, tpid, 0)
			binary.BigEndian.PutUint16(data[14:16], tci)
		}
		f := Frame{Data: data}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			f.Outgoing = true
		}
		out = append(out, f)
	}
}

// Contains reports whether any captured frame that was not sent by this interface
// contains marker.
func Contains(frames []Frame, marker []byte) bool {
	for _, f := range frames {
		if !f.Outgoing && bytes.Contains(f.Data, marker) {
			return true
		}
	}
	return false
}

func vlanAux(oob []byte) (tpid, tci uint16, ok bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, 0, false
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_PACKET || m.Header.Type != unix.PACKET_AUXDATA {
			continue
		}
		if len(m.Data) < int(unsafe.Sizeof(unix.TpacketAuxdata{})) {
			continue
		}
		aux := (*unix.TpacketAuxdata)(unsafe.Pointer(&m.Data[0]))
		if aux.Status&unix.TP_STATUS_VLAN_VALID == 0 {
			return 0, 0, false
		}
		tpid = Ether8021Q
		if aux.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 && aux.Vlan_tpid != 0 {
			tpid = aux.Vlan_tpid
		}
		return tpid, aux.Vlan_tci, true
	}
	return 0, 0, false
}
