package main

import (
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
