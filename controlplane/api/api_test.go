package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/api"
	"github.com/govcloud/govcloud/controlplane/apitest"
	"github.com/govcloud/govcloud/controlplane/client"
)

func TestMain(m *testing.M) {
	code := m.Run()
	apitest.Shutdown()
	os.Exit(code)
}

func setup(t *testing.T) (*apitest.Env, context.Context) {
	t.Helper()
	env := apitest.New(t)
	ctx := context.Background()
	if _, err := env.Client("admin").Apply(ctx, "base.yaml", []byte(apitest.Base), client.ApplyOptions{}); err != nil {
		t.Fatalf("apply base: %v", err)
	}
	return env, ctx
}

func TestBadInputChangesNothing(t *testing.T) {
	env, ctx := setup(t)
	env.Tokens["bogus"] = "gc_0123456789"
	for _, tc := range apitest.BadCases {
		t.Run(tc.Desc, func(t *testing.T) {
			before := env.Fingerprint(t)
			c := env.Client(tc.Role)
			var err error
			switch tc.Op {
			case "apply":
				_, err = c.Apply(ctx, "input.yaml", []byte(tc.YAML), client.ApplyOptions{})
			case "delete":
				_, err = c.Delete(ctx, tc.Kind, tc.Name, false)
			case "get":
				_, err = c.Get(ctx, tc.Kind, tc.Name)
			}
			var ce *client.Error
			if !errors.As(err, &ce) {
				t.Fatalf("want an HTTP %d error, got %v", tc.Status, err)
			}
			if ce.Status != tc.Status {
				t.Errorf("HTTP %d, want %d (%v)", ce.Status, tc.Status, err)
			}
			for _, w := range tc.Want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			if after := env.Fingerprint(t); after != before {
				t.Errorf("state changed:\nbefore %s\nafter %s", before, after)
			}
		})
	}
}

func TestApplyAllocatesAndPlans(t *testing.T) {
	env, ctx := setup(t)
	c := env.Client("admin")
	seg, err := c.Get(ctx, "segments", "health-web")
	if err != nil {
		t.Fatal(err)
	}
	if seg.VLAN != 100 {
		t.Errorf("allocated VLAN %d, want 100 (first of the default range)", seg.VLAN)
	}
	svc, err := c.Get(ctx, "services", "lands-www")
	if err != nil {
		t.Fatal(err)
	}
	if svc.VIP != "198.19.0.1" {
		t.Errorf("allocated VIP %q, want 198.19.0.1", svc.VIP)
	}
	vm, err := c.Get(ctx, "vm", "lands-vm1")
	if err != nil {
		t.Fatal(err)
	}
	if len(vm.Addresses) != 1 || vm.Addresses[0] != "198.18.20.2" || vm.Status.Host != "host1" {
		t.Errorf("VM addresses %v host %q, want [198.18.20.2] on host1", vm.Addresses, vm.Status.Host)
	}
	// Overlap across departments is allowed.
	over := apitest.Doc("Segment", "health-db", "{department: health, ipv4: 198.18.20.0/24}")
	// Plan shows one create and changes nothing.
	before := env.Fingerprint(t)
	res, err := c.Apply(ctx, "x.yaml", []byte(apitest.Base+over), client.ApplyOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Counts["create"] != 1 || res.Counts["unchanged"] != 10 || res.Changes[len(res.Changes)-1].Name == "" {
		t.Errorf("plan counts %v, want 1 create and 10 unchanged", res.Counts)
	}
	if env.Fingerprint(t) != before {
		t.Error("plan changed the state")
	}
	if _, err := c.Apply(ctx, "x.yaml", []byte(over), client.ApplyOptions{}); err != nil {
		t.Fatalf("overlap across departments refused: %v", err)
	}
	// A department token sees only its own department.
	list, err := env.Client("lands").List(ctx, "segments")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != "lands-web" {
		t.Errorf("lands token sees %d segments, want only lands-web", len(list))
	}
	// Audit log recorded who did it.
	raw, err := c.Audit(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"Segment"`) || !strings.Contains(string(raw), `"health-db"`) || !strings.Contains(string(raw), `"who": "admin"`) {
		t.Errorf("audit log lacks the apply: %s", raw)
	}
	// Delete in dependency order works; deleting the segment first is refused.
	if _, err := c.Delete(ctx, "Segment", "health-db", false); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := c.Get(ctx, "Segment", "health-db"); err == nil {
		t.Error("deleted segment still readable")
	}
}

func TestDesiredStateAndWatch(t *testing.T) {
	env, ctx := setup(t)
	agent := env.Client("agent-host1")
	d, err := agent.Desired(ctx, "host1", 0, time.Second)
	if err != nil || d == nil {
		t.Fatalf("desired: %v %v", d, err)
	}
	if len(d.Segments) != 2 || len(d.Services) != 2 || d.BGP == nil || len(d.BGP.Peers) != 1 || len(d.VMs) != 1 {
		t.Fatalf("desired state incomplete: %+v", d)
	}
	var lands *struct{ vip string }
	for _, s := range d.Services {
		if s.Name == "lands-www" {
			lands = &struct{ vip string }{s.VIP.String()}
			if len(s.Backends) != 2 || s.Backends[0].Address != netip.MustParseAddr("198.18.20.2") || s.Backends[0].Host != "host1" || s.Backends[1].Weight != 2 || s.TableID == 0 {
				t.Errorf("lands-www backends %+v table %d", s.Backends, s.TableID)
			}
		}
	}
	if lands == nil || lands.vip != "198.19.0.1" {
		t.Errorf("lands-www VIP %+v", lands)
	}
	if _, err := agent.Desired(ctx, "host2", 0, time.Second); err == nil {
		t.Error("agent of host1 read host2's desired state")
	}
	// No change: the long poll times out.
	start := time.Now()
	if d2, err := agent.Desired(ctx, "host1", d.Revision, 300*time.Millisecond); err != nil || d2 != nil {
		t.Fatalf("long poll without change returned %v, %v", d2, err)
	}
	if time.Since(start) < 250*time.Millisecond {
		t.Error("long poll returned before its timeout")
	}
	// A change wakes the watcher.
	got := make(chan int, 1)
	go func() {
		d3, err := agent.Desired(ctx, "host1", d.Revision, 10*time.Second)
		if err != nil || d3 == nil {
			got <- -1
			return
		}
		got <- len(d3.Segments)
	}()
	time.Sleep(100 * time.Millisecond)
	start = time.Now()
	if _, err := env.Client("admin").Apply(ctx, "y", []byte(apitest.Doc("Segment", "lands-db", "{department: lands, ipv4: 198.18.21.0/24}")), client.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := <-got; n != 3 {
		t.Fatalf("watch returned %d segments, want 3", n)
	}
	if el := time.Since(start); el > 5*time.Second { // generous: CI machines may be loaded
		t.Errorf("watch woke after %v", el)
	}
	// Status write-back.
	if err := agent.PutHostStatus(ctx, "host1", map[string]any{"segments": 3}); err != nil {
		t.Fatal(err)
	}
	if err := agent.PutHostStatus(ctx, "host2", map[string]any{}); err == nil {
		t.Error("agent of host1 wrote host2's status")
	}
	// The compute agent's report is kept apart: it replaces nothing of the network agent's.
	if err := agent.PutComputeStatus(ctx, "host1", map[string]any{"vms": 2}); err != nil {
		t.Fatal(err)
	}
	if err := agent.PutComputeStatus(ctx, "host2", map[string]any{}); err == nil {
		t.Error("agent of host1 wrote host2's compute status")
	}
	st, err := env.Client("admin").Status(ctx)
	var rep struct {
		Status struct {
			Segments int `json:"segments"`
		} `json:"status"`
	}
	if err == nil {
		err = json.Unmarshal(st.Hosts["host1"], &rep)
	}
	if err != nil || rep.Status.Segments != 3 {
		t.Errorf("status %+v %v", st, err)
	}
	var crep struct {
		Status struct {
			VMs int `json:"vms"`
		} `json:"status"`
	}
	if err := json.Unmarshal(st.Compute["host1"], &crep); err != nil || crep.Status.VMs != 2 {
		t.Errorf("compute status %s: %v", st.Compute["host1"], err)
	}
}

func TestConflictingAppliesOneWins(t *testing.T) {
	env, ctx := setup(t)
	c := env.Client("admin")
	res, err := c.Apply(ctx, "p", []byte(apitest.Base), client.ApplyOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	base := res.Revision
	a := apitest.Doc("Segment", "lands-web", "{department: lands, vlan: 121, ipv4: 198.18.20.0/24, gateway: 198.18.20.1}")
	b := apitest.Doc("Segment", "lands-web", "{department: lands, vlan: 122, ipv4: 198.18.20.0/24, gateway: 198.18.20.1}")
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, y := range []string{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = client.New(env.URL, env.Tokens["network"]).Apply(ctx, fmt.Sprintf("engineer%d.yaml", i), []byte(y), client.ApplyOptions{BaseRevision: base})
		}()
	}
	wg.Wait()
	var ok, conflict int
	var winner int
	for i, err := range errs {
		var ce *client.Error
		switch {
		case err == nil:
			ok++
			winner = 121 + i
		case errors.As(err, &ce) && ce.Status == http.StatusConflict && strings.Contains(err.Error(), `Segment "lands-web"`) && strings.Contains(err.Error(), "conflict"):
			conflict++
		default:
			t.Errorf("apply %d: %v", i, err)
		}
	}
	if ok != 1 || conflict != 1 {
		t.Fatalf("%d succeeded, %d conflicted; want one each", ok, conflict)
	}
	seg, err := c.Get(ctx, "Segment", "lands-web")
	if err != nil || seg.VLAN != winner {
		t.Errorf("segment VLAN %d, want the winner's %d (%v)", seg.VLAN, winner, err)
	}
}

// Fifty concurrent applies through two API servers (two controllers) on one store never hand
// out the same VLAN, VIP or address twice.
func TestConcurrentAppliesNeverDuplicate(t *testing.T) {
	env, ctx := setup(t)
	second := apitest.NewOnPrefix(t, storePrefix(t, env))
	servers := []string{env.URL, second.URL}
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			y := apitest.Doc("Segment", fmt.Sprintf("seg%d", i), fmt.Sprintf("{department: health, ipv4: 198.18.%d.0/24}", 100+i)) +
				apitest.Doc("Service", fmt.Sprintf("svc%d", i), "{department: health, ports: [{port: 80}]}")
			_, err := client.New(servers[i%2], env.Tokens["admin"]).Apply(ctx, fmt.Sprintf("c%d.yaml", i), []byte(y), client.ApplyOptions{})
			if err != nil {
				errs <- fmt.Errorf("apply %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	c := env.Client("admin")
	vlans := map[int]string{}
	segs, _ := c.List(ctx, "segments")
	for _, s := range segs {
		if other, dup := vlans[s.VLAN]; dup || s.VLAN == 0 {
			t.Errorf("VLAN %d of %s also used by %s", s.VLAN, s.Name, other)
		}
		vlans[s.VLAN] = s.Name
	}
	vips := map[string]string{}
	svcs, _ := c.List(ctx, "services")
	for _, s := range svcs {
		if other, dup := vips[s.VIP]; dup || s.VIP == "" {
			t.Errorf("VIP %q of %s also used by %s", s.VIP, s.Name, other)
		}
		vips[s.VIP] = s.Name
	}
	if len(segs) != n+2 || len(svcs) != n+2 {
		t.Errorf("%d segments, %d services; want %d each", len(segs), len(svcs), n+2)
	}
}

func storePrefix(t *testing.T, env *apitest.Env) string {
	t.Helper()
	return env.Store.Prefix()
}

func TestOpenAPI(t *testing.T) {
	env := apitest.New(t)
	resp, err := http.Get(env.URL + "/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		OpenAPI string         `json:"openapi"`
		Paths   map[string]any `json:"paths"`
	}
	if err := jsonDecode(resp, &doc); err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
	for _, p := range []string{"/v1/apply", "/v1/plan", "/v1/objects/{kind}/{name}", "/v1/hosts/{name}/desired", "/v1/hosts/{name}/status", "/v1/hosts/{name}/compute-status", "/v1/audit", "/v1/tokens", "/v1/delete", "/v1/vms/{name}/console", "/v1/hosts/{name}/console/{vm}"} {
		if doc.Paths[p] == nil {
			t.Errorf("openapi.json lacks %s", p)
		}
	}
	if doc.OpenAPI != "3.0.3" {
		t.Errorf("openapi %q", doc.OpenAPI)
	}
}

func TestExtraRoutes(t *testing.T) {
	st := apitest.Store(t).WithPrefix("/test/extra/")
	srv := api.New(st, apitest.Log, api.Options{})
	srv.Handle("GET /v1/usage", func(w http.ResponseWriter, r *http.Request, p api.Principal) error {
		if p.Role == api.RoleDepartment && r.URL.Query().Get("department") != p.Department {
			return &api.HTTPError{Status: http.StatusForbidden, Code: "forbidden", Message: p.Name + " may read only its own usage"}
		}
		_, err := fmt.Fprintf(w, "usage for %s", p.Name)
		return err
	})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	tok, err := api.Bootstrap(context.Background(), st)
	if err != nil || tok == "" {
		t.Fatalf("bootstrap: %q %v", tok, err)
	}
	get := func(token, q string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, hs.URL+"/v1/usage"+q, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(tok, ""); code != 200 || body != "usage for admin" {
		t.Errorf("admin: %d %q", code, body)
	}
	if code, _ := get("", ""); code != 401 {
		t.Errorf("no token: %d", code)
	}
	dt, err := client.New(hs.URL, tok).CreateToken(context.Background(), client.TokenRequest{Name: "d", Role: api.RoleDepartment, Department: "lands"})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(dt, "?department=health"); code != 403 || !strings.Contains(body, "only its own usage") {
		t.Errorf("department token, other department: %d %q", code, body)
	}
}

func TestRevokeToken(t *testing.T) {
	env, ctx := setup(t)
	lands := env.Client("lands")
	if _, err := lands.List(ctx, "segments"); err != nil {
		t.Fatal(err)
	}
	if err := lands.RevokeToken(ctx, "lands-viewer"); err == nil {
		t.Error("a department token revoked a token")
	}
	if err := env.Client("admin").RevokeToken(ctx, "lands-viewer"); err != nil {
		t.Fatal(err)
	}
	_, err := lands.List(ctx, "segments")
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized {
		t.Errorf("revoked token still works: %v", err)
	}
	if err := env.Client("admin").RevokeToken(ctx, "lands-viewer"); err == nil || !strings.Contains(err.Error(), `token "lands-viewer" not found`) {
		t.Errorf("second revoke: %v", err)
	}
}
