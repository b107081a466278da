package gobgp

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"

	"github.com/govcloud/govcloud/controlplane/bgp"
)

// logAdapter forwards GoBGP's log lines to slog with every known password redacted, and
// remembers, per peer, the last reason a session went down or could not be opened.
type logAdapter struct {
	log *slog.Logger

	mu      sync.Mutex
	secrets []string
	reasons map[string]string
}

var _ gobgplog.Logger = (*logAdapter)(nil)

func newLogAdapter(l *slog.Logger) *logAdapter {
	return &logAdapter{log: l, reasons: map[string]string{}}
}

func (a *logAdapter) setSecrets(peers []bgp.Peer) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.secrets = a.secrets[:0]
	for _, p := range peers {
		if p.Password != "" {
			a.secrets = append(a.secrets, p.Password.Reveal())
		}
	}
}

func (a *logAdapter) forget(peer string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.reasons, peer)
}

func (a *logAdapter) redact(s string) string {
	for _, sec := range a.secrets {
		s = strings.ReplaceAll(s, sec, "<redacted>")
	}
	return s
}

// reason explains why the session to peer is not established.
func (a *logAdapter) reason(peer string, md5 bool) string {
	a.mu.Lock()
	r := a.reasons[peer]
	a.mu.Unlock()
	var parts []string
	if r != "" {
		parts = append(parts, r)
	}
	if md5 {
		if n := md5Failures(); n > 0 {
			parts = append(parts, fmt.Sprintf("kernel rejected %d TCP segments with a bad MD5 signature (TCPMD5Failure): the peer's password differs", n))
		}
		parts = append(parts, "no session: check the TCP-MD5 password and peer reachability")
	} else {
		parts = append(parts, "no session: check peer reachability, its ASN and its configuration for this address")
	}
	return strings.Join(parts, "; ")
}

func (a *logAdapter) note(msg string, f gobgplog.Fields) {
	key, _ := f["Key"].(string)
	if key == "" {
		return
	}
	var r string
	switch msg {
	case "Peer Up":
		a.mu.Lock()
		delete(a.reasons, key)
		a.mu.Unlock()
		return
	case "Peer Down":
		r = fmt.Sprintf("session went down: %v", f["Reason"])
	case "failed to connect":
		r = fmt.Sprintf("connecting: %v", f["Error"])
	case "received notification", "sent notification":
		r = fmt.Sprintf("%s: code %v subcode %v", msg, f["Code"], f["Subcode"])
		if c, _ := f["Communicated-Reason"].(string); c != "" {
			r += " " + strconv.Quote(c)
		}
	case "hold timer expired":
		r = msg
	default:
		return
	}
	a.mu.Lock()
	a.reasons[key] = a.redact(r)
	a.mu.Unlock()
}

func (a *logAdapter) emit(level slog.Level, msg string, f gobgplog.Fields) {
	a.note(msg, f)
	if !a.log.Enabled(context.Background(), level) {
		return
	}
	a.mu.Lock()
	attrs := make([]slog.Attr, 0, len(f))
	for k, v := range f {
		if k == "Topic" {
			continue
		}
		attrs = append(attrs, slog.String(strings.ToLower(k), a.redact(fmt.Sprint(v))))
	}
	msg = a.redact(msg)
	a.mu.Unlock()
	a.log.LogAttrs(context.Background(), level, "gobgp: "+msg, attrs...)
}

func (a *logAdapter) Panic(msg string, f gobgplog.Fields) {
	a.emit(slog.LevelError, msg, f)
	panic(msg)
}
func (a *logAdapter) Fatal(msg string, f gobgplog.Fields) {
	a.emit(slog.LevelError, msg, f)
	os.Exit(1)
}
func (a *logAdapter) Error(msg string, f gobgplog.Fields) { a.emit(slog.LevelError, msg, f) }
func (a *logAdapter) Warn(msg string, f gobgplog.Fields) {
	if strings.HasPrefix(msg, withdrawNotFound) {
		a.Debug(msg, f)
		return
	}
	a.emit(slog.LevelWarn, msg, f)
}

// withdrawNotFound starts the warning GoBGP logs for each route of a peer whose session ends
// that was never installed: every route a ToR sends back is rejected by the import policy, so
// a ToR session's end logged one warning per VIP. It is debug here.
const withdrawNotFound = "No matching path for withdraw found"

func (a *logAdapter) Info(msg string, f gobgplog.Fields) { a.emit(slog.LevelInfo, msg, f) }
func (a *logAdapter) Debug(msg string, f gobgplog.Fields) {
	// GoBGP logs every UPDATE at debug level; only the lines that explain a session's state
	// are kept unless slog's debug level is on.
	switch msg {
	case "failed to connect":
		a.note(msg, f)
	}
	if a.log.Enabled(context.Background(), slog.LevelDebug) {
		a.emit(slog.LevelDebug, msg, f)
	}
}
func (a *logAdapter) SetLevel(gobgplog.LogLevel) {}

// GetLevel is debug so connection failures reach note; Debug drops the rest cheaply.
func (a *logAdapter) GetLevel() gobgplog.LogLevel { return gobgplog.DebugLevel }

// md5Failures reads the kernel's TCPMD5Failure counter for this network namespace.
func md5Failures() int64 {
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return 0
	}
	lines := strings.Split(string(b), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(vals) != len(names) {
			continue
		}
		for j, n := range names {
			if n == "TCPMD5Failure" {
				v, _ := strconv.ParseInt(vals[j], 10, 64)
				return v
			}
		}
	}
	return 0
}
