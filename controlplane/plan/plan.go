// Package plan computes what an apply or delete would do to the stored state: the new whole
// state (validated, with allocations filled in) and the create/update/delete list. It is pure;
// the API commits the result through the store.
package plan

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/govcloud/govcloud/controlplane/alloc"
	"github.com/govcloud/govcloud/controlplane/config"
)

// Actions.
const (
	Create    = "create"
	Update    = "update"
	Delete    = "delete"
	Unchanged = "unchanged"
)

// Change is what happens to one object.
type Change struct {
	Kind   string        `json:"kind"`
	Name   string        `json:"name"`
	Action string        `json:"action"`
	Fields []string      `json:"fields,omitempty"` // for updates: top-level spec/status fields that differ
	Values []FieldChange `json:"values,omitempty"` // the same fields with old and new values (JSON, shortened)
	// Reason is a VM's placement reason after the change: why it is pending, or why its host
	// is over capacity ("" when it is placed within capacity).
	Reason string `json:"reason,omitempty"`
}

// FieldChange is one changed field of an update.
type FieldChange struct {
	Field string `json:"field"`
	From  string `json:"from"`
	To    string `json:"to"`
}

// Result is a computed plan.
type Result struct {
	Changes []Change         `json:"changes"`
	Next    *config.State    `json:"-"`
	Puts    []*config.Object `json:"-"`
	Deletes []config.Key     `json:"-"`
}

// Counts summarises the changes by action.
func (r *Result) Counts() map[string]int {
	m := map[string]int{}
	for _, c := range r.Changes {
		m[c.Action]++
	}
	return m
}

// Rawer gives the stored JSON of an object, to detect changes without re-encoding the old state.
type Rawer interface{ Raw(config.Key) []byte }

// Request is what to change.
type Request struct {
	Objects []*config.Object // create or replace (spec); status kept from the stored object
	Deletes []config.Key
	Prune   bool // delete every stored object not in Objects
}

// Compute returns the plan for req against cur, or the errors that refuse it.
func Compute(cur *config.State, raw Rawer, req Request, ac alloc.Config) (*Result, error) {
	next := config.NewState()
	for k, o := range cur.Objects {
		c := *o // allocation rewrites Status only; a shallow copy keeps cur untouched
		next.Objects[k] = &c
	}
	var es config.Errors
	inInput := map[config.Key]bool{}
	for _, o := range req.Objects {
		c := *o
		c.Status = config.Status{}
		if old := cur.Objects[o.Key()]; old != nil {
			c.Status = old.Status
		}
		next.Objects[o.Key()] = &c
		inInput[o.Key()] = true
	}
	deleted := map[config.Key]bool{}
	for _, k := range req.Deletes {
		if cur.Objects[k] == nil {
			es = es.Add(&config.Error{Kind: k.Kind, Name: k.Name, Msg: "not found"})
			continue
		}
		deleted[k] = true
		delete(next.Objects, k)
	}
	if req.Prune {
		for k := range cur.Objects {
			if !inInput[k] {
				deleted[k] = true
				delete(next.Objects, k)
			}
		}
	}
	delKeys := make([]config.Key, 0, len(deleted))
	for k := range deleted {
		delKeys = append(delKeys, k)
	}
	sort.Slice(delKeys, func(i, j int) bool {
		if delKeys[i].Kind != delKeys[j].Kind {
			return config.KindOrder(delKeys[i].Kind) > config.KindOrder(delKeys[j].Kind)
		}
		return delKeys[i].Name < delKeys[j].Name
	})
	for _, k := range delKeys {
		if deps := config.Dependents(next, cur.Objects[k]); len(deps) > 0 {
			names := make([]string, 0, len(deps))
			for _, d := range deps {
				names = append(names, d.String())
			}
			if len(names) > 5 {
				names = append(names[:5], fmt.Sprintf("and %d more", len(deps)-5))
			}
			es = es.Add(&config.Error{Kind: k.Kind, Name: k.Name, Msg: "cannot delete: still used by " + strings.Join(names, ", ")})
		}
	}
	if err := es.Err(); err != nil {
		return nil, err
	}
	if err := config.Validate(next).Err(); err != nil {
		return nil, err
	}
	if err := alloc.Allocate(next, ac).Err(); err != nil {
		return nil, err
	}
	res := &Result{Next: next, Deletes: delKeys}
	for _, o := range next.List("") {
		k := o.Key()
		if old := cur.Objects[k]; old != nil && !inInput[k] && reflect.DeepEqual(old.Status, o.Status) {
			continue // neither spec nor status touched
		}
		b, err := json.Marshal(o)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", k, err)
		}
		old := raw.Raw(k)
		switch {
		case cur.Objects[k] == nil:
			res.Changes = append(res.Changes, Change{Kind: k.Kind, Name: k.Name, Action: Create})
			res.Puts = append(res.Puts, o)
		case !bytes.Equal(old, b):
			vals := diffFields(old, b)
			c := Change{Kind: k.Kind, Name: k.Name, Action: Update, Values: vals}
			for _, v := range vals {
				c.Fields = append(c.Fields, v.Field)
			}
			res.Changes = append(res.Changes, c)
			res.Puts = append(res.Puts, o)
		case inInput[k]:
			res.Changes = append(res.Changes, Change{Kind: k.Kind, Name: k.Name, Action: Unchanged})
		}
		if n := len(res.Changes); n > 0 && res.Changes[n-1].Kind == k.Kind && res.Changes[n-1].Name == k.Name {
			res.Changes[n-1].Reason = o.Status.Reason
		}
	}
	for i := len(delKeys) - 1; i >= 0; i-- {
		k := delKeys[i]
		res.Changes = append(res.Changes, Change{Kind: k.Kind, Name: k.Name, Action: Delete})
	}
	return res, nil
}

// diffFields lists the spec.X / status.X fields that differ between two encoded objects.
func diffFields(a, b []byte) []FieldChange {
	var x, y map[string]json.RawMessage
	_ = json.Unmarshal(a, &x)
	_ = json.Unmarshal(b, &y)
	var out []FieldChange
	for _, part := range []string{"spec", "status"} {
		var xp, yp map[string]json.RawMessage
		_ = json.Unmarshal(x[part], &xp)
		_ = json.Unmarshal(y[part], &yp)
		keys := map[string]bool{}
		for k := range xp {
			keys[k] = true
		}
		for k := range yp {
			keys[k] = true
		}
		for k := range keys {
			if !bytes.Equal(xp[k], yp[k]) {
				out = append(out, FieldChange{Field: part + "." + k, From: short(xp[k]), To: short(yp[k])})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Field < out[j].Field })
	return out
}

func short(v json.RawMessage) string {
	if len(v) == 0 {
		return "(none)"
	}
	s := string(v)
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}
