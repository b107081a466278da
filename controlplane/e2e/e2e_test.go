package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/apitest"
	"github.com/govcloud/govcloud/controlplane/client"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "govcloud-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "govcloud")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/govcloud/govcloud/cmd/govcloud").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/govcloud: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	apitest.Shutdown()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, api, token string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "GOVCLOUD_API="+api, "GOVCLOUD_TOKEN="+token)
	if ca := caOf(api); ca != "" {
		cmd.Env = append(cmd.Env, "GOVCLOUD_CA="+ca)
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	r := result{stdout: o.String(), stderr: e.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return r
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "input.yaml")
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestCLIBadInputChangesNothing(t *testing.T) {
	env := apitest.New(t)
	if r := run(t, env.URL, env.Tokens["admin"], "apply", "-f", writeFile(t, apitest.Base)); r.code != 0 {
		t.Fatalf("apply base: %+v", r)
	}
	env.Tokens["bogus"] = "gc_0123456789"
	for _, tc := range apitest.BadCases {
		t.Run(tc.Desc, func(t *testing.T) {
			before := env.Fingerprint(t)
			var args []string
			switch tc.Op {
			case "apply":
				args = []string{"apply", "-f", writeFile(t, tc.YAML)}
			case "delete":
				args = []string{"delete", tc.Kind, tc.Name}
			case "get":
				args = []string{"get", tc.Kind, tc.Name, "-o", "json"}
			}
			r := run(t, env.URL, env.Tokens[tc.Role], args...)
			if r.code == 0 {
				t.Fatalf("exit 0, want failure; stdout %q", r.stdout)
			}
			for _, w := range tc.Want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q does not name %q", r.stderr, w)
				}
			}
			if tc.Op == "apply" && strings.Contains(tc.YAML, "lands-db") && !strings.Contains(r.stderr, "input.yaml") && tc.Status == 422 {
				t.Errorf("stderr %q does not name the file", r.stderr)
			}
			if after := env.Fingerprint(t); after != before {
				t.Errorf("state changed:\nbefore %s\nafter %s", before, after)
			}
		})
	}
}

func TestCLIVerbs(t *testing.T) {
	env := apitest.New(t)
	admin := env.Tokens["admin"]
	f := writeFile(t, apitest.Base)
	r := run(t, env.URL, admin, "plan", "-f", f)
	if r.code != 0 || !strings.Contains(r.stdout, "+ create Segment lands-web") || !strings.Contains(r.stdout, "10 to create") {
		t.Fatalf("plan: %+v", r)
	}
	if r := run(t, env.URL, admin, "get", "segments", "-o", "json"); r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("plan changed something: %+v", r)
	}
	if r := run(t, env.URL, admin, "apply", "-f", f); r.code != 0 || !strings.Contains(r.stdout, "Applied: 10 to create") {
		t.Fatalf("apply: %+v", r)
	}
	// One change: plan names it and the field.
	changed := strings.Replace(apitest.Base, "vlan: 120", "vlan: 130", 1)
	r = run(t, env.URL, admin, "plan", "-f", writeFile(t, changed))
	if r.code != 0 || !strings.Contains(r.stdout, "~ update Segment lands-web (spec.vlan, status.vlan)\n    spec.vlan: 120 -> 130\n") || !strings.Contains(r.stdout, "0 to create, 1 to update, 0 to delete, 9 unchanged") {
		t.Fatalf("plan of one change: %+v", r)
	}
	r = run(t, env.URL, admin, "get", "services", "-o", "json")
	var svcs []struct {
		Name string `json:"name"`
		VIP  string `json:"vip"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &svcs); err != nil || len(svcs) != 2 || svcs[1].Name != "lands-www" || svcs[1].VIP != "198.19.0.1" {
		t.Fatalf("get services -o json: %v %+v %s", err, svcs, r.stdout)
	}
	r = run(t, env.URL, admin, "get", "vms", "-o", "json")
	var vms []struct {
		Addresses []string `json:"addresses"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &vms); err != nil || len(vms) != 1 || len(vms[0].Addresses) != 1 || vms[0].Addresses[0] != "198.18.20.2" {
		t.Fatalf("get vms -o json: %v %s", err, r.stdout)
	}
	if r := run(t, env.URL, admin, "get", "segment", "lands-web", "-o", "yaml"); r.code != 0 || !strings.Contains(r.stdout, "vlan: 120") {
		t.Fatalf("get -o yaml: %+v", r)
	}
	if r := run(t, env.URL, admin, "get", "all"); r.code != 0 || !strings.Contains(r.stdout, "vip=198.19.1.10") || !strings.Contains(r.stdout, "vlan=100") {
		t.Fatalf("get all: %+v", r)
	}
	if r := run(t, env.URL, admin, "get", "all", "--department", "health"); r.code != 0 || strings.Contains(r.stdout, "lands") || !strings.Contains(r.stdout, "health-web") {
		t.Fatalf("get all --department health: %+v", r)
	}
	if r := run(t, env.URL, admin, "get", "routers"); r.code == 0 || !strings.Contains(r.stderr, `unknown kind "routers"`) {
		t.Fatalf("get unknown kind: %+v", r)
	}
	if r := run(t, env.URL, env.Tokens["lands"], "get", "segments"); r.code != 0 || strings.Contains(r.stdout, "health-web") || !strings.Contains(r.stdout, "lands-web") {
		t.Fatalf("department token listing: %+v", r)
	}
	// plan --prune shows what apply --prune would delete.
	withoutHealthWWW := apitest.Base[:strings.Index(apitest.Base, "---\napiVersion: govcloud/v1\nkind: Service\nmetadata: {name: health-www}")]
	if r := run(t, env.URL, admin, "plan", "--prune", "-f", writeFile(t, withoutHealthWWW)); r.code != 0 || !strings.Contains(r.stdout, "- delete Service health-www") || !strings.Contains(r.stdout, "1 to delete") {
		t.Fatalf("plan --prune: %+v", r)
	}
	if r := run(t, env.URL, admin, "delete", "service", "health-www"); r.code != 0 || !strings.Contains(r.stdout, "- delete Service health-www") {
		t.Fatalf("delete: %+v", r)
	}
	if r := run(t, env.URL, admin, "status"); r.code != 0 || !strings.Contains(r.stdout, "Service:     1") {
		t.Fatalf("status: %+v", r)
	}
	if r := run(t, env.URL, admin, "audit"); r.code != 0 || !strings.Contains(r.stdout, "delete Service/health-www") || !strings.Contains(r.stdout, "admin (admin)") {
		t.Fatalf("audit: %+v", r)
	}
	if r := run(t, env.URL, env.Tokens["lands"], "audit"); r.code == 0 || !strings.Contains(r.stderr, "may not read the audit log") {
		t.Fatalf("audit with a department token: %+v", r)
	}
	if r := run(t, env.URL, admin, "token", "create", "--name", "x", "--role", "department"); r.code == 0 || !strings.Contains(r.stderr, "needs a department") {
		t.Fatalf("bad token request: %+v", r)
	}
}

// Two engineers plan at the same revision and apply conflicting changes at once: one wins, the
// other gets a conflict naming the object, and its change is not made.
func TestCLIConcurrentConflictingApplies(t *testing.T) {
	env := apitest.New(t)
	admin := env.Tokens["admin"]
	if r := run(t, env.URL, admin, "apply", "-f", writeFile(t, apitest.Base)); r.code != 0 {
		t.Fatalf("apply base: %+v", r)
	}
	r := run(t, env.URL, admin, "plan", "-f", writeFile(t, apitest.Base), "-o", "json")
	var p struct {
		Revision int64 `json:"revision"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil || p.Revision == 0 {
		t.Fatalf("plan -o json: %v %+v", err, r)
	}
	files := []string{
		writeFile(t, apitest.Doc("Segment", "lands-web", "{department: lands, vlan: 131, ipv4: 198.18.20.0/24, gateway: 198.18.20.1}")),
		writeFile(t, apitest.Doc("Segment", "lands-web", "{department: lands, vlan: 132, ipv4: 198.18.20.0/24, gateway: 198.18.20.1}")),
	}
	results := make([]result, 2)
	done := make(chan int)
	for i := range files {
		go func() {
			results[i] = run(t, env.URL, env.Tokens["network"], "apply", "-f", files[i], "--base-revision", fmt.Sprint(p.Revision))
			done <- i
		}()
	}
	<-done
	<-done
	winner := -1
	for i, r := range results {
		switch {
		case r.code == 0:
			winner = i
		case strings.Contains(r.stderr, `Segment "lands-web"`) && strings.Contains(r.stderr, "conflict"):
		default:
			t.Errorf("apply %d: %+v", i, r)
		}
	}
	if winner < 0 || results[0].code == results[1].code {
		t.Fatalf("want exactly one success: %+v", results)
	}
	r = run(t, env.URL, admin, "get", "segment", "lands-web", "-o", "json")
	if !strings.Contains(r.stdout, fmt.Sprintf(`"vlan": %d`, 131+winner)) {
		t.Errorf("segment after the race is not the winner's (VLAN %d): %s", 131+winner, r.stdout)
	}
}

func freePortB(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type proc struct {
	cmd    *exec.Cmd
	addr   string
	out    *bytes.Buffer
	ca     string // the CA file of an HTTPS controller ("" with --insecure-http)
	scheme string
}

var (
	casMu sync.Mutex
	cas   = map[string]string{} // controller URL -> its CA file
)

// caOf is the CA file clients of the controller at url verify it with.
func caOf(url string) string {
	casMu.Lock()
	defer casMu.Unlock()
	return cas[url]
}

// startController runs a controller process (HTTPS unless args say --insecure-http) and
// waits until it answers /healthz, verified with the CA it made in its --data-dir.
func startController(t *testing.T, args ...string) *proc {
	t.Helper()
	return startControllerB(t, args...)
}

func (p *proc) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		_ = p.cmd.Wait()
	}
}

func (p *proc) url() string { return p.scheme + p.addr }

// client is an API client of p that verifies it with its CA.
func (p *proc) client(tb testing.TB, token string) *client.Client {
	c := client.New(p.url(), token)
	if p.ca != "" {
		if err := c.SetCAFile(p.ca); err != nil {
			tb.Fatal(err)
		}
	}
	return c
}

func TestControllerSurvivesKill9(t *testing.T) {
	dir := t.TempDir()
	c1 := startController(t, "--data-dir", dir)
	tokb, err := os.ReadFile(filepath.Join(dir, "admin-token"))
	if err != nil {
		t.Fatalf("admin token not written: %v (output %s)", err, c1.out)
	}
	tok := strings.TrimSpace(string(tokb))
	if strings.Contains(c1.out.String(), tok) || !strings.Contains(c1.out.String(), "admin token: written to "+filepath.Join(dir, "admin-token")) {
		t.Errorf("first start printed the admin token or did not name its file: %s", c1.out)
	}
	example, _ := filepath.Abs("../../deploy/examples/departments.yaml")
	if r := run(t, c1.url(), tok, "apply", "-f", example); r.code != 0 {
		t.Fatalf("apply example: %+v", r)
	}
	before := run(t, c1.url(), tok, "get", "all", "-o", "json")
	stBefore := run(t, c1.url(), tok, "status", "-o", "json")
	c1.kill() // SIGKILL: no shutdown path runs
	c2 := startController(t, "--data-dir", dir)
	if strings.Contains(c2.out.String(), tok) || !strings.Contains(c2.out.String(), "admin token: see") {
		t.Errorf("restart printed a token again or did not point to it: %s", c2.out)
	}
	after := run(t, c2.url(), tok, "get", "all", "-o", "json")
	if after.code != 0 || after.stdout != before.stdout {
		t.Fatalf("objects differ after kill -9 and restart:\nbefore %s\nafter %s %s", before.stdout, after.stdout, after.stderr)
	}
	var s1, s2 struct {
		Revision int64 `json:"revision"`
	}
	_ = json.Unmarshal([]byte(stBefore.stdout), &s1)
	_ = json.Unmarshal([]byte(run(t, c2.url(), tok, "status", "-o", "json").stdout), &s2)
	if s1.Revision == 0 || s1.Revision != s2.Revision {
		t.Errorf("revision %d before, %d after restart", s1.Revision, s2.Revision)
	}
	// Re-applying changes nothing: allocations survived.
	if r := run(t, c2.url(), tok, "apply", "-f", example); r.code != 0 || !strings.Contains(r.stdout, "0 to create, 0 to update, 0 to delete, 13 unchanged") {
		t.Fatalf("re-apply after restart: %+v", r)
	}
}

func leaderOf(t *testing.T, p *proc, tok string) (bool, string, error) {
	var st client.Status
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := p.client(t, tok).Status(ctx)
	if err != nil {
		return false, "", err
	}
	st = *s
	return st.Leader.IsLeader, st.Leader.Leader, nil
}

func TestLeaderFailover(t *testing.T) {
	apitest.Store(t) // starts the shared etcd
	ep := apitest.Endpoint()
	d1, d2 := t.TempDir(), t.TempDir()
	c1 := startController(t, "--data-dir", d1, "--etcd-endpoints", ep, "--election-ttl", "1s", "--id", "c1")
	c2 := startController(t, "--data-dir", d2, "--etcd-endpoints", ep, "--election-ttl", "1s", "--id", "c2")
	tokb, err := os.ReadFile(filepath.Join(d1, "admin-token"))
	if err != nil {
		t.Fatalf("first controller wrote no admin token: %v", err)
	}
	tok := strings.TrimSpace(string(tokb))
	if _, err := os.Stat(filepath.Join(d2, "admin-token")); err == nil {
		t.Error("second controller made a second admin token")
	}
	procs := map[string]*proc{"c1": c1, "c2": c2}
	var leader string
	deadline := time.Now().Add(15 * time.Second)
	for leader == "" && time.Now().Before(deadline) {
		l1, n1, err1 := leaderOf(t, c1, tok)
		l2, n2, err2 := leaderOf(t, c2, tok)
		if err1 == nil && err2 == nil && l1 != l2 && n1 == n2 && n1 != "" {
			leader = n1
		}
		time.Sleep(100 * time.Millisecond)
	}
	if leader == "" {
		t.Fatalf("no single leader agreed on: %s / %s", c1.out, c2.out)
	}
	survivor, follower := procs["c1"], "c1"
	if leader == "c1" {
		survivor, follower = procs["c2"], "c2"
	}
	// A write sent to the follower is forwarded to the leader, which allocates and commits.
	example, _ := filepath.Abs("../../deploy/examples/departments.yaml")
	data, _ := os.ReadFile(example)
	req, _ := http.NewRequest(http.MethodPost, survivor.url()+"/v1/apply", bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := survivor.client(t, tok).HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Govcloud-Controller") != leader {
		t.Fatalf("apply via follower %s: HTTP %d served by %q, want the leader %s", follower, resp.StatusCode, resp.Header.Get("X-Govcloud-Controller"), leader)
	}
	procs[leader].kill()
	start := time.Now()
	for {
		if is, _, err := leaderOf(t, survivor, tok); err == nil && is {
			break
		}
		if time.Since(start) > 15*time.Second {
			t.Fatalf("survivor did not take over within 15s: %s", survivor.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("leader %s killed; survivor took over in %v", leader, time.Since(start).Round(time.Millisecond))
	changed := filepath.Join(t.TempDir(), "changed.yaml")
	_ = os.WriteFile(changed, []byte(strings.Replace(string(data), "vlan: 120", "vlan: 121", 1)), 0o600)
	if r := run(t, survivor.url(), tok, "apply", "-f", changed); r.code != 0 || !strings.Contains(r.stdout, "~ update Segment lands-web") {
		t.Fatalf("apply through the survivor: %+v", r)
	}
}
