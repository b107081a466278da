package api_test

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/govcloud/govcloud/controlplane/api"
	"github.com/govcloud/govcloud/controlplane/apitest"
	"github.com/govcloud/govcloud/controlplane/client"
)

// httpStatus is the HTTP status of a controller's refusal (0: no refusal).
func httpStatus(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ce *client.Error
	if !errors.As(err, &ce) {
		t.Fatalf("not an answer of the controller: %v", err)
	}
	return ce.Status
}

// A VM's console goes through the API: only its host's agent sends it, a token is needed to
// read it (even where anonymous reads are allowed), a department reads only its own VMs, every
// controller of the store serves it, and reads are audited.
func TestConsoleAuthz(t *testing.T) {
	env, ctx := setup(t)
	admin := env.Client("admin")
	if _, err := admin.Apply(ctx, "host2.yaml", []byte(apitest.Host2), client.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	agent := env.Client("agent-host1")
	log := "boot\nlogin: \x1b[31mroot\x1b[0m\n"
	if err := agent.PutConsole(ctx, "host1", "lands-vm1", int64(len(log)), []byte(log)); err != nil {
		t.Fatalf("host1's agent sends lands-vm1's console: %v", err)
	}
	for _, tc := range []struct {
		desc, role, host, vm string
		status               int
	}{
		{"another host's VM", "agent-host1", "host2", "health-vm2", http.StatusForbidden},
		{"a VM not on that host", "agent-host1", "host1", "health-vm2", http.StatusForbidden},
		{"an unknown VM", "agent-host1", "host1", "nope", http.StatusNotFound},
		{"a department token", "lands", "host1", "lands-vm1", http.StatusForbidden},
		{"no token", "", "host1", "lands-vm1", http.StatusUnauthorized},
	} {
		err := env.Client(tc.role).PutConsole(ctx, tc.host, tc.vm, 3, []byte("bad"))
		if got := httpStatus(t, err); got != tc.status {
			t.Errorf("%s sends the console of %s on %s: HTTP %d (%v), want %d", tc.desc, tc.vm, tc.host, got, err, tc.status)
		}
	}

	anon := httptest.NewServer(api.New(env.Store, slog.New(slog.DiscardHandler), api.Options{ID: "anon", AnonymousRead: true}).Handler())
	defer anon.Close()
	for _, tc := range []struct {
		desc   string
		c      *client.Client
		vm     string
		status int
		data   string
	}{
		{"admin", env.Client("admin"), "lands-vm1", 0, log},
		{"its own department", env.Client("lands"), "lands-vm1", 0, log},
		{"another department", env.Client("health"), "lands-vm1", http.StatusForbidden, ""},
		{"the network role", env.Client("network"), "lands-vm1", 0, log},
		{"an agent", env.Client("agent-host1"), "lands-vm1", http.StatusForbidden, ""},
		{"unknown VM", env.Client("admin"), "nope", http.StatusNotFound, ""},
		{"unknown VM, department", env.Client("lands"), "nope", http.StatusNotFound, ""},
		{"no token", env.Client(""), "lands-vm1", http.StatusUnauthorized, ""},
		{"no token where anonymous reads are allowed", client.New(anon.URL, ""), "lands-vm1", http.StatusUnauthorized, ""},
		{"admin through another controller on the same store", client.New(anon.URL, env.Tokens["admin"]), "lands-vm1", 0, log},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			tail, err := tc.c.Console(ctx, tc.vm, -1)
			if got := httpStatus(t, err); got != tc.status {
				t.Fatalf("HTTP %d (%v), want %d", got, err, tc.status)
			}
			if err == nil && (string(tail.Data) != tc.data || tail.Host != "host1" || tail.End != int64(len(log))) {
				t.Errorf("got %+v, want %q from host1 ending at %d", tail, tc.data, len(log))
			}
		})
	}

	// Reading on from an offset gives only what follows; a VM without output says why.
	more := log + "second\n"
	if err := agent.PutConsole(ctx, "host1", "lands-vm1", int64(len(more)), []byte(more)); err != nil {
		t.Fatal(err)
	}
	tail, err := admin.Console(ctx, "lands-vm1", int64(len(log)))
	if err != nil || string(tail.Data) != "second\n" {
		t.Errorf("after %d: %+v %v, want %q", len(log), tail, err, "second\n")
	}
	tail, err = admin.Console(ctx, "health-vm2", -1)
	if err != nil || len(tail.Data) != 0 || !strings.Contains(tail.Note, `no console output from host "host2"`) {
		t.Errorf("health-vm2: %+v %v, want a note that host2 sent nothing", tail, err)
	}

	// Audited once per credential and VM on each controller (not every poll): admin read
	// lands-vm1 through both.
	raw, err := admin.Audit(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	var entries []struct {
		Who    string         `json:"who"`
		Action string         `json:"action"`
		Detail map[string]any `json:"detail"`
	}
	if err := json.Unmarshal(raw, &entries); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, e := range entries {
		if e.Action == "console" {
			got[e.Who+"/"+e.Detail["vm"].(string)]++
		}
	}
	want := map[string]int{"admin/lands-vm1": 2, "lands-viewer/lands-vm1": 1, "neteng/lands-vm1": 1, "admin/health-vm2": 1}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("audit entries %s: %d, want %d (all: %v)", k, got[k], n, got)
		}
	}
}

func asClientError(err error, ce **client.Error) bool { return errors.As(err, ce) }
