package isofuzz

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govcloud/govcloud/dataplane/nsexec"
)

// CapturePoint is a namespace to capture in.
type CapturePoint struct {
	NS    string
	Kind  PointKind
	Guest string // PointGuest
}

// Options tune Run.
type Options struct {
	Seed   uint32
	Gap    time.Duration // between wire frames (default 100µs)
	Settle time.Duration // after each position's last frame (default 500ms)
	// AfterPosition runs before the first position (with "") and after each position has
	// settled (with its name): where a caller reads counters.
	AfterPosition func(position string) error
}

// Result is one run.
type Result struct {
	Frames   []Frame
	Verdict  *Verdict
	Sent     int    // wire frames
	Captured int    // frames captured over all points
	Lost     uint64 // frames the capture sockets dropped (PACKET_STATISTICS)
	Elapsed  time.Duration
}

// Run generates the frames, captures at every point, sends each position's frames from
// inside its namespace and judges. It stops at ctx's deadline; sockets are closed on every
// path.
func Run(ctx context.Context, t *Topology, positions []Position, points []CapturePoint, opt Options) (*Result, error) {
	if opt.Gap == 0 {
		opt.Gap = 100 * time.Microsecond
	}
	if opt.Settle == 0 {
		opt.Settle = 500 * time.Millisecond
	}
	start := time.Now()
	frames := Generate(t, positions, opt.Seed)
	res := &Result{Frames: frames}

	caps := make([]*capture, 0, len(points))
	defer func() {
		for _, c := range caps {
			c.close()
		}
	}()
	for _, pt := range points {
		c, err := openCapture(pt)
		if err != nil {
			return nil, err
		}
		caps = append(caps, c)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, c := range caps {
		wg.Add(1)
		go func() { defer wg.Done(); c.read(stop) }()
	}
	stopped := false
	stopAll := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer stopAll()

	time.Sleep(100 * time.Millisecond) // readers are in recvmsg
	if opt.AfterPosition != nil {
		if err := opt.AfterPosition(""); err != nil {
			return nil, err
		}
	}
	for _, p := range positions {
		n, err := send(ctx, p, frames, opt.Gap)
		res.Sent += n
		if err != nil {
			return nil, err
		}
		time.Sleep(opt.Settle)
		if opt.AfterPosition != nil {
			if err := opt.AfterPosition(p.Name); err != nil {
				return nil, err
			}
		}
	}
	stopAll()
	var pkts []Packet
	for _, c := range caps {
		pkts = append(pkts, c.pkts...)
		res.Lost += c.drops()
	}
	res.Captured = len(pkts)
	res.Verdict = Judge(t, frames, opt.Seed, pkts)
	res.Elapsed = time.Since(start)
	return res, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// send writes position p's frames out of its interface with an AF_PACKET socket opened
// inside its namespace.
func send(ctx context.Context, p Position, frames []Frame, gap time.Duration) (int, error) {
	var fd, ifindex int
	err := nsexec.DoNamed(p.NS, func() error {
		ifc, err := net.InterfaceByName(p.Ifname)
		if err != nil {
			return err
		}
		ifindex = ifc.Index
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifindex})
	})
	if err != nil {
		if fd > 0 {
			unix.Close(fd)
		}
		return 0, fmt.Errorf("sender at %s (%s/%s): %w", p.Name, p.NS, p.Ifname, err)
	}
	defer unix.Close(fd)
	n := 0
	for i := range frames {
		f := &frames[i]
		if f.Position != p.Name {
			continue
		}
		for _, w := range f.Wire {
			if err := ctx.Err(); err != nil {
				return n, err
			}
			sa := &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6}
			copy(sa.Addr[:], w[:6])
			for try := 0; ; try++ {
				err := unix.Sendto(fd, w, 0, sa)
				if err == nil {
					break
				}
				if !errors.Is(err, unix.ENOBUFS) && !errors.Is(err, unix.EAGAIN) || try > 50 {
					return n, fmt.Errorf("sending frame %d (%s %s) at %s: %w", f.ID, f.Class, f.Desc, p.Name, err)
				}
				time.Sleep(time.Millisecond)
			}
			n++
			time.Sleep(gap)
		}
	}
	return n, nil
}

// capture is an AF_PACKET socket of all interfaces of one namespace.
type capture struct {
	pt     CapturePoint
	fd     int
	ifname map[int]string
	pkts   []Packet
}

func openCapture(pt CapturePoint) (*capture, error) {
	c := &capture{pt: pt, fd: -1, ifname: map[int]string{}}
	err := nsexec.DoNamed(pt.NS, func() error {
		ifs, err := net.Interfaces()
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		c.fd = fd
		for _, ifc := range ifs {
			c.ifname[ifc.Index] = ifc.Name
			if pt.Kind == PointGuest && ifc.Flags&net.FlagLoopback == 0 {
				mr := unix.PacketMreq{Ifindex: int32(ifc.Index), Type: unix.PACKET_MR_PROMISC}
				if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mr); err != nil {
					return fmt.Errorf("promiscuous %s: %w", ifc.Name, err)
				}
			}
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20); err != nil {
			return fmt.Errorf("SO_RCVBUFFORCE: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
			return fmt.Errorf("PACKET_AUXDATA: %w", err)
		}
		tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		c.close()
		return nil, fmt.Errorf("capture in %s: %w", pt.NS, err)
	}
	return c, nil
}

// read collects frames until stop is closed (checked at least every 50 ms).
func (c *capture) read(stop <-chan struct{}) {
	buf := make([]byte, 65536)
	oob := make([]byte, 256)
	for {
		select {
		case <-stop:
			return
		default:
		}
		n, oobn, _, from, err := unix.Recvmsg(c.fd, buf, oob, 0)
		if err != nil {
			continue // timeout (EAGAIN) or EINTR
		}
		ll, _ := from.(*unix.SockaddrLinklayer)
		pk := Packet{Point: c.pt.NS, Kind: c.pt.Kind, Guest: c.pt.Guest, Data: append([]byte(nil), buf[:n]...)}
		if ll != nil {
			pk.Outgoing = ll.Pkttype == unix.PACKET_OUTGOING
			pk.Ifname = c.ifname[ll.Ifindex]
		}
		if n >= 16 {
			if et := binary.BigEndian.Uint16(buf[12:]); (et == tpid1Q || et == tpid1AD) && binary.BigEndian.Uint16(buf[14:])&0x0fff != 0 {
				pk.VLAN = true
			}
		}
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				// struct tpacket_auxdata: status, len, snaplen (u32), mac, net, vlan_tci, vlan_tpid (u16)
				if m.Header.Level == unix.SOL_PACKET && m.Header.Type == unix.PACKET_AUXDATA && len(m.Data) >= 20 {
					status := binary.NativeEndian.Uint32(m.Data[0:])
					tci := binary.NativeEndian.Uint16(m.Data[16:])
					if status&unix.TP_STATUS_VLAN_VALID != 0 && tci&0x0fff != 0 {
						pk.VLAN = true
					}
				}
			}
		}
		c.pkts = append(c.pkts, pk)
	}
}

// drops reads and resets the socket's drop counter.
func (c *capture) drops() uint64 {
	st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return 0
	}
	return uint64(st.Drops)
}

func (c *capture) close() {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}
