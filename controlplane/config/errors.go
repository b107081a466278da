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
	More  int    `json:"more,omitempty"` // > 0: this entry stands for that many errors left out (Errors.Add)
}

// MaxErrors bounds the errors kept for one input: past it, errors are only counted, and one
// last entry says "and N more errors". Memory and answer size stay bounded whatever the input.
const MaxErrors = 100

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

// Add appends errors up to MaxErrors; past it, it only counts them in a last "and N more
// errors" entry.
func (es Errors) Add(more ...*Error) Errors {
	for _, e := range more {
		n := 1
		if e.More > 0 {
			n = e.More
		}
		switch {
		case len(es) > 0 && es[len(es)-1].More > 0:
			es[len(es)-1].More += n
		case len(es) < MaxErrors && e.More == 0:
			es = append(es, e)
			continue
		default:
			es = append(es, &Error{More: n})
		}
		es[len(es)-1].Msg = fmt.Sprintf("and %d more errors", es[len(es)-1].More)
	}
	return es
}

// Count is how many errors es stands for, those left out by Add included.
func (es Errors) Count() int {
	n := 0
	for _, e := range es {
		n += max(e.More, 1)
	}
	return n
}

// Err returns nil for no errors, the errors sorted by document and line otherwise (an "and N
// more errors" entry stays last).
func (es Errors) Err() error {
	if len(es) == 0 {
		return nil
	}
	body := es
	if es[len(es)-1].More > 0 {
		body = es[:len(es)-1]
	}
	sort.SliceStable(body, func(i, j int) bool {
		if body[i].Doc != body[j].Doc {
			return body[i].Doc < body[j].Doc
		}
		return body[i].Line < body[j].Line
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

// ErrStranded reports a problem of object o caused by input object cause. When o is stored
// (not in this input: no Source) and cause is from the input, the error is on cause's document
// and field, naming o: the file:line the user must change, e.g.
//
//	lab.yaml:25: document 3: AddressPool "public-vips": spec.departments: strands Service
//	"finance-www" (stored, not in this input): spec.vip: no free IPv4 VIP ...
//
// Otherwise it is ErrAt(o, field, value, ...).
func ErrStranded(o, cause *Object, causeField, field, value, format string, args ...any) *Error {
	if o.Source != nil || cause == nil || cause.Source == nil {
		return errAt(o, field, value, format, args...)
	}
	what := field
	if value != "" {
		what += fmt.Sprintf(" %q", value)
	}
	return errAt(cause, causeField, "", "strands %s %q (stored, not in this input): %s: %s", o.Kind, o.Metadata.Name, what, fmt.Sprintf(format, args...))
}
