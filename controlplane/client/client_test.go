package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Issue 22: GOVCLOUD_API=127.0.0.1:8480 gave net/url's "first path segment in URL cannot
// contain colon"; the error now names the variable and the URL to write.
func TestControllerURLWithoutScheme(t *testing.T) {
	for _, tc := range []struct{ base, want string }{
		{"127.0.0.1:8480", `controller URL "127.0.0.1:8480" (GOVCLOUD_API or --controller): no scheme; write https://127.0.0.1:8480`},
		{"localhost:8480", `no scheme; write https://localhost:8480`},
		{"https://127.0.0.1:8480,127.0.0.2:8480", `controller URL "127.0.0.2:8480" (GOVCLOUD_API or --controller): no scheme`},
		{"ftp://127.0.0.1:8480", `scheme "ftp": want https`},
		{"https:///v1", `no host`},
	} {
		t.Run(tc.base, func(t *testing.T) {
			c := New(tc.base, "")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := c.Status(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v: want %q", err, tc.want)
			}
		})
	}
	for _, ok := range []string{"https://127.0.0.1:8480", "http://198.51.100.5:8480", "https://[2001:db8::1]:8480", "https://a.example:8480/"} {
		if err := CheckURL(strings.TrimRight(ok, "/")); err != nil {
			t.Errorf("CheckURL(%q): %v", ok, err)
		}
	}
}

// Issue 22: `govcloud audit` in the lab (reads without a token) said only "anonymous
// (anonymous) may not read the audit log"; it now says where the token goes.
func TestAnonymousRefusalNamesGOVCLOUD_TOKEN(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		if r.Header.Get("Authorization") == "" {
			_, _ = w.Write([]byte(`{"code":"forbidden","error":"anonymous (anonymous) may not read the audit log (needs role admin)"}`))
			return
		}
		_, _ = w.Write([]byte(`{"code":"forbidden","error":"lands-ro (department) may not read the audit log (needs role admin)"}`))
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := New(srv.URL, "").Audit(ctx, 10)
	if err == nil || !strings.Contains(err.Error(), "may not read the audit log") || !strings.Contains(err.Error(), "no token was sent: set GOVCLOUD_TOKEN") ||
		!strings.Contains(err.Error(), "/var/lib/govcloud-lab/controller/admin-token") {
		t.Fatalf("anonymous refusal: %v", err)
	}
	_, err = New(srv.URL, "some-token").Audit(ctx, 10)
	if err == nil || strings.Contains(err.Error(), "GOVCLOUD_TOKEN") {
		t.Fatalf("refusal of a token's role must not talk about a missing token: %v", err)
	}
}
