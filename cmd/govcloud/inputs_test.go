package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/govcloud/govcloud/controlplane/apitest"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/config/configtest"
)

// run runs the CLI with args against env as admin, returning its output and error.
func run(t *testing.T, env *apitest.Env, args ...string) (string, error) {
	t.Helper()
	t.Setenv("GOVCLOUD_API", env.URL)
	t.Setenv("GOVCLOUD_TOKEN", env.Tokens["admin"])
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// apply -f DIR applies every *.yaml/*.yml file as one transaction; delete -f DIR removes the
// same objects (dependents first); errors name the file and the document.
func TestApplyDeleteDir(t *testing.T) {
	env := apitest.New(t)
	vm := apitest.Doc("VM", "lands-vm1", "{department: lands, vcpus: 1, memoryMiB: 256, networks: [{segment: lands-web}]}")
	dir := writeFiles(t, map[string]string{
		"10-departments.yaml": configtest.LandsHealth,
		"20-vms.yml":          vm,
		"notes.txt":           "not yaml: ignored",
	})
	out, err := run(t, env, "apply", "-f", dir)
	if err != nil {
		t.Fatalf("apply -f %s: %v\n%s", dir, err, out)
	}
	if !strings.Contains(out, "+ create VM lands-vm1") || !strings.Contains(out, "+ create Department lands") {
		t.Errorf("apply output lacks the objects of both files:\n%s", out)
	}

	// A document that cannot be deleted (unknown here) fails the delete, naming it; nothing goes.
	extra := writeFiles(t, map[string]string{"a.yaml": vm + apitest.Doc("VM", "ghost", "{department: lands, vcpus: 1, memoryMiB: 256, networks: [{segment: lands-web}]}")})
	out, err = run(t, env, "delete", "-f", extra)
	if err == nil || !strings.Contains(err.Error(), `VM "ghost": not found`) {
		t.Errorf("delete of a missing object: %v\n%s", err, out)
	}
	if _, err := client.New(env.URL, env.Tokens["admin"]).Get(context.Background(), "VM", "lands-vm1"); err != nil {
		t.Errorf("a refused delete -f deleted lands-vm1: %v", err)
	}

	out, err = run(t, env, "delete", "-f", dir, "--dry-run")
	if err != nil {
		t.Fatalf("delete --dry-run: %v\n%s", err, out)
	}
	out, err = run(t, env, "delete", "-f", dir)
	if err != nil {
		t.Fatalf("delete -f %s: %v\n%s", dir, err, out)
	}
	var order []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 4 && f[1] == "delete" {
			order = append(order, f[2]+"/"+f[3])
		}
	}
	want := "VM/lands-vm1 Segment/health-web Segment/lands-web AddressPool/health-public AddressPool/lands-public Department/health Department/lands"
	if got := strings.Join(order, " "); got != want {
		t.Errorf("deleted in order %s, want dependents first: %s\n%s", got, want, out)
	}
	out, err = run(t, env, "delete", "-f", dir, "--ignore-not-found")
	if err != nil || !strings.Contains(out, "0 to delete") {
		t.Errorf("delete --ignore-not-found of nothing left: %v\n%s", err, out)
	}

	// Errors name the file and the document in it: one found here (a bad field), one found by
	// the controller (a VM on a segment no file defines).
	for _, tc := range []struct {
		files map[string]string
		want  []string
	}{
		{map[string]string{"a.yaml": configtest.LandsHealth, "b.yaml": vm + apitest.Doc("Segment", "x", "{department: lands, vlan: 99999, ipv4: 198.18.99.0/24}")},
			[]string{"b.yaml", "document 2", "vlan"}},
		{map[string]string{"a.yaml": configtest.LandsHealth, "b.yaml": apitest.Doc("VM", "v", "{department: lands, vcpus: 1, memoryMiB: 256, networks: [{segment: nope}]}")},
			[]string{"b.yaml:", "document 1", `"nope"`}},
		{map[string]string{"a.yaml": configtest.LandsHealth, "b.yaml": configtest.LandsHealth},
			[]string{"b.yaml", "given twice", "a.yaml document 1"}},
	} {
		dir := writeFiles(t, tc.files)
		out, err := run(t, env, "apply", "-f", dir)
		if err == nil {
			t.Errorf("apply of a bad directory passed:\n%s", out)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not name %q", err, w)
			}
		}
	}
}
