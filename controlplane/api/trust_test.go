package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/api"
	"github.com/govcloud/govcloud/controlplane/apitest"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
	"github.com/govcloud/govcloud/controlplane/store"
)

// peerFixture adds a second host with a health VM backing a service, so host1 and host2 each
// have a backend placed on them.
const peerFixture = apitest.Base + apitest.Host2 + `---
apiVersion: govcloud/v1
kind: Service
metadata: {name: health-app}
spec: {department: health, vip: 198.19.1.11, ports: [{port: 80}], backends: [{vm: health-vm2}]}
`

func lastAudit(t *testing.T, env *apitest.Env) store.AuditEntry {
	t.Helper()
	a, err := env.Store.Audit(context.Background(), 1)
	if err != nil || len(a) != 1 {
		t.Fatalf("audit: %v %v", a, err)
	}
	return a[0]
}

func tokenID(t *testing.T, env *apitest.Env, role string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", env.URL+"/v1/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+env.Tokens[role])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok store.Token
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.ID == "" {
		t.Fatalf("whoami %s: %+v %v", role, tok, err)
	}
	return tok.ID
}

// TestPeerHealthOnlyForPlacedBackends: host1's agent reports host2's backend down (issue 14
// §2); the controller keeps of its report only host1's own and plain-address backends, so no
// agent reading the reports withdraws host2's VIP. What it dropped is in the audit entry.
func TestPeerHealthOnlyForPlacedBackends(t *testing.T) {
	env, ctx := setup(t)
	admin := env.Client("admin")
	if _, err := admin.Apply(ctx, "peers.yaml", []byte(peerFixture), client.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	vm2, err := admin.Get(ctx, "vm", "health-vm2")
	if err != nil || len(vm2.Addresses) == 0 {
		t.Fatalf("health-vm2: %+v %v", vm2, err)
	}
	host2Addr, err := netip.ParseAddr(vm2.Addresses[0])
	if err != nil {
		t.Fatalf("health-vm2's address: %v", err)
	}
	bk := func(svc, addr string) hoststatus.BackendKey {
		return hoststatus.BackendKey{Service: svc, Addr: netip.MustParseAddr(addr)}
	}
	agent := env.Client("agent-host1")
	rep := hoststatus.Status{Host: "host1", Ready: true, Backends: hoststatus.Backends{
		bk("lands-www", "198.18.20.2"):           {Reason: "connection refused"}, // lands-vm1, on host1: its own
		bk("lands-www", "198.18.20.50"):          {Up: true},                     // a plain address: every host checks it
		{Service: "health-app", Addr: host2Addr}: {Reason: "forged"},             // host2's backend
		bk("nosuch", "198.18.20.9"):              {Reason: "forged"},             // no such backend
		bk("health-www", "198.18.30.99"):         {Reason: "forged"},             // not a backend of that service
	}}
	if err := agent.PutHostStatus(ctx, "host1", rep); err != nil {
		t.Fatal(err)
	}
	raw, err := admin.HostStatuses(ctx) // agents read only their peer health now
	if err != nil {
		t.Fatal(err)
	}
	var stored hoststatus.Report
	if err := json.Unmarshal(raw["host1"], &stored); err != nil {
		t.Fatal(err)
	}
	want := hoststatus.Backends{bk("lands-www", "198.18.20.2"): {Reason: "connection refused"}, bk("lands-www", "198.18.20.50"): {Up: true}}
	if !maps.Equal(stored.Status.Backends, want) || !stored.Status.Ready || stored.Host != "host1" || stored.Time.IsZero() {
		t.Fatalf("stored %+v, want ready with backends %v", stored, want)
	}
	a := lastAudit(t, env)
	ignored, _ := a.Detail["ignoredBackends"].([]any)
	if a.Action != "status" || a.TokenID != tokenID(t, env, "agent-host1") || !strings.HasPrefix(a.Remote, "127.0.0.1:") || len(ignored) != 3 {
		t.Errorf("audit of the status write: %+v", a)
	}
	// Malformed backend health is refused, naming what is wrong, and the refusal audited.
	for _, tc := range []struct {
		backends any
		want     string
	}{
		{map[string]string{"lands-www/198.18.20.2": "up"}, "backends: want a list"},
		{[]string{"x"}, "backends: want a list"},
		{[]map[string]any{{"service": "lands-www", "address": "198.18.20.300", "up": true}}, `backends[0].address of service "lands-www"`},
	} {
		err := agent.PutHostStatus(ctx, "host1", map[string]any{"backends": tc.backends})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("backends %v: %v, want an error containing %s", tc.backends, err, tc.want)
		}
		if a := lastAudit(t, env); a.Result != "refused" || !strings.Contains(a.Error, "backends") {
			t.Errorf("audit of the refused status write: %+v", a)
		}
	}
}

// TestTokenIDsExpiryAndRevocation: ids, --ttl expiry, revocation by id, names without
// control characters, and no revocation that locks every admin out.
func TestTokenIDsExpiryAndRevocation(t *testing.T) {
	env, ctx := setup(t)
	admin := env.Client("admin")
	adminID := tokenID(t, env, "admin")
	for _, tc := range []struct {
		name string
		req  client.TokenRequest
		want string
	}{
		{"newline in the name (forged audit line)", client.TokenRequest{Name: "ops\n2026-12-01 admin (admin) revoke-token", Role: api.RoleNetwork}, `token name "ops\n2026-12-01 admin (admin) revoke-token": control characters`},
		{"escape sequence in the name", client.TokenRequest{Name: "ops\x1b[2K", Role: api.RoleNetwork}, `"ops\x1b[2K"`},
		{"tab in the host", client.TokenRequest{Name: "a", Role: api.RoleAgent, Host: "host1\tadmin"}, `token host "host1\tadmin"`},
		{"name too long", client.TokenRequest{Name: strings.Repeat("x", 200), Role: api.RoleNetwork}, "longer than 128 bytes"},
		{"bidi override in the name (reads reversed in a terminal)", client.TokenRequest{Name: "ops\u202enimda", Role: api.RoleNetwork}, "invisible or reordering"},
		{"zero-width space in the name (two names that look one)", client.TokenRequest{Name: "ad\u200bmin", Role: api.RoleNetwork}, "invisible or reordering"},
		{"line separator in a department", client.TokenRequest{Name: "d", Role: api.RoleDepartment, Department: "lands\u2028x"}, "invisible or reordering"},
		{"Hangul filler in the name (an invisible letter)", client.TokenRequest{Name: "admin\u3164", Role: api.RoleNetwork}, "invisible or reordering"},
		{"ttl not a duration", client.TokenRequest{Name: "a", Role: api.RoleNetwork, TTL: "tomorrow"}, `ttl "tomorrow"`},
		{"ttl negative", client.TokenRequest{Name: "a", Role: api.RoleNetwork, TTL: "-1h"}, `ttl "-1h"`},
		{"ttl beyond five years", client.TokenRequest{Name: "a", Role: api.RoleNetwork, TTL: "87840h1s"}, `ttl "87840h1s"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := env.Store.Tokens(ctx)
			_, err := admin.CreateToken(ctx, tc.req)
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Status != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want HTTP 422 naming %s", err, tc.want)
			}
			if after, _ := env.Store.Tokens(ctx); len(after) != len(before) {
				t.Errorf("tokens %d -> %d", len(before), len(after))
			}
			a := lastAudit(t, env)
			if a.Result != "refused" || a.TokenID != adminID || a.Action != "POST /v1/tokens" || !strings.Contains(a.Error, tc.want) {
				t.Errorf("audit entry %+v", a)
			}
			// The entry is data: the name stays inside its field.
			b, _ := json.Marshal(a)
			if strings.ContainsAny(string(b), "\n\t\x1b") {
				t.Errorf("audit entry holds raw control characters: %s", b)
			}
		})
	}

	// A token with a TTL works until it expires, then is refused naming its id.
	short, err := admin.CreateToken(ctx, client.TokenRequest{Name: "short", Role: api.RoleNetwork, TTL: "2s"})
	if err != nil {
		t.Fatal(err)
	}
	if a := lastAudit(t, env); a.Action != "token" || a.TokenID != adminID || a.Detail["expires"] == nil || a.Detail["name"] != "short" {
		t.Errorf("audit of token create: %+v", a)
	}
	sc := client.New(env.URL, short)
	if _, err := sc.List(ctx, "segments"); err != nil {
		t.Fatalf("fresh token: %v", err)
	}
	time.Sleep(2100 * time.Millisecond)
	_, err = sc.List(ctx, "segments")
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v", err)
	}

	// Revocation by id removes that token only, even when others share its name.
	a1, _ := admin.CreateToken(ctx, client.TokenRequest{Name: "ops", Role: api.RoleNetwork})
	a2, _ := admin.CreateToken(ctx, client.TokenRequest{Name: "ops", Role: api.RoleNetwork})
	env.Tokens["ops1"], env.Tokens["ops2"] = a1, a2
	id1 := tokenID(t, env, "ops1")
	if err := admin.RevokeTokenID(ctx, id1); err != nil {
		t.Fatal(err)
	}
	if a := lastAudit(t, env); a.Action != "revoke-token" || a.Detail["id"] != id1 || a.TokenID != adminID {
		t.Errorf("audit of revoke by id: %+v", a)
	}
	if _, err := client.New(env.URL, a1).List(ctx, "segments"); err == nil {
		t.Error("token revoked by id still works")
	}
	if _, err := client.New(env.URL, a2).List(ctx, "segments"); err != nil {
		t.Errorf("the other token of the same name stopped working: %v", err)
	}
	if err := admin.RevokeTokenID(ctx, id1); err == nil || !strings.Contains(err.Error(), `token id "`+id1+`" not found`) {
		t.Errorf("second revoke by id: %v", err)
	}

	// The last admin token cannot be revoked, by name or by id; with a second admin it can.
	for _, revoke := range []func() error{
		func() error { return admin.RevokeToken(ctx, "admin") },
		func() error { return admin.RevokeTokenID(ctx, adminID) },
	} {
		err := revoke()
		if !errors.As(err, &ce) || ce.Status != http.StatusConflict || !strings.Contains(err.Error(), "last valid admin token") {
			t.Errorf("revoking the last admin: %v", err)
		}
		if _, err := admin.List(ctx, "segments"); err != nil {
			t.Fatalf("admin locked out: %v", err)
		}
	}
	// An expiring second admin does not count once expired.
	if _, err := admin.CreateToken(ctx, client.TokenRequest{Name: "admin", Role: api.RoleAdmin, TTL: "1s"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if err := admin.RevokeToken(ctx, "admin"); err == nil {
		t.Error("revoking every admin named admin, the other one expired: accepted")
	}
	second, err := admin.CreateToken(ctx, client.TokenRequest{Name: "admin2", Role: api.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.RevokeToken(ctx, "admin"); err != nil {
		t.Fatalf("revoking admin with admin2 left: %v", err)
	}
	if _, err := client.New(env.URL, second).List(ctx, "segments"); err != nil {
		t.Fatalf("admin2: %v", err)
	}

	// Listing shows ids and expiry, never tokens.
	raw, err := client.New(env.URL, second).TokensRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"id": "tok_`) || strings.Contains(string(raw), "gc_") {
		t.Errorf("token list: %s", raw)
	}
}

// TestWritesAudited: applies carry the token id and client address; refused writes by a
// valid token and by no token are audited as refused.
func TestWritesAudited(t *testing.T) {
	env, ctx := setup(t)
	if a := lastAudit(t, env); a.Action != "apply" || a.TokenID != tokenID(t, env, "admin") || !strings.HasPrefix(a.Remote, "127.0.0.1:") {
		t.Errorf("audit of apply: %+v", a)
	}
	if _, err := env.Client("lands").Delete(ctx, "segments", "lands-web", false); err == nil {
		t.Fatal("department token deleted a segment")
	}
	if a := lastAudit(t, env); a.Result != "refused" || a.Who != "lands-viewer" || a.TokenID != tokenID(t, env, "lands") || a.Action != "DELETE /v1/objects/segments/lands-web" {
		t.Errorf("audit of a refused delete: %+v", a)
	}
	if _, err := client.New(env.URL, "gc_forged").Delete(ctx, "segments", "lands-web", false); err == nil {
		t.Fatal("forged token deleted a segment")
	}
	if a := lastAudit(t, env); a.Result != "refused" || a.Who != "unauthenticated" || a.TokenID != "" || !strings.Contains(a.Error, "invalid token") {
		t.Errorf("audit of an unauthenticated write: %+v", a)
	}
}

// TestPeerHealthIsBoundedAndScoped (issue 14 §4): a status report is bounded, and an agent
// reads of its peers only the down backends it balances, not every host's whole report.
func TestPeerHealthIsBoundedAndScoped(t *testing.T) {
	env, ctx := setup(t)
	admin := env.Client("admin")
	if _, err := admin.Apply(ctx, "peers.yaml", []byte(peerFixture), client.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("x", 200<<10)
	rep := map[string]any{"host": "host1", "pad": pad, "backends": hoststatus.Backends{
		{Service: "lands-www", Addr: netip.MustParseAddr("198.18.20.2")}:  {Reason: "connection refused"}, // lands-vm1, on host1
		{Service: "lands-www", Addr: netip.MustParseAddr("198.18.20.50")}: {Up: true},
	}}
	if err := env.Client("agent-host1").PutHostStatus(ctx, "host1", rep); err != nil {
		t.Fatalf("a 200 KiB report: %v", err)
	}
	rep["pad"] = strings.Repeat("x", api.MaxStatusBytes)
	err := env.Client("agent-host1").PutHostStatus(ctx, "host1", rep)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusRequestEntityTooLarge || !strings.Contains(err.Error(), `host "host1"`) {
		t.Fatalf("a report over %d bytes: %v", api.MaxStatusBytes, err)
	}
	got, err := admin.PeerHealth(ctx, "host2")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(got)
	if len(b) > 1024 || strings.Contains(string(b), "xxxx") || !strings.Contains(string(b), `{"host1":[{"service":"lands-www","address":"198.18.20.2","up":false,"reason":"connection refused"}]}`) || strings.Contains(string(b), "198.18.20.50") {
		t.Errorf("host2's peer health (%d bytes): %.300s", len(b), b)
	}
	if got, err := admin.PeerHealth(ctx, "host1"); err != nil || len(got) != 0 {
		t.Errorf("host1's own report is not its peer health: %v %v", got, err)
	}
	if _, err := env.Client("agent-host1").PeerHealth(ctx, "host2"); err == nil {
		t.Error("host1's agent read host2's peer health")
	}
}
