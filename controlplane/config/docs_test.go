package config_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/govcloud/govcloud/controlplane/alloc"
	"github.com/govcloud/govcloud/controlplane/config"
)

// Docs that run (issue 22): every YAML snippet of the README and deploy/README.md is parsed
// and validated, on top of the lab's configuration (the snippets add to the lab), and
// allocated as the controller would; so are the example files. A doc naming a field that does
// not exist (the README's healthCheck "thresholds") fails here.

var docs = []string{"../../README.md", "../../deploy/README.md"}

// snippet is one fenced YAML block of a doc.
type snippet struct {
	file string
	line int // of the opening fence
	text string
}

var fenceRE = regexp.MustCompile("^\\s*```\\s*([A-Za-z]*)")

func yamlSnippets(t *testing.T) []snippet {
	t.Helper()
	var out []snippet
	for _, d := range docs {
		b, err := os.ReadFile(d)
		if err != nil {
			t.Fatal(err)
		}
		var cur *snippet
		var body []string
		for i, l := range strings.Split(string(b), "\n") {
			m := fenceRE.FindStringSubmatch(l)
			switch {
			case m != nil && cur == nil && (m[1] == "yaml" || m[1] == "yml"):
				cur, body = &snippet{file: filepath.Base(d), line: i + 1}, nil
			case m != nil && cur == nil && m[1] != "":
				cur = &snippet{line: -1} // another language: skipped to its end
			case m != nil && cur != nil:
				if cur.line > 0 {
					cur.text = strings.Join(body, "\n") + "\n"
					out = append(out, *cur)
				}
				cur = nil
			case m != nil: // an unlabelled fence opens a block of text (diagrams, output)
				cur = &snippet{line: -1}
			case cur != nil:
				body = append(body, l)
			}
		}
		if cur != nil {
			t.Fatalf("%s: fence opened at line %d never closed", d, cur.line)
		}
	}
	return out
}

func parseFile(t *testing.T, path string) []*config.Object {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := config.Parse(filepath.Base(path), b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return objs
}

// onLab validates objs on top of the lab's configuration (already stored: no sources) and
// allocates, as an apply to the running lab would.
func onLab(t *testing.T, objs []*config.Object) error {
	t.Helper()
	st := config.NewState()
	for _, o := range parseFile(t, "../../deploy/examples/lab/lab.yaml") {
		o.Source = nil
		st.Objects[o.Key()] = o
	}
	if err := alloc.Allocate(st, alloc.DefaultConfig()).Err(); err != nil {
		t.Fatalf("the lab's own configuration: %v", err)
	}
	for _, o := range objs {
		st.Objects[o.Key()] = o
	}
	if err := config.Validate(st).Err(); err != nil {
		return err
	}
	return alloc.Allocate(st, alloc.DefaultConfig()).Err()
}

func TestDocYAMLSnippetsValidate(t *testing.T) {
	snips := yamlSnippets(t)
	if len(snips) < 2 {
		t.Fatalf("found %d YAML snippets in %v: the tour and the lab's Add a department at least", len(snips), docs)
	}
	for _, s := range snips {
		name := s.file + ":" + strconv.Itoa(s.line)
		t.Run(name, func(t *testing.T) {
			// Errors name the doc and the snippet's line; their lines count from the fence.
			objs, err := config.Parse(name+" (snippet)", []byte(s.text))
			if err != nil {
				t.Fatalf("does not parse: %v", err)
			}
			if err := onLab(t, objs); err != nil {
				t.Fatalf("does not validate on top of the lab: %v", err)
			}
		})
	}
}

func TestExampleFiles(t *testing.T) {
	// more-departments.yaml adds to the lab.
	if err := onLab(t, parseFile(t, "../../deploy/examples/more-departments.yaml")); err != nil {
		t.Errorf("more-departments.yaml on top of the lab: %v", err)
	}
	// departments.yaml is for a fresh controller: valid alone, and refused on the lab in the
	// way its header says.
	st := config.NewState()
	for _, o := range parseFile(t, "../../deploy/examples/departments.yaml") {
		st.Objects[o.Key()] = o
	}
	if err := config.Validate(st).Err(); err != nil {
		t.Errorf("departments.yaml alone: %v", err)
	} else if err := alloc.Allocate(st, alloc.DefaultConfig()).Err(); err != nil {
		t.Errorf("departments.yaml alone: %v", err)
	}
	err := onLab(t, parseFile(t, "../../deploy/examples/departments.yaml"))
	if want := `spec.address "198.18.0.11": address already used by host "gc-host1"`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("departments.yaml on the lab: %v; its header says it is refused with %q", err, want)
	}
	b, _ := os.ReadFile("../../deploy/examples/departments.yaml")
	if !strings.Contains(string(b), `spec.address "198.18.0.11": address already used by host "gc-host1"`) {
		t.Error("departments.yaml's header no longer says why it is not for the lab")
	}
}

// The README's old tour named a field that was refused: the test above catches it, this pins
// the message a user gets.
func TestUnknownHealthCheckFieldNamesTheRightOnes(t *testing.T) {
	y := "apiVersion: govcloud/v1\nkind: Service\nmetadata: {name: s}\nspec: {department: d, ports: [{port: 80}], healthCheck: {type: tcp, thresholds: 3}}\n"
	_, err := config.Parse("in.yaml", []byte(y))
	if err == nil || !strings.Contains(err.Error(), "spec.healthCheck.thresholds: unknown field (want one of type, port, path, interval, timeout, healthyThreshold, unhealthyThreshold)") {
		t.Fatalf("error %v", err)
	}
}
