package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/api"
	"github.com/govcloud/govcloud/controlplane/apitest"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/metering"
)

// TestUsageThroughTheController serves the ledger from a real API server (embedded etcd,
// real tokens), reports as an agent, and reads the bill with 'govcloud usage'.
func TestUsageThroughTheController(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped by -short (make test-unit): starts an embedded etcd")
	}
	st := apitest.Store(t).WithPrefix(fmt.Sprintf("/test/usage/%d/", time.Now().UnixNano()))
	srv := api.New(st, apitest.Log, api.Options{ID: "test"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := usageLedger(ctx, srv, st); err != nil {
		t.Fatal(err)
	}
	go srv.Run(ctx)
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	admin, err := api.Bootstrap(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	tok := map[string]string{"admin": admin}
	for name, req := range map[string]client.TokenRequest{
		"lands": {Name: "lands-viewer", Role: api.RoleDepartment, Department: "lands"},
		"agent": {Name: "agent-host1", Role: api.RoleAgent, Host: "host1"},
	} {
		if tok[name], err = client.New(hs.URL, admin).CreateToken(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	mc := func(role string) *metering.Client { return &metering.Client{Base: hs.URL, Token: tok[role]} }
	at := time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC)
	rep := metering.Report{Reporter: "host1", Epoch: "e1", Seq: 1, Time: at, Samples: []metering.Sample{
		{Department: "lands", Resource: metering.ResNetTxBytes, Total: 4 << 30},
		{Department: "health", Resource: metering.ResNetRxBytes, Total: 100 << 30}}}
	if o, err := mc("agent").Report(ctx, rep); err != nil || !o.Applied {
		t.Fatalf("agent report: %+v %v", o, err)
	}
	if o, err := mc("agent").Report(ctx, rep); err != nil || o.Applied {
		t.Fatalf("repeated report: %+v %v", o, err)
	}
	rep.Reporter = "host2"
	if _, err := mc("agent").Report(ctx, rep); err == nil || !strings.Contains(err.Error(), "may not report usage as \"host2\"") {
		t.Fatalf("agent of host1 reporting as host2: %v", err)
	}
	if _, err := mc("lands").Report(ctx, rep); err == nil {
		t.Fatal("department token reported usage")
	}
	if _, err := mc("agent").Bill(ctx, "2026-11", ""); err == nil {
		t.Fatal("agent read usage")
	}
	if _, err := mc("").Bill(ctx, "2026-11", ""); err == nil {
		t.Fatal("anonymous read usage")
	}
	// A department sees its own bill only, even when it asks for everything.
	b, err := mc("lands").Bill(ctx, "2026-11", "")
	if err != nil || len(b.Departments) != 1 || b.Departments[0].Department != "lands" || b.Total != "0.20" {
		t.Fatalf("lands' bill: %+v %v", b, err)
	}
	if _, err := mc("lands").Bill(ctx, "2026-11", "health"); err == nil || !strings.Contains(err.Error(), "may not read the usage of department \"health\"") {
		t.Fatalf("lands reading health: %v", err)
	}

	// The CLI, as an operator: csv with totals.
	t.Setenv("GOVCLOUD_API", hs.URL)
	t.Setenv("GOVCLOUD_TOKEN", admin)
	var out bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetArgs([]string{"usage", "--month", "2026-11", "-o", "csv"})
	if err := root.ExecuteContext(ctx); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&out).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"health/network_rx_bytes": "1.00", "lands/network_tx_bytes": "0.20", "health/TOTAL": "1.00", "lands/TOTAL": "0.20", "ALL/TOTAL": "1.20"}
	got := map[string]string{}
	for _, r := range rows[1:] {
		got[r[1]+"/"+r[2]] = r[7]
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("csv %s = %q, want %q\n%s", k, got[k], v, out.String())
		}
	}
	root = newRoot()
	root.SetArgs([]string{"usage", "--month", "2026-13"})
	root.SetOut(&out)
	root.SetErr(&out)
	if err := root.ExecuteContext(ctx); err == nil || !strings.Contains(err.Error(), "2026-13") {
		t.Fatalf("bad month: %v", err)
	}
}

func TestMain(m *testing.M) {
	if dir := os.Getenv(meteringChildEnv); dir != "" {
		os.Exit(trunkChild(dir))
	}
	code := m.Run()
	apitest.Shutdown()
	os.Exit(code)
}
