package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestStatusServer: both daemons' listener serves status, health and metrics on every address.
func TestStatusServer(t *testing.T) {
	s, err := serveStatus("127.0.0.1:0, 127.0.0.2:0", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, `{"ready":true}`) }),
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "govcloud_up 1\n") }))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, ln := range s.lns {
		for path, want := range map[string]string{"/status": `"ready":true`, "/healthz": "ok", "/metrics": "govcloud_up 1"} {
			resp, err := http.Get("http://" + ln.Addr().String() + path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
				t.Errorf("%s%s: %d %q, want %q", ln.Addr(), path, resp.StatusCode, b, want)
			}
		}
	}
	if _, err := serveStatus("127.0.0.1:0,256.0.0.1:1", nil, nil); err == nil || !strings.Contains(err.Error(), "256.0.0.1:1") {
		t.Errorf("bad address: %v", err)
	}
}

// TestLateHandler: the status listeners are bound before the agent exists; until its handlers
// are set they answer 503 "starting", then the handlers'.
func TestLateHandler(t *testing.T) {
	var st, met lateHandler
	s, err := serveStatus("127.0.0.1:0", &st, &met)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + s.lns[0].Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, path := range []string{"/status", "/metrics"} {
		if code, body := get(path); code != http.StatusServiceUnavailable || !strings.Contains(body, "starting") {
			t.Errorf("%s before set: %d %q, want 503 starting", path, code, body)
		}
	}
	st.set(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, `{"ready":true}`) }))
	met.set(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "govcloud_up 1\n") }))
	for path, want := range map[string]string{"/status": `"ready":true`, "/metrics": "govcloud_up 1"} {
		if code, body := get(path); code != 200 || !strings.Contains(body, want) {
			t.Errorf("%s after set: %d %q, want %q", path, code, body, want)
		}
	}
}

// TestRemoveOnExit: an agent removes its dataplane only when the operator stopped it without
// --keep-dataplane after it applied a desired state; a start or run that fails on its own, or
// an agent that never reached the controller, leaves it forwarding (fail-static).
func TestRemoveOnExit(t *testing.T) {
	stopped := context.Canceled
	runErr := errors.New("watch: controller refused the host")
	for _, tc := range []struct {
		name            string
		removeAtStop    bool
		stopped, runErr error
		reconciled      bool
		want            bool
	}{
		{"SIGTERM, no --keep-dataplane", true, stopped, nil, true, true},
		{"SIGTERM, Run says canceled", true, stopped, fmt.Errorf("watch: %w", context.Canceled), true, true},
		{"SIGTERM with --keep-dataplane", false, stopped, nil, true, false},
		{"Run failed on its own", true, nil, runErr, true, false},
		{"SIGTERM while Run failed on its own", true, stopped, runErr, true, false},
		{"Run returned without a stop", true, nil, nil, true, false},
		{"SIGTERM before any desired state (controller unreachable, wrong CA)", true, stopped, nil, false, false},
	} {
		if got := removeOnExit(tc.removeAtStop, tc.stopped, tc.runErr, tc.reconciled); got != tc.want {
			t.Errorf("%s: removeOnExit = %v, want %v", tc.name, got, tc.want)
		}
	}
}
