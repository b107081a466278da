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

	"go.etcd.io/etcd/server/v3/embed"
)

// Embedded is a single-node etcd server running inside this process.
type Embedded struct {
	Endpoint string // client URL, e.g. http://127.0.0.1:41234
	etcd     *embed.Etcd
}

type ports struct {
	Client int `json:"client"`
	Peer   int `json:"peer"`
}

// EmbeddedOptions tune the embedded server.
type EmbeddedOptions struct {
	NoFsync bool // tests only: skip fsync (a crashed process still loses nothing; a crashed machine may)
}

// StartEmbedded starts a single-node etcd with its data under dir/etcd. The loopback ports it
// listens on are chosen on first start and kept in dir/etcd-ports.json so restarts reuse them.
func StartEmbedded(dir string, log *slog.Logger, opt EmbeddedOptions) (*Embedded, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	pf := filepath.Join(dir, "etcd-ports.json")
	var p ports
	if b, err := os.ReadFile(pf); err == nil {
		if err := json.Unmarshal(b, &p); err != nil {
			return nil, fmt.Errorf("%s: %w", pf, err)
		}
	} else if errors.Is(err, os.ErrNotExist) {
		if p.Client, err = freePort(); err != nil {
			return nil, err
		}
		if p.Peer, err = freePort(); err != nil {
			return nil, err
		}
		b, _ := json.Marshal(p)
		if err := os.WriteFile(pf, b, 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", pf, err)
		}
	} else {
		return nil, err
	}
	cu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", p.Client))
	pu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", p.Peer))
	cfg := embed.NewConfig()
	cfg.Name = "govcloud"
	cfg.Dir = filepath.Join(dir, "etcd")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
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
		return nil, fmt.Errorf("start embedded etcd in %s on %s: %w", cfg.Dir, cu, err)
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
	log.Info("embedded etcd ready", "dir", cfg.Dir, "endpoint", cu.String())
	return &Embedded{Endpoint: cu.String(), etcd: e}, nil
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
