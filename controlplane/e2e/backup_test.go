package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/apitest"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/metering"
)

// call sends one request with c's transport and token and returns the status and body.
func call(t *testing.T, c *client.Client, method, url string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, url, rd)
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

var revisionField = regexp.MustCompile(`"revision": \d+`)

// TestBackupRestore: backup of a live controller -> restore into a new data dir -> a
// controller on it (another address) serves the same objects with the same allocations,
// the old tokens work, the audit log, the usage ledger and the CA are the same; the
// restored controller's scheduled backups and their metrics work; a truncated backup is
// refused with nothing written.
func TestBackupRestore(t *testing.T) {
	dir1 := filepath.Join(t.TempDir(), "c1")
	c1 := startController(t, "--data-dir", dir1)
	tokb, err := os.ReadFile(filepath.Join(dir1, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(tokb))
	if r := run(t, c1.url(), tok, "apply", "-f", writeFile(t, apitest.Base)); r.code != 0 {
		t.Fatalf("apply base: %+v", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lands, err := c1.client(t, tok).CreateToken(ctx, client.TokenRequest{Name: "lands-ops", Role: "department", Department: "lands"})
	if err != nil {
		t.Fatal(err)
	}
	// Usage: a baseline and a minute of traffic from host1's network agent (sent as admin).
	now := time.Now().UTC()
	ac := c1.client(t, tok)
	for i, total := range []uint64{0, 5 << 20} {
		rep := metering.Report{Host: "host1", Source: metering.SourceNetwork, Epoch: "e1", Seq: uint64(i + 1), PrevSeq: uint64(i),
			Time: now.Add(time.Duration(i-1) * time.Minute), Samples: []metering.Sample{{Department: "lands", Resource: metering.ResNetTxBytes, Total: total}}}
		if code, b := call(t, ac, "POST", c1.url()+"/v1/usage/reports", rep); code != 200 {
			t.Fatalf("usage report %d: %d %s", i+1, code, b)
		}
	}
	month := now.Format("2006-01")
	_, bill1 := call(t, ac, "GET", c1.url()+"/v1/usage?month="+month, nil)
	if !bytes.Contains(bill1, []byte("lands")) {
		t.Fatalf("bill before backup names no lands usage: %s", bill1)
	}
	objs1 := run(t, c1.url(), tok, "get", "all", "-o", "json")
	audit1 := run(t, c1.url(), tok, "audit", "-o", "json")

	// Department tokens may not take backups (a backup holds every department's data).
	bdir := filepath.Join(t.TempDir(), "backups")
	if r := run(t, c1.url(), lands, "backup", "create", "--to", bdir); r.code == 0 || !strings.Contains(r.stderr, "admin only") {
		t.Fatalf("backup with a department token: %+v, want refusal", r)
	}
	r := run(t, c1.url(), tok, "backup", "create", "--to", bdir)
	if r.code != 0 || !strings.Contains(r.stdout, "backup written: ") {
		t.Fatalf("backup create: %+v", r)
	}
	m := regexp.MustCompile(`backup written: (\S+)`).FindStringSubmatch(r.stdout)
	file := m[1]
	for _, want := range []string{"Segment", "Service", "VM", "tokens", "audit", "metering", "pki"} {
		if !regexp.MustCompile(`(?m)^\s+` + want + `\s+[1-9]`).MatchString(r.stdout) {
			t.Errorf("manifest printed by backup create has no %s count: %s", want, r.stdout)
		}
	}
	if r := run(t, "", "", "backup", "verify", file); r.code != 0 || !strings.Contains(r.stdout, "OK") {
		t.Fatalf("backup verify: %+v", r)
	}
	if r := run(t, "", "", "backup", "list", "--dir", bdir); r.code != 0 || !strings.Contains(r.stdout, filepath.Base(file)) {
		t.Fatalf("backup list: %+v", r)
	}
	// Changes after the backup are not in it.
	if r := run(t, c1.url(), tok, "apply", "-f", writeFile(t, apitest.Doc("Segment", "lands-late", "{department: lands, ipv4: 198.18.99.0/24, gateway: 198.18.99.1}"))); r.code != 0 {
		t.Fatalf("apply after backup: %+v", r)
	}
	ca1, _ := os.ReadFile(filepath.Join(dir1, "ca.crt"))
	c1.kill()

	// A truncated backup is refused and writes nothing.
	raw, _ := os.ReadFile(file)
	trunc := filepath.Join(t.TempDir(), "truncated.gcbackup")
	_ = os.WriteFile(trunc, raw[:len(raw)*2/3], 0o600)
	parent := t.TempDir()
	if r := run(t, "", "", "restore", "--from", trunc, "--data-dir", filepath.Join(parent, "c2")); r.code == 0 || !strings.Contains(r.stderr, "truncated") {
		t.Fatalf("restore of a truncated backup: %+v", r)
	}
	if des, _ := os.ReadDir(parent); len(des) != 0 {
		t.Fatalf("refused restore left %s", des[0].Name())
	}

	dir2 := filepath.Join(parent, "c2")
	if r := run(t, "", "", "restore", "--from", file, "--data-dir", dir2); r.code != 0 {
		t.Fatalf("restore: %+v", r)
	}
	metrics := freePortB(t)
	bdir2 := filepath.Join(t.TempDir(), "scheduled")
	c2 := startController(t, "--data-dir", dir2, "--backup-dir", bdir2, "--backup-interval", "1h", "--backup-keep", "2", "--metrics-listen", metrics)
	if c2.addr == c1.addr {
		t.Fatal("restored controller on the old address")
	}
	if ca2, _ := os.ReadFile(filepath.Join(dir2, "ca.crt")); !bytes.Equal(ca1, ca2) {
		t.Errorf("restored controller's CA differs from the original (hosts' certificates would break)")
	}
	objs2 := run(t, c2.url(), tok, "get", "all", "-o", "json")
	if objs2.code != 0 || revisionField.ReplaceAllString(objs2.stdout, "") != revisionField.ReplaceAllString(objs1.stdout, "") {
		t.Fatalf("objects (with allocations) differ after restore:\nbefore %s\nafter %s %s", objs1.stdout, objs2.stdout, objs2.stderr)
	}
	if strings.Contains(objs2.stdout, "lands-late") {
		t.Errorf("object created after the backup is in the restored store")
	}
	if r := run(t, c2.url(), lands, "get", "segments", "-o", "json"); r.code != 0 || !strings.Contains(r.stdout, "lands-web") {
		t.Errorf("department token after restore: %+v", r)
	}
	audit2 := run(t, c2.url(), tok, "audit", "-o", "json")
	var a1, a2 []map[string]any
	_ = json.Unmarshal([]byte(audit1.stdout), &a1)
	_ = json.Unmarshal([]byte(audit2.stdout), &a2)
	if len(a1) == 0 || len(a2) < len(a1) {
		t.Errorf("audit: %d entries before the backup, %d after restore", len(a1), len(a2))
	}
	_, bill2 := call(t, c2.client(t, tok), "GET", c2.url()+"/v1/usage?month="+month, nil)
	if !bytes.Equal(bill1, bill2) {
		t.Errorf("usage bill differs after restore:\nbefore %s\nafter %s", bill1, bill2)
	}
	// Allocations are kept: re-applying the same file changes nothing.
	if r := run(t, c2.url(), tok, "apply", "-f", writeFile(t, apitest.Base)); r.code != 0 || !strings.Contains(r.stdout, "0 to create, 0 to update, 0 to delete") {
		t.Errorf("re-apply after restore: %+v\nrestored controller's log:\n%s", r, c2.out)
	}

	// The restored controller leads and writes its first scheduled backup at once.
	deadline := time.Now().Add(30 * time.Second)
	var body string
	for {
		resp, err := http.Get("http://" + metrics + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			if regexp.MustCompile(`(?m)^govcloud_backup_last_success_timestamp_seconds [1-9]`).MatchString(body) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no scheduled backup reported within 30s: %s\n%s", body, c2.out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, want := range []string{"govcloud_controller_leader 1", "govcloud_backup_interval_seconds 3600", "govcloud_backup_failures_total 0"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	if !regexp.MustCompile(`(?m)^govcloud_backup_last_size_bytes [1-9]`).MatchString(body) {
		t.Errorf("metrics lack a backup size:\n%s", body)
	}
	es, _ := filepath.Glob(filepath.Join(bdir2, "*.gcbackup"))
	if len(es) != 1 {
		t.Fatalf("scheduled backups: %v", es)
	}
	if r := run(t, "", "", "backup", "verify", es[0]); r.code != 0 {
		t.Fatalf("scheduled backup does not verify: %+v", r)
	}
	fmt.Fprintf(os.Stderr, "backup %s: %d bytes\n", filepath.Base(file), len(raw))
}

// TestExportRoundTrip: export -> apply to a fresh controller -> plan shows no change and its
// export is the same; apply(export) onto the same controller is a no-op; get -o yaml is the
// same documents.
func TestExportRoundTrip(t *testing.T) {
	env := apitest.New(t)
	admin := env.Tokens["admin"]
	// Every kind, with the fields plain YAML could misread (strings that look like numbers and
	// booleans) and optional fields set.
	more := apitest.Doc("AddressPool", "lands-pool", "{cidrs: [203.0.113.0/28, '2001:db8:5::/120'], departments: [lands], scope: internal}") +
		apitest.Doc("Volume", "lands-data", "{department: lands, sizeGiB: 5}") +
		apitest.Doc("Segment", "lands-v6", "{department: lands, vlan: 321, ipv4: 198.18.21.0/24, ipv6: '2001:db8:21::/64', gateway: 198.18.21.1}") +
		"---\napiVersion: govcloud/v1\nkind: VM\nmetadata: {name: lands-vm2, labels: {tier: 'true', port: '8080', empty: ''}}\n" +
		"spec: {department: lands, vcpus: 1, memoryMiB: 512, volumes: [lands-data], networks: [{segment: lands-v6, ipv4: 198.18.21.20}], hostSelector: {rack: '1'}}\n" +
		apitest.Doc("Host", "host2", "{uplink: eth1, address: 198.18.0.12, labels: {rack: '1'}, asn: 65002, routerID: 198.18.0.12, capacity: {vcpus: 8, memoryMiB: 16384}, bgpPeers: [{address: 198.18.0.1, asn: 65000, gracefulRestart: true, holdTime: 9, keepalive: 3}]}") +
		apitest.Doc("Service", "lands-api", "{department: lands, pool: lands-pool, ports: [{port: 8443, protocol: tcp, targetPort: 443}, {port: 53, protocol: udp}], backends: [{vm: lands-vm2, weight: 0}], healthCheck: {type: http, port: 443, path: /healthz, interval: 2s, timeout: 1s, healthyThreshold: 2, unhealthyThreshold: 3}, bgp: {localPref: 200, med: 0}}")
	if r := run(t, env.URL, admin, "apply", "-f", writeFile(t, apitest.Base+more)); r.code != 0 {
		t.Fatalf("apply base: %+v", r)
	}
	ex := run(t, env.URL, admin, "export")
	if ex.code != 0 || strings.Contains(ex.stdout, "status") || strings.Contains(ex.stdout, "revision") {
		t.Fatalf("export: %+v", ex)
	}
	f := writeFile(t, ex.stdout)
	if r := run(t, env.URL, admin, "apply", "-f", f); r.code != 0 || !strings.Contains(r.stdout, "0 to create, 0 to update, 0 to delete") {
		t.Fatalf("apply(export) onto the same controller: %+v\nexport:\n%s", r, ex.stdout)
	}
	if r := run(t, env.URL, admin, "get", "all", "-o", "yaml"); r.code != 0 || r.stdout != ex.stdout {
		t.Errorf("get all -o yaml differs from export:\n%s\nexport:\n%s", r.stdout, ex.stdout)
	}
	if r := run(t, env.URL, admin, "get", "segment", "lands-web", "-o", "yaml"); r.code != 0 || strings.Contains(r.stdout, "status") || !strings.Contains(r.stdout, "kind: Segment") {
		t.Errorf("get segment -o yaml: %+v", r)
	}

	dir := t.TempDir()
	c2 := startController(t, "--data-dir", dir)
	tokb, _ := os.ReadFile(filepath.Join(dir, "admin-token"))
	tok := strings.TrimSpace(string(tokb))
	if r := run(t, c2.url(), tok, "apply", "-f", f); r.code != 0 {
		t.Fatalf("apply(export) to a fresh controller: %+v", r)
	}
	if r := run(t, c2.url(), tok, "plan", "-f", f); r.code != 0 || !strings.Contains(r.stdout, "0 to create, 0 to update, 0 to delete") {
		t.Fatalf("plan(export) after applying it to a fresh controller: %+v", r)
	}
	if r := run(t, c2.url(), tok, "export"); r.code != 0 || r.stdout != ex.stdout {
		t.Errorf("the fresh controller's export differs:\n%s\nfirst:\n%s", r.stdout, ex.stdout)
	}
}
