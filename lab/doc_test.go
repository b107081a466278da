package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/dataplane/netnstest"
)

// Docs that run (issue 22): every fenced shell command of README.md and deploy/README.md runs
// here against the running lab, so a doc cannot drift from what the CLI does. Each fence
// carries a marker in an HTML comment on the line before it (invisible when rendered):
//
//	<!-- doctest: lab -->           every command runs against the lab
//	<!-- doctest: run -->           every command runs as is, no lab needed
//	<!-- doctest: skip: REASON -->  none runs (the subtests say why)
//	<!-- doctest: file NAME -->     (on a YAML fence) the snippet is written to NAME first
//
// A shell fence without a marker fails the test. The exceptions inside a block are docOverrides
// below, each with its reason; an override that no command matches fails too (stale).
//
// Commands run with bash in a scratch directory holding a copy of deploy/ (so examples are
// found and nothing in the repository changes), as root (a "sudo " is dropped), with the
// test's govcloud first on PATH, and with the lab's paths in place of the documented ones:
// /var/lib/govcloud-lab is the test lab's directory (GOVCLOUD_CA is set to its CA, which the
// CLI finds by itself at the default place), DIR/ its controller's data dir,
// /mnt/other-site/govcloud and /var/lib/govcloud-new scratch directories, FILE the newest
// backup there. An `export` line stays in force for the later commands of its file.

// docOverride is how one documented command runs when not plainly.
type docOverride struct {
	skip    string // the reason it cannot run in a test
	instead string // runs this instead (the reason in why)
	why     string
	fails   string // the command must fail with this in its output (the doc says it is refused)
	want    string // the output must contain this
	repo    bool   // runs in the repository itself (build targets)
}

// docOverrides is keyed by the command as documented, without its trailing comment.
var docOverrides = map[string]docOverride{
	"prometheus --config.file=deploy/prometheus/prometheus.yml": {instead: "promtool check config --syntax-only deploy/prometheus/prometheus.yml",
		why: "the server runs until stopped: its configuration is checked with promtool instead (syntax only: the token file and target files are the site's)"},
	"sudo make bench-metering": {skip: "a benchmark of minutes that wants the machine to itself"},
	"sudo make generate":       {skip: "rewrites the committed eBPF objects (CI's 'make check-generate' runs it)"},
	"sudo make bench-lb":       {skip: "a benchmark of minutes that wants the machine to itself"},
	"go vet ./...":             {skip: "minutes on two cores; CI and every commit run it"},
	"make build":               {repo: true, want: ""},
	"govcloud delete segment lands-web": {fails: "cannot delete: still used by",
		why: "the doc says it is refused while VMs or services use it (the lab's do)"},
	"govcloud token revoke --id tok_0123456789abcdef": {fails: "tok_0123456789abcdef",
		why: "the id is an example: an id no token has is refused, naming it"},
	"govcloud agent --host host1 --join-token-file FILE": {skip: "an agent runs until stopped, as root on its own host; the lab's agents joined this way (TestLab checks their logs)"},
	"govcloud cert revoke --host host1": {fails: `certificates of host "host1": none unrevoked found`,
		why: "no agent joined as host1 in the lab (revoking gc-host1 would cut a lab agent off)"},
	"govcloud controller ... --backup-dir DIR --backup-interval 1h --backup-keep 48 --metrics-listen 127.0.0.1:9482": {
		skip: "starts a controller ('...' stands for the flags above); TestBackupRestore in controlplane/e2e runs one with --backup-dir"},
	// What the drain walk-through must show.
	"govcloud get services finance-www": {want: "finance-web-1(w"},
	"govcloud status":                   {want: "host gc-host1"},
	"govcloud apply -f finance.yaml":    {want: "revision"},
}

// docDocs are the documents whose commands run.
var docDocs = []string{"../README.md", "../deploy/README.md"}

type docCmd struct {
	file string
	line int
	text string // as documented, comment stripped
	mode string // lab | run | skip
	why  string // the block's skip reason
}

type docFile struct{ name, text string }

var (
	markerRE  = regexp.MustCompile(`^<!--\s*doctest:\s*(.*?)\s*-->$`)
	fenceRE   = regexp.MustCompile("^\\s*```\\s*([A-Za-z]*)")
	commentRE = regexp.MustCompile(`\s+#(\s.*)?$`)
)

// docBlocks reads the shell commands and the YAML files to write of the docs; problems with
// markers are test errors.
func docBlocks(t *testing.T) ([]docCmd, []docFile) {
	t.Helper()
	var cmds []docCmd
	var files []docFile
	for _, d := range docDocs {
		b, err := os.ReadFile(d)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(d, "../")
		lines := strings.Split(string(b), "\n")
		for i := 0; i < len(lines); i++ {
			m := fenceRE.FindStringSubmatch(lines[i])
			if m == nil {
				continue
			}
			lang, open := m[1], i
			marker := ""
			for j := i - 1; j >= 0 && j >= i-2; j-- {
				if mm := markerRE.FindStringSubmatch(strings.TrimSpace(lines[j])); mm != nil {
					marker = mm[1]
					break
				}
				if strings.TrimSpace(lines[j]) != "" {
					break
				}
			}
			var body []string
			for i++; i < len(lines) && fenceRE.FindStringSubmatch(lines[i]) == nil; i++ {
				body = append(body, lines[i])
			}
			switch lang {
			case "yaml", "yml":
				if f, ok := strings.CutPrefix(marker, "file "); ok {
					files = append(files, docFile{name: strings.TrimSpace(f), text: strings.Join(body, "\n") + "\n"})
				}
				continue
			case "sh", "bash", "shell", "console":
			default:
				continue
			}
			mode, why := marker, ""
			if r, ok := strings.CutPrefix(marker, "skip:"); ok {
				mode, why = "skip", strings.TrimSpace(r)
			}
			if mode != "lab" && mode != "run" && mode != "skip" {
				t.Errorf("%s:%d: shell fence without a doctest marker (want <!-- doctest: lab|run|skip: REASON --> on the line before), got %q", name, open+1, marker)
				continue
			}
			for k := 0; k < len(body); k++ {
				text, line := strings.TrimSpace(body[k]), open+2+k
				for strings.HasSuffix(text, "\\") && k+1 < len(body) {
					k++
					text = strings.TrimSuffix(text, "\\") + " " + strings.TrimSpace(body[k])
				}
				if text == "" || strings.HasPrefix(text, "#") {
					continue
				}
				cmds = append(cmds, docCmd{file: name, line: line, text: strings.TrimSpace(commentRE.ReplaceAllString(text, "")), mode: mode, why: why})
			}
		}
	}
	return cmds, files
}

// TestDocMarkers checks the docs' markers and overrides without a lab (no root needed).
func TestDocMarkers(t *testing.T) {
	cmds, files := docBlocks(t)
	seen := map[string]bool{}
	for _, c := range cmds {
		seen[c.text] = true
	}
	for k := range docOverrides {
		if !seen[k] {
			t.Errorf("doc override %q matches no documented command (stale: the doc changed)", k)
		}
	}
	if len(files) == 0 || len(cmds) < 20 {
		t.Errorf("found %d commands and %d files in %v", len(cmds), len(files), docDocs)
	}
}

// docCommands runs the documented commands against the lab in dir (up) with the CLI bin.
func docCommands(t *testing.T, bin, dir string) {
	cmds, files := docBlocks(t)
	scratch := t.TempDir()
	if out, err := exec.Command("cp", "-a", "../deploy", scratch).CombinedOutput(); err != nil {
		t.Fatalf("copying deploy/: %v %s", err, out)
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(scratch, f.name), []byte(f.text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	repo, _ := filepath.Abs("..")
	otherSite := filepath.Join(scratch, "other-site")
	subst := func(s string) string {
		s = regexp.MustCompile(`\bsudo\s+`).ReplaceAllString(s, "")
		s = strings.ReplaceAll(s, DefaultDir, dir)
		s = regexp.MustCompile(`\bDIR/`).ReplaceAllString(s, filepath.Join(dir, "controller")+"/")
		s = strings.ReplaceAll(s, "/mnt/other-site/govcloud", otherSite)
		s = strings.ReplaceAll(s, "/var/lib/govcloud-new", filepath.Join(scratch, "govcloud-new"))
		if strings.Contains(s, "FILE") {
			backups, _ := filepath.Glob(filepath.Join(otherSite, "*.gcbackup"))
			sort.Strings(backups)
			if len(backups) > 0 {
				s = regexp.MustCompile(`\bFILE\b`).ReplaceAllString(s, backups[len(backups)-1])
			}
		}
		return s
	}
	env := append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"), "GOVCLOUD_CA="+filepath.Join(dir, "controller", "ca.crt"))
	env = slicesDeleteEnv(env, "GOVCLOUD_TOKEN", "GOVCLOUD_API")
	prelude := map[string][]string{} // exports in force, per doc
	for _, c := range cmds {
		t.Run(fmt.Sprintf("%s:%d", c.file, c.line), func(t *testing.T) {
			o, hasOverride := docOverrides[c.text]
			switch {
			case c.mode == "skip":
				t.Skipf("%s: %s", c.text, c.why)
			case o.skip != "":
				t.Skipf("%s: %s", c.text, o.skip)
			}
			run := c.text
			if o.instead != "" {
				t.Logf("%s: %s; running %q", c.text, o.why, o.instead)
				run = o.instead
			}
			run = subst(run)
			cwd := scratch
			if o.repo {
				cwd = repo
			}
			script := "set -o pipefail\n" + strings.Join(prelude[c.file], "\n") + "\n" + run + "\n"
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "bash", "-c", script)
			cmd.Dir, cmd.Env = cwd, env
			out, err := cmd.CombinedOutput()
			t.Logf("$ %s\n%s", run, out)
			switch {
			case hasOverride && o.fails != "":
				if err == nil || !strings.Contains(string(out), o.fails) {
					t.Fatalf("%s: documented as refused (%s); got err=%v, output lacks %q", c.text, o.why, err, o.fails)
				}
			case err != nil:
				t.Fatalf("%s:%d: %s: %v\n%s", c.file, c.line, c.text, err, out)
			case o.want != "" && !strings.Contains(string(out), o.want):
				t.Fatalf("%s: output lacks %q", c.text, o.want)
			}
			if strings.HasPrefix(c.text, "export ") {
				prelude[c.file] = append(prelude[c.file], run)
			}
		})
	}
}

func slicesDeleteEnv(env []string, names ...string) []string {
	out := env[:0:0]
	for _, e := range env {
		keep := true
		for _, n := range names {
			if strings.HasPrefix(e, n+"=") {
				keep = false
			}
		}
		if keep {
			out = append(out, e)
		}
	}
	return out
}

// TestLabDocs brings a lab up, runs the docs' commands and takes it down: TestLab does the
// same inside its run; this one is for iterating on the docs alone (GOVCLOUD_LAB_DOCS=1).
func TestLabDocs(t *testing.T) {
	if os.Getenv("GOVCLOUD_LAB_DOCS") == "" {
		t.Skip("TestLab runs the docs' commands; set GOVCLOUD_LAB_DOCS=1 to run them on a lab of their own")
	}
	netnstest.RequirePrivileged(t)
	if len(labNamespaces()) > 0 {
		t.Fatalf("a lab is already running here (%v)", labNamespaces())
	}
	dir := filepath.Join(t.TempDir(), "lab")
	bin, run := labCLI(t, dir)
	if _, err := run("up"); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	docCommands(t, bin, dir)
	if _, err := run("down"); err != nil {
		t.Fatalf("lab down: %v", err)
	}
}
