package config

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Error is one problem in the input, precise enough to fix without guessing.
type Error struct {
	File  string `json:"file,omitempty"`
	Line  int    `json:"line,omitempty"`
	Doc   int    `json:"document,omitempty"` // 1-based document index, 0 when not from a file
	Kind  string `json:"kind,omitempty"`
	Name  string `json:"name,omitempty"`
	Field string `json:"field,omitempty"`
	Value string `json:"value,omitempty"`
	Msg   string `json:"message"`
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" || e.Line > 0 {
		f := e.File
		if f == "" {
			f = "<input>"
		}
		if e.Line > 0 {
			fmt.Fprintf(&b, "%s:%d: ", f, e.Line)
		} else {
			fmt.Fprintf(&b, "%s: ", f)
		}
	}
	if e.Doc > 0 {
		fmt.Fprintf(&b, "document %d: ", e.Doc)
	}
	switch {
	case e.Kind != "" && e.Name != "":
		fmt.Fprintf(&b, "%s %q: ", e.Kind, e.Name)
	case e.Kind != "":
		fmt.Fprintf(&b, "%s: ", e.Kind)
	case e.Name != "":
		fmt.Fprintf(&b, "object %q: ", e.Name)
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		if e.Value != "" {
			fmt.Fprintf(&b, " %q", e.Value)
		}
		b.WriteString(": ")
	} else if e.Value != "" {
		fmt.Fprintf(&b, "%q: ", e.Value)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found; Error() lists them one per line.
type Errors []*Error

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Err returns nil for no errors, the errors sorted by document and line otherwise.
func (es Errors) Err() error {
	if len(es) == 0 {
		return nil
	}
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].Doc != es[j].Doc {
			return es[i].Doc < es[j].Doc
		}
		return es[i].Line < es[j].Line
	})
	return es
}

// AsErrors extracts the structured errors from err (nil when err carries none).
func AsErrors(err error) Errors {
	var es Errors
	if errors.As(err, &es) {
		return es
	}
	var e *Error
	if errors.As(err, &e) {
		return Errors{e}
	}
	return nil
}

// errAt builds an error about field of o, taking file, document and line from o's source.
func errAt(o *Object, field, value, format string, args ...any) *Error {
	e := &Error{Kind: o.Kind, Name: o.Metadata.Name, Field: field, Value: value, Msg: fmt.Sprintf(format, args...)}
	if o.Source != nil {
		e.File, e.Doc, e.Line = o.Source.File, o.Source.Doc, o.Source.lineOf(field)
	}
	return e
}

// ErrAt is errAt for other packages (allocators, store) reporting about an object.
func ErrAt(o *Object, field, value, format string, args ...any) *Error {
	return errAt(o, field, value, format, args...)
}
