package api_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/config"
)

// POST /v1/delete deletes its objects in one transaction: all, or none with every reason.
func TestDeleteObjects(t *testing.T) {
	k := func(kind, name string) config.Key { return config.Key{Kind: kind, Name: name} }
	for _, tc := range []struct {
		desc    string
		role    string
		keys    []config.Key
		opt     client.DeleteOptions
		status  int
		want    []string // in the error, or the deleted objects, sorted
		deleted bool
	}{
		{"a VM a service still uses", "admin", []config.Key{k("VM", "lands-vm1")}, client.DeleteOptions{}, 422,
			[]string{`VM "lands-vm1"`, `still used by Service "lands-www"`}, false},
		{"the VM with its service", "admin", []config.Key{k("VM", "lands-vm1"), k("Service", "lands-www")}, client.DeleteOptions{}, 0,
			[]string{"Service/lands-www", "VM/lands-vm1"}, true},
		{"dry run", "admin", []config.Key{k("Service", "lands-www"), k("vm", "lands-vm1")}, client.DeleteOptions{DryRun: true}, 0,
			[]string{"Service/lands-www", "VM/lands-vm1"}, false},
		{"a missing object refuses all", "admin", []config.Key{k("Service", "health-www"), k("VM", "nope"), k("Segment", "nope")}, client.DeleteOptions{}, 422,
			[]string{`VM "nope": not found`, `Segment "nope": not found`}, false},
		{"a missing object ignored", "admin", []config.Key{k("Service", "health-www"), k("VM", "nope")}, client.DeleteOptions{IgnoreNotFound: true}, 0,
			[]string{"Service/health-www"}, true},
		{"a department token", "lands", []config.Key{k("Service", "lands-www")}, client.DeleteOptions{}, 403, []string{"may not delete"}, false},
		{"network role, a VM", "network", []config.Key{k("Service", "lands-www"), k("VM", "lands-vm1")}, client.DeleteOptions{}, 403, []string{"may not delete VM"}, false},
		{"unknown kind", "admin", []config.Key{k("Gizmo", "x")}, client.DeleteOptions{}, 400, []string{`unknown kind "Gizmo"`}, false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			env, ctx := setup(t)
			before := env.Fingerprint(t)
			res, err := env.Client(tc.role).DeleteObjects(ctx, tc.keys, tc.opt)
			if got := httpStatus(t, err); got != tc.status {
				t.Fatalf("HTTP %d (%v), want %d", got, err, tc.status)
			}
			if err != nil {
				msg := err.Error()
				var ce *client.Error
				if asClientError(err, &ce) {
					msg += " " + ce.Errors.Error()
				}
				for _, w := range tc.want {
					if !strings.Contains(msg, w) {
						t.Errorf("error %q does not name %q", msg, w)
					}
				}
			} else {
				var got []string
				for _, c := range res.Changes {
					if c.Action == "delete" {
						got = append(got, c.Kind+"/"+c.Name)
					}
				}
				slices.Sort(got)
				if strings.Join(got, " ") != strings.Join(tc.want, " ") {
					t.Errorf("deleted %v, want %v", got, tc.want)
				}
			}
			if changed := env.Fingerprint(t) != before; changed != tc.deleted {
				t.Errorf("state changed: %v, want %v", changed, tc.deleted)
			}
		})
	}
}
