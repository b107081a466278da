// Package buildinfo says which build of govcloud is running: the version, commit and date
// stamped by the Makefile (-ldflags -X), else what the Go toolchain recorded
// (runtime/debug.ReadBuildInfo), and the SHA-256 of the eBPF objects compiled in.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Set with -ldflags "-X github.com/govcloud/govcloud/internal/buildinfo.version=..." (see the
// Makefile); empty: taken from the Go build information.
var (
	version   string
	commit    string
	date      string
	bpfSHA256 string
)

// Info is one build.
type Info struct {
	Version   string `json:"version"`              // e.g. v0.3.0, or "devel"
	Commit    string `json:"commit"`               // git commit (with "-dirty" for a modified tree), or "unknown"
	Date      string `json:"date"`                 // commit or build time, RFC 3339, or "unknown"
	Go        string `json:"go"`                   // Go toolchain, e.g. go1.26.8
	Platform  string `json:"platform"`             // GOOS/GOARCH
	BPFSHA256 string `json:"bpfObjectsSha256"`     // SHA-256 over the committed eBPF objects, or "unknown"
	Module    string `json:"modVersion,omitempty"` // the module version Go recorded ("(devel)" from a checkout)
}

// Short is the build in a few words, "VERSION (COMMIT)": what hosts report, so version skew
// between them and the controller shows in 'govcloud status'.
func (i Info) Short() string { return i.Version + " (" + i.Commit + ")" }

// Get returns this binary's build.
func Get() Info {
	in := Info{Version: version, Commit: commit, Date: date, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH, BPFSHA256: bpfSHA256}
	if bi, ok := debug.ReadBuildInfo(); ok {
		in.Module = bi.Main.Version
		in.Go = bi.GoVersion
		var rev, when, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if in.Commit == "" && rev != "" {
			in.Commit = rev + dirty
		}
		if in.Date == "" {
			in.Date = when
		}
		if in.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			in.Version = bi.Main.Version
		}
	}
	for _, f := range []*string{&in.Commit, &in.Date, &in.BPFSHA256} {
		if *f == "" {
			*f = "unknown"
		}
	}
	if in.Version == "" {
		in.Version = "devel"
	}
	return in
}
