package gobgp

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"

	"github.com/govcloud/govcloud/controlplane/bgp"
)

// TestLogAdapterLevels: GoBGP's lines reach slog at the level they deserve, passwords
// redacted; the per-route withdraw warning of a ToR session's end is debug.
func TestLogAdapterLevels(t *testing.T) {
	for _, tc := range []struct {
		name  string
		log   func(a *logAdapter)
		level slog.Level // the lowest level at which the line shows; 0 with want "" = never
		want  string
	}{
		{"a warning stays a warning", func(a *logAdapter) { a.Warn("hold timer expired", gobgplog.Fields{"Key": "198.51.100.1"}) }, slog.LevelWarn, "gobgp: hold timer expired"},
		{"never-installed withdraw is debug", func(a *logAdapter) {
			a.Warn("No matching path for withdraw found, may be path was not installed into table", gobgplog.Fields{"Key": "198.51.100.7/32"})
		}, slog.LevelDebug, "No matching path for withdraw"},
		{"an UPDATE line is debug", func(a *logAdapter) { a.Debug("sent update", gobgplog.Fields{"Key": "198.51.100.1"}) }, slog.LevelDebug, "sent update"},
		{"errors redact the password", func(a *logAdapter) { a.Error("bad md5 s3cret-pw", gobgplog.Fields{"Error": "s3cret-pw"}) }, slog.LevelError, "bad md5 <redacted>"},
	} {
		for _, lvl := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn} {
			var buf bytes.Buffer
			a := newLogAdapter(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: lvl})))
			a.setSecrets([]bgp.Peer{{Password: bgp.Secret("s3cret-pw")}})
			tc.log(a)
			shown := strings.Contains(buf.String(), tc.want)
			if want := lvl <= tc.level; shown != want {
				t.Errorf("%s at level %v: shown=%v, want %v; log: %q", tc.name, lvl, shown, want, buf.String())
			}
			if strings.Contains(buf.String(), "s3cret-pw") {
				t.Errorf("%s: the password reached the log: %q", tc.name, buf.String())
			}
		}
	}
}
