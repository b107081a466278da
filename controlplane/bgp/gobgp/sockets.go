package gobgp

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// sessionKeys identifies this speaker's BGP TCP sockets: connected to a peer address, either
// on the peer's port (we dialled) or on our listen port (the peer dialled).
type sessionKeys struct {
	listenPort int
	listener   bool // the listening socket too
	peers      map[netip.Addr]int
}

func (k sessionKeys) match(local, remote netip.AddrPort) bool {
	port, ok := k.peers[remote.Addr().Unmap()]
	return ok && (int(remote.Port()) == port || int(local.Port()) == k.listenPort)
}

// shutdownSessions shuts down (both directions) this process's BGP listener and established
// BGP sockets, so
// the peer sees a FIN and nothing more: GoBGP's Cease NOTIFICATION that follows fails to be
// written. It finds the sockets through /proc (the kernel's TCP table for this namespace,
// then this process's file descriptors); it returns how many it shut.
func shutdownSessions(k sessionKeys) (int, error) {
	inodes := map[uint64]bool{}
	for _, f := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		if err := scanTCP(f, k, inodes); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
	}
	if len(inodes) == 0 {
		return 0, nil
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, fmt.Errorf("listing /proc/self/fd: %w", err)
	}
	n := 0
	var errs []error
	for _, e := range fds {
		link, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil || !strings.HasPrefix(link, "socket:[") {
			continue
		}
		ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 64)
		if err != nil || !inodes[ino] {
			continue
		}
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// Re-check the descriptor still is that socket before touching it.
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Ino != ino {
			continue
		}
		if err := unix.Shutdown(fd, unix.SHUT_RDWR); err != nil && !errors.Is(err, unix.ENOTCONN) {
			errs = append(errs, fmt.Errorf("shutdown of BGP socket fd %d: %w", fd, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

const (
	tcpEstablished = "01"
	tcpListen      = "0A"
)

func scanTCP(path string, k sessionKeys, inodes map[uint64]bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 {
			continue
		}
		local, err1 := parseProcAddr(fs[1])
		remote, err2 := parseProcAddr(fs[2])
		if err1 != nil || err2 != nil {
			continue
		}
		// Established sessions to our peers, and our listener: shut so no peer can dial in
		// between the sessions closing and the server stopping (it would get a Cease).
		ours := (fs[3] == tcpEstablished && k.match(local, remote)) ||
			(k.listener && fs[3] == tcpListen && int(local.Port()) == k.listenPort)
		if !ours {
			continue
		}
		if ino, err := strconv.ParseUint(fs[9], 10, 64); err == nil && ino != 0 {
			inodes[ino] = true
		}
	}
	return sc.Err()
}

// parseProcAddr decodes /proc/net/tcp's "0100007F:00B3" (address words in host byte order,
// which is little endian on the platforms we run on).
func parseProcAddr(s string) (netip.AddrPort, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	raw, err := hex.DecodeString(h)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port in %q", s)
	}
	a, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), nil
}
