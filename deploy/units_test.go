package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPreflightSeesWhatTheDaemonSees: a unit's ExecStartPre preflight (--check) gets the
// daemon's own settings (its arguments variable and every --state-dir, --pin-root or
// --cert-dir of ExecStart): the agent's preflight looked for the host certificate under the
// default state dir, so a host whose used join token was deleted failed every start.
func TestPreflightSeesWhatTheDaemonSees(t *testing.T) {
	units, err := filepath.Glob("systemd/*.service")
	if err != nil || len(units) == 0 {
		t.Fatalf("no units: %v", err)
	}
	checked := 0
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		var pre, start string
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "ExecStartPre="); ok && strings.Contains(v, "--check") {
				pre = v
			}
			if v, ok := strings.CutPrefix(l, "ExecStart="); ok {
				start = v
			}
		}
		if pre == "" {
			continue
		}
		checked++
		f := strings.Fields(start)
		for i, a := range f {
			switch {
			case (a == "--state-dir" || a == "--pin-root" || a == "--cert-dir") && i+1 < len(f):
				if !strings.Contains(pre, a+" "+f[i+1]) {
					t.Errorf("%s: ExecStart has %s %s, its preflight does not:\n  %s", u, a, f[i+1], pre)
				}
			case strings.HasPrefix(a, "$"):
				if !strings.Contains(pre, a) {
					t.Errorf("%s: ExecStart takes %s, its preflight does not:\n  %s", u, a, pre)
				}
			}
		}
	}
	if checked == 0 {
		t.Error("no unit runs a --check preflight (the agent's did)")
	}
}
