package desired

import (
	"encoding"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// Decode reads a State from its JSON form. A malformed address or prefix is an error naming
// its field, e.g. `services[2].backends[0].address: ParseAddr("198.18.20.300"): ...`;
// encoding/json alone reports a text value's parse error without the field.
func Decode(data []byte) (*State, error) {
	var st State
	err := json.Unmarshal(data, &st)
	if err == nil {
		return &st, nil
	}
	var tree any
	if json.Unmarshal(data, &tree) == nil {
		if ferr := findTextError(reflect.TypeFor[State](), tree, ""); ferr != nil {
			return nil, fmt.Errorf("desired state: %w", ferr)
		}
	}
	return nil, fmt.Errorf("desired state: %w", err)
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// findTextError walks the decoded JSON tree alongside type t and returns the first string
// that t's text-decoded field refuses, prefixed with its path.
func findTextError(t reflect.Type, v any, path string) error {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		if s, ok := v.(string); ok {
			if err := reflect.New(t).Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, _ := v.(map[string]any)
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" {
				name = f.Name
			}
			if fv, ok := obj[name]; ok {
				if err := findTextError(f.Type, fv, strings.TrimPrefix(path+"."+name, ".")); err != nil {
					return err
				}
			}
		}
	case reflect.Slice:
		list, _ := v.([]any)
		for i, e := range list {
			if err := findTextError(t.Elem(), e, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		obj, _ := v.(map[string]any)
		for _, k := range slices.Sorted(maps.Keys(obj)) {
			if err := findTextError(t.Elem(), obj[k], fmt.Sprintf("%s[%q]", path, k)); err != nil {
				return err
			}
		}
	}
	return nil
}
