package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/govcloud/govcloud/controlplane/pki"
)

// Embedded is a single-node etcd server running inside this process.
//
// It is reachable only with credentials: clients connect through the unix socket
// DIR/etcd.sock, inside the 0700 data directory, so only the data directory's owner (root)
// can open it; the peer port (loopback TCP, required by etcd even for one member) speaks TLS
// and accepts only a client certificate of a CA made for it at each start, whose key never
// leaves the data directory.
type Embedded struct {
	Endpoint string // client URL: unix:///DIR/etcd.sock
	etcd     *embed.Etcd
}

type ports struct {
	Client int `json:"client,omitempty"` // unused since the client socket is a unix socket
	Peer   int `json:"peer"`
}

// EmbeddedOptions tune the embedded server.
type EmbeddedOptions struct {
	NoFsync bool // tests only: skip fsync (a crashed process still loses nothing; a crashed machine may)
}

// SocketFile is the embedded etcd's client socket under the data directory.
const SocketFile = "etcd.sock"

// Layout of the embedded etcd under the data directory (restore builds the same).
const (
	EtcdSubdir     = "etcd"            // etcd's data directory
	EmbeddedMember = "govcloud"        // the single member's name
	portsFile      = "etcd-ports.json" // the loopback peer port, chosen once
)

// WritePeerPort chooses a free loopback port for the embedded etcd's peer listener, records it
// in dir/etcd-ports.json (0600) and returns the peer URL (https://127.0.0.1:PORT).
func WritePeerPort(dir string) (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	b, _ := json.Marshal(ports{Peer: port})
	pf := filepath.Join(dir, portsFile)
	if err := os.WriteFile(pf, b, 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", pf, err)
	}
	return fmt.Sprintf("https://127.0.0.1:%d", port), nil
}

// maxSocketPath is the longest unix socket path Linux takes (sun_path is 108 bytes).
const maxSocketPath = 107

// StartEmbedded starts a single-node etcd with its data under dir/etcd. dir is made 0700 and
// must not be readable by others (the socket's protection is the directory's). The loopback
// peer port is chosen on first start and kept in dir/etcd-ports.json so restarts reuse it.
func StartEmbedded(dir string, log *slog.Logger, opt EmbeddedOptions) (*Embedded, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		// The socket is as private as its directory: close the directory to others.
		if err := os.Chmod(dir, fi.Mode().Perm()&0o700); err != nil {
			return nil, fmt.Errorf("data dir %s: make it private (0700): %w", dir, err)
		}
		log.Warn("data dir was open to other users; made it 0700", "dir", dir, "was", fi.Mode().Perm().String())
	}
	sock := filepath.Join(dir, SocketFile)
	if len(sock) > maxSocketPath {
		return nil, fmt.Errorf("embedded etcd socket %s: path longer than %d bytes; use a shorter --data-dir", sock, maxSocketPath)
	}
	_ = os.Remove(sock) // a socket left by a killed process
	pf := filepath.Join(dir, portsFile)
	var p ports
	if b, err := os.ReadFile(pf); err == nil {
		if err := json.Unmarshal(b, &p); err != nil {
			return nil, fmt.Errorf("%s: %w", pf, err)
		}
	} else if errors.Is(err, os.ErrNotExist) {
		if _, err := WritePeerPort(dir); err != nil {
			return nil, err
		}
		return StartEmbedded(dir, log, opt)
	} else {
		return nil, err
	}
	peerTLS, err := peerCerts(filepath.Join(dir, "etcd-peer"))
	if err != nil {
		return nil, err
	}
	cu := url.URL{Scheme: "unix", Path: sock}
	pu, _ := url.Parse(fmt.Sprintf("https://127.0.0.1:%d", p.Peer))
	cfg := embed.NewConfig()
	cfg.Name = EmbeddedMember
	cfg.Dir = filepath.Join(dir, EtcdSubdir)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.PeerTLSInfo = peerTLS
	cfg.InitialCluster = "govcloud=" + pu.String()
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	cfg.MaxTxnOps = 1 << 20
	cfg.MaxRequestBytes = 64 << 20
	cfg.UnsafeNoFsync = opt.NoFsync
	cfg.AutoCompactionMode = embed.CompactorModeRevision
	cfg.AutoCompactionRetention = "10000"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s on %s: %w", cfg.Dir, cu.String(), err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s: not ready after 30s", cfg.Dir)
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s: %w", cfg.Dir, err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		e.Close()
		return nil, fmt.Errorf("embedded etcd socket %s: %w", sock, err)
	}
	log.Info("embedded etcd ready", "dir", cfg.Dir, "endpoint", cu.String())
	return &Embedded{Endpoint: cu.String(), etcd: e}, nil
}

// peerCerts makes, at every start, a CA and one certificate it signs for the peer listener
// (server and client use), in dir (0700, files 0600). The peer listener requires a client
// certificate of that CA, so nobody but this process can speak raft to it.
func peerCerts(dir string) (transport.TLSInfo, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return transport.TLSInfo{}, fmt.Errorf("etcd peer certificates %s: %w", dir, err)
	}
	ca, err := pki.NewCA("govcloud embedded etcd peer CA", 10*365*24*time.Hour)
	if err != nil {
		return transport.TLSInfo{}, err
	}
	cert, key, err := ca.PeerCert([]string{"127.0.0.1", "localhost"}, 10*365*24*time.Hour)
	if err != nil {
		return transport.TLSInfo{}, err
	}
	files := map[string][]byte{"ca.crt": ca.CertPEM, "peer.crt": cert, "peer.key": key}
	for name, b := range files {
		if err := pki.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return transport.TLSInfo{}, err
		}
	}
	return transport.TLSInfo{
		CertFile:       filepath.Join(dir, "peer.crt"),
		KeyFile:        filepath.Join(dir, "peer.key"),
		TrustedCAFile:  filepath.Join(dir, "ca.crt"),
		ClientCertAuth: true,
	}, nil
}

// Close stops the server.
func (e *Embedded) Close() { e.etcd.Close() }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free loopback port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
