package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/config"
)

// inputPart is one file of an input: where its lines and documents start in the joined data.
type inputPart struct {
	file      string
	firstLine int // 1-based line of the joined data where the file starts
	lines     int
	firstDoc  int // documents (objects) of the files before it
	docs      int
}

// input is what -f names: one file, standard input, or every *.yaml and *.yml file of a
// directory (sorted by name) joined into one multi-document stream, so the controller applies
// them all in one transaction. parts map the joined stream's lines and documents back to the
// files (remap).
type input struct {
	name  string // as sent to the controller: the file, "<stdin>" or the directory
	data  []byte
	objs  []*config.Object // parsed locally (each file of a directory on its own)
	parts []inputPart
}

// readInputs reads -f PATH. Every file of a directory is parsed here first, so a bad document
// is reported as "FILE:LINE: document N: ..." of its own file, and an object given in two
// files is refused naming both; one file is left to the controller to parse (objects parses it
// when the caller needs them).
func readInputs(path string) (*input, error) {
	fi, err := os.Stat(path)
	if path == "" || path == "-" || err != nil || !fi.IsDir() {
		data, name, err := readInput(path)
		if err != nil {
			return nil, err
		}
		return &input{name: name, data: data}, nil
	}
	var files []string
	for _, pat := range []string{"*.yaml", "*.yml"} {
		m, err := filepath.Glob(filepath.Join(path, pat))
		if err != nil {
			return nil, fmt.Errorf("-f %s: %w", path, err)
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("-f %s: a directory without *.yaml or *.yml files", path)
	}
	in := &input{name: path}
	var buf bytes.Buffer
	var errs config.Errors
	first := map[config.Key]string{}
	line := 1
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		objs, err := config.Parse(f, data)
		if err != nil {
			errs = errs.Add(config.AsErrors(err)...)
			continue
		}
		for _, o := range objs {
			where := fmt.Sprintf("%s document %d", f, o.Source.Doc)
			if prev, dup := first[o.Key()]; dup {
				errs = errs.Add(&config.Error{File: f, Line: o.Source.Line, Doc: o.Source.Doc, Kind: o.Kind, Name: o.Metadata.Name,
					Msg: "given twice in -f " + path + " (first in " + prev + ")"})
				continue
			}
			first[o.Key()] = where
		}
		if len(data) > 0 && data[len(data)-1] != '\n' {
			data = append(data, '\n')
		}
		n := bytes.Count(data, []byte{'\n'})
		in.parts = append(in.parts, inputPart{file: f, firstLine: line, lines: n, firstDoc: len(in.objs), docs: len(objs)})
		buf.Write(data)
		buf.WriteString("---\n")
		line += n + 1
		in.objs = append(in.objs, objs...)
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	in.data = buf.Bytes()
	return in, nil
}

// objects returns the input's objects, parsing a single file now.
func (in *input) objects() ([]*config.Object, error) {
	if in.parts != nil {
		return in.objs, nil
	}
	return config.Parse(in.name, in.data)
}

// remap rewrites the controller's errors about the joined stream of a directory to name the
// file, its line and document; other errors are returned as they are.
func (in *input) remap(err error) error {
	var ce *client.Error
	if len(in.parts) == 0 || !errors.As(err, &ce) || len(ce.Errors) == 0 {
		return err
	}
	out := *ce
	out.Errors = make(config.Errors, len(ce.Errors))
	for i, e := range ce.Errors {
		c := *e
		if c.File == in.name {
			for _, p := range in.parts {
				if (c.Line >= p.firstLine && c.Line < p.firstLine+p.lines) || (c.Line == 0 && c.Doc > p.firstDoc && c.Doc <= p.firstDoc+p.docs) {
					c.File = p.file
					if c.Line > 0 {
						c.Line -= p.firstLine - 1
					}
					if c.Doc > 0 {
						c.Doc -= p.firstDoc
					}
					break
				}
			}
		}
		out.Errors[i] = &c
	}
	if len(out.Errors) == 1 {
		out.Message = out.Errors[0].Error()
	}
	return &out
}

// deleteOrder is the objects' keys in the order a delete takes them: the reverse of apply's
// (config.KindOrder: VMs before their segments, segments before their department), by name
// within a kind.
func deleteOrder(objs []*config.Object) []config.Key {
	keys := make([]config.Key, len(objs))
	for i, o := range objs {
		keys[i] = o.Key()
	}
	sort.SliceStable(keys, func(i, j int) bool {
		if a, b := config.KindOrder(keys[i].Kind), config.KindOrder(keys[j].Kind); a != b {
			return a > b
		}
		return strings.Compare(keys[i].Name, keys[j].Name) < 0
	})
	return keys
}
