package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxInput bounds the size of one apply.
const MaxInput = 32 << 20

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

// Parse decodes every document of a YAML (or JSON) file into objects. It rejects invalid
// YAML, unknown kinds, unknown fields, values of the wrong type, and objects given twice,
// then validates each object on its own (Validate checks the objects together). file only
// labels errors.
func Parse(file string, data []byte) ([]*Object, error) {
	if len(data) > MaxInput {
		return nil, Errors{{File: file, Msg: fmt.Sprintf("input is %d bytes, more than the limit of %d", len(data), MaxInput)}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var objs []*Object
	var errs Errors
	seen := map[Key]int{}
	for doc := 1; ; doc++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			e := &Error{File: file, Doc: doc, Msg: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
			if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
				e.Line, _ = strconv.Atoi(m[1])
			}
			if l, col := tabAt(data, e.Line); l > 0 && (strings.Contains(err.Error(), "tab") || strings.Contains(err.Error(), "cannot start any token")) {
				e.Line = l
				e.Msg = fmt.Sprintf("invalid YAML: a tab at column %d; YAML indents with spaces only, replace the tab with spaces (%s)", col, strings.TrimPrefix(err.Error(), "yaml: "))
			}
			errs = errs.Add(e)
			break // the decoder cannot resynchronise after a syntax error
		}
		if len(n.Content) == 0 || (n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null") {
			doc-- // empty document ("---" at the end): not counted
			continue
		}
		o, derrs := parseDoc(file, doc, n.Content[0])
		errs = errs.Add(derrs...)
		if o == nil {
			continue
		}
		if first, dup := seen[o.Key()]; dup {
			errs = errs.Add(errAt(o, "metadata.name", o.Metadata.Name, "%s given twice in this input (first in document %d)", o.Kind, first))
			continue
		}
		seen[o.Key()] = doc
		if len(derrs) == 0 {
			errs = errs.Add(ValidateObject(o)...)
		}
		objs = append(objs, o)
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return objs, nil
}

func parseDoc(file string, doc int, root *yaml.Node) (*Object, Errors) {
	src := &Source{File: file, Doc: doc, Line: root.Line, Lines: map[string]int{}}
	docErr := func(line int, field, value, format string, args ...any) *Error {
		return &Error{File: file, Doc: doc, Line: line, Field: field, Value: value, Msg: fmt.Sprintf(format, args...)}
	}
	if root.Kind != yaml.MappingNode {
		return nil, Errors{docErr(root.Line, "", "", "a document must be a mapping with apiVersion, kind, metadata and spec, not a %s", nodeKind(root))}
	}
	var apiVersion, kind, name string
	var specNode, metaNode *yaml.Node
	var errs Errors
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		src.Lines[k.Value] = k.Line
		switch k.Value {
		case "apiVersion":
			apiVersion = v.Value
		case "kind":
			kind = v.Value
		case "metadata":
			metaNode = v
		case "spec":
			specNode = v
		case "status":
			errs = errs.Add(docErr(k.Line, "status", "", "status is written by the controller, not by users; remove it"))
		default:
			errs = errs.Add(docErr(k.Line, k.Value, "", "unknown field (want apiVersion, kind, metadata, spec)"))
		}
	}
	if metaNode != nil {
		if metaNode.Kind != yaml.MappingNode {
			errs = errs.Add(docErr(metaNode.Line, "metadata", "", "must be a mapping with name"))
		} else {
			for i := 0; i+1 < len(metaNode.Content); i += 2 {
				if metaNode.Content[i].Value == "name" {
					name = metaNode.Content[i+1].Value
				}
			}
		}
	}
	setObj := func(es Errors) Errors {
		for _, e := range es {
			if e.Kind == "" {
				e.Kind = kind
			}
			if e.Name == "" {
				e.Name = name
			}
		}
		return es
	}
	if kind == "" {
		errs = errs.Add(docErr(root.Line, "kind", "", "missing kind (want one of %s)", strings.Join(Kinds, ", ")))
		return nil, setObj(errs)
	}
	spec := NewSpec(kind)
	if spec == nil {
		errs = errs.Add(docErr(src.lineOf("kind"), "kind", kind, "unknown kind (want one of %s)", strings.Join(Kinds, ", ")))
		return nil, setObj(errs)
	}
	if apiVersion != APIVersion {
		errs = errs.Add(docErr(src.lineOf("apiVersion"), "apiVersion", apiVersion, "want %q", APIVersion))
	}
	o := &Object{APIVersion: APIVersion, Kind: kind, Spec: spec, Source: src}
	if metaNode == nil {
		errs = errs.Add(docErr(root.Line, "metadata.name", "", "missing metadata.name"))
		return nil, setObj(errs)
	}
	if metaNode.Kind == yaml.MappingNode {
		errs = errs.Add(decodeStrict(metaNode, reflect.ValueOf(&o.Metadata).Elem(), "metadata", src)...)
	}
	if o.Metadata.Name == "" {
		errs = errs.Add(docErr(src.lineOf("metadata"), "metadata.name", "", "missing name"))
	} else if !nameRE.MatchString(o.Metadata.Name) {
		errs = errs.Add(docErr(src.lineOf("metadata.name"), "metadata.name", o.Metadata.Name, "must be 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit"))
	}
	if specNode == nil {
		errs = errs.Add(docErr(root.Line, "spec", "", "missing spec"))
	} else if !(specNode.Kind == yaml.ScalarNode && specNode.Tag == "!!null") {
		errs = errs.Add(decodeStrict(specNode, reflect.ValueOf(spec).Elem(), "spec", src)...)
	}
	return o, setObj(errs)
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "list"
	case yaml.MappingNode:
		return "mapping"
	case yaml.ScalarNode:
		return "scalar " + strconv.Quote(n.Value)
	case yaml.AliasNode:
		return "alias"
	}
	return "document"
}

// decodeStrict fills v from n, refusing unknown fields and wrong types, recording the line of
// every field under path in src.Lines.
func decodeStrict(n *yaml.Node, v reflect.Value, path string, src *Source) Errors {
	bad := func(format string, args ...any) Errors {
		return Errors{{File: src.File, Doc: src.Doc, Line: n.Line, Field: path, Value: truncate(n.Value), Msg: fmt.Sprintf(format, args...)}}
	}
	if n.Kind == yaml.AliasNode {
		return bad("YAML aliases are not supported")
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		v.Set(reflect.Zero(v.Type()))
		return nil
	}
	switch v.Kind() {
	case reflect.Pointer:
		nv := reflect.New(v.Type().Elem())
		errs := decodeStrict(n, nv.Elem(), path, src)
		v.Set(nv)
		return errs
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return bad("want a mapping, got a %s", nodeKind(n))
		}
		fields := map[string]int{}
		var names []string
		for i := 0; i < v.NumField(); i++ {
			tag := strings.Split(v.Type().Field(i).Tag.Get("yaml"), ",")[0]
			if tag != "" && tag != "-" {
				fields[tag] = i
				names = append(names, tag)
			}
		}
		var errs Errors
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			fp := path + "." + k.Value
			src.Lines[fp] = k.Line
			idx, ok := fields[k.Value]
			if !ok {
				errs = errs.Add(&Error{File: src.File, Doc: src.Doc, Line: k.Line, Field: fp, Msg: "unknown field (want one of " + strings.Join(names, ", ") + ")"})
				continue
			}
			if seen[k.Value] {
				errs = errs.Add(&Error{File: src.File, Doc: src.Doc, Line: k.Line, Field: fp, Msg: "field given twice"})
				continue
			}
			seen[k.Value] = true
			errs = errs.Add(decodeStrict(val, v.Field(idx), fp, src)...)
		}
		return errs
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return bad("want a list, got a %s", nodeKind(n))
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		var errs Errors
		for i, c := range n.Content {
			fp := fmt.Sprintf("%s[%d]", path, i)
			src.Lines[fp] = c.Line
			errs = errs.Add(decodeStrict(c, s.Index(i), fp, src)...)
		}
		v.Set(s)
		return errs
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return bad("want a mapping, got a %s", nodeKind(n))
		}
		m := reflect.MakeMap(v.Type())
		var errs Errors
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			fp := path + "." + k.Value
			src.Lines[fp] = k.Line
			if k.Kind != yaml.ScalarNode {
				errs = errs.Add(&Error{File: src.File, Doc: src.Doc, Line: k.Line, Field: path, Msg: "keys must be strings"})
				continue
			}
			ev := reflect.New(v.Type().Elem()).Elem()
			errs = errs.Add(decodeStrict(val, ev, fp, src)...)
			m.SetMapIndex(reflect.ValueOf(k.Value), ev)
		}
		v.Set(m)
		return errs
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			return bad("want a string, got a %s", nodeKind(n))
		}
		v.SetString(n.Value)
		return nil
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			return bad("want true or false")
		}
		b, _ := strconv.ParseBool(strings.ToLower(n.Value))
		v.SetBool(b)
		return nil
	case reflect.Int:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			return bad("want an integer")
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
		if err != nil || i > 1<<40 || i < -(1<<40) {
			return bad("integer out of range")
		}
		v.SetInt(i)
		return nil
	case reflect.Uint32:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			return bad("want an integer")
		}
		u, err := strconv.ParseUint(strings.ReplaceAll(n.Value, "_", ""), 0, 32)
		if err != nil {
			return bad("want an integer from 0 to 4294967295")
		}
		v.SetUint(u)
		return nil
	case reflect.Float64:
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!float" && n.Tag != "!!int") {
			return bad("want a number")
		}
		f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return bad("want a finite number")
		}
		v.SetFloat(f)
		return nil
	}
	return bad("unsupported field type %s", v.Type())
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:61] + "..."
	}
	return s
}

// tabAt finds the tab behind a YAML syntax error reported at line (1-based): the first tab in
// the indentation of that line or the two after it (the scanner may report the line before the
// tab's). It returns the tab's line and 1-based column, or 0, 0.
func tabAt(data []byte, line int) (int, int) {
	lines := strings.Split(string(data), "\n")
	for l := line; l >= 1 && l <= len(lines) && l <= line+2; l++ {
		text := lines[l-1]
		indent := text[:len(text)-len(strings.TrimLeft(text, " \t"))]
		if i := strings.IndexByte(indent, '\t'); i >= 0 {
			return l, i + 1
		}
	}
	return 0, 0
}
