package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/govcloud/govcloud/controlplane/store"
	"github.com/govcloud/govcloud/controlplane/store/etcdtest"
)

// TestWeekOfChurnStaysSmall: a simulated week of 8 hosts reporting usage every 5 minutes —
// each report an audit entry and a rewrite of the month's ledger totals (30 departments), as
// the usage ledger does — against a real external etcd, with the leader's housekeeping every
// simulated hour (audit retention of one day, compaction one step behind). The database stays
// under 8 MB (4.3 MB measured), and the audit log holds only the last day.
func TestWeekOfChurnStaysSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("writes about 16,000 transactions to a real etcd")
	}
	curl, out := etcdtest.Start(t, t.TempDir(), "http", "--max-txn-ops", "100000", "--max-request-bytes", "67108864")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var st *store.Store
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		if st, err = store.Connect([]string{curl}, log); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd not up: %v\n%s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer st.Close()
	ctx := context.Background()
	cli := st.Client()

	const (
		hosts      = 8
		perHour    = 12 // one report per host every 5 minutes
		days       = 7
		keepAudit  = 24 * time.Hour
		maxDBBytes = 8 << 20
	)
	totals := map[string]any{}
	for d := range 30 {
		totals[fmt.Sprintf("dept-%02d", d)] = map[string]any{"rxBytes": 123456789012, "txBytes": 98765432109, "vcpuSeconds": 86400.5, "memoryGiBSeconds": 345600.25, "storageGiBSeconds": 8640000}
	}
	ledger, _ := json.Marshal(totals)
	c := &Compactor{Store: st}
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var maxDB int64
	t0 := time.Now()
	for h := range days * 24 {
		now := start.Add(time.Duration(h) * time.Hour)
		for r := range perHour {
			for host := range hosts {
				at := now.Add(time.Duration(r)*5*time.Minute + time.Duration(host)*time.Second)
				ae := store.AuditEntry{Time: at, Who: fmt.Sprintf("agent-host%d", host), Role: "agent", TokenID: "tok_0123456789abcdef",
					Remote: "198.18.0.11:50412", Action: "usage-report", Detail: map[string]any{"host": fmt.Sprintf("host%d", host), "sequence": h*perHour + r, "departments": 30, "epoch": "e-" + strings.Repeat("7", 16)}}
				if err := st.AppendAudit(ctx, ae); err != nil {
					t.Fatal(err)
				}
				if _, err := cli.Put(ctx, "/govcloud/metering/usage/2026-11/totals", string(ledger)); err != nil {
					t.Fatal(err)
				}
			}
		}
		// The leader's hourly housekeeping, in simulated time.
		if _, err := st.TrimAudit(ctx, now.Add(time.Hour-keepAudit), DefaultAuditMaxEntries); err != nil {
			t.Fatal(err)
		}
		if err := c.Step(ctx); err != nil {
			t.Fatal(err)
		}
		if h%24 == 23 {
			s, err := cli.Status(ctx, curl)
			if err != nil {
				t.Fatal(err)
			}
			maxDB = max(maxDB, s.DbSize)
			t.Logf("day %d: etcd database %.1f MB (in use %.1f MB), revision %d", h/24+1, float64(s.DbSize)/(1<<20), float64(s.DbSizeInUse)/(1<<20), s.Header.Revision)
		}
	}
	r, err := cli.Get(ctx, st.Prefix()+"audit/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(24 * perHour * hosts); r.Count > want+int64(perHour*hosts) {
		t.Errorf("%d audit entries kept, want about one day's %d", r.Count, want)
	}
	t.Logf("a week of %d reports in %v; largest database %.1f MB; %d audit entries kept", days*24*perHour*hosts, time.Since(t0).Round(time.Second), float64(maxDB)/(1<<20), r.Count)
	if maxDB > maxDBBytes {
		t.Errorf("etcd database reached %.1f MB, want under %d MB", float64(maxDB)/(1<<20), maxDBBytes>>20)
	}
}
