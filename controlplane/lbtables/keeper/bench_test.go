package keeper

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/apitest"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/config/configtest"
	"github.com/govcloud/govcloud/controlplane/lbtables"
	"github.com/govcloud/govcloud/lb"
)

// manyServices is n services of 10 nat backends each (service i: backends shifted by i),
// svc-0 with the backends first, and each service i in bump with one backend replaced, with
// VIPs from a /20 pool.
func manyServices(n int, first []int, bump map[int]bool) string {
	var b strings.Builder
	b.WriteString(configtest.LandsHealth + hosts)
	b.WriteString(apitest.Doc("AddressPool", "bench", "{cidrs: [198.19.16.0/20], departments: [lands]}"))
	for i := range n {
		ids := first
		if i > 0 {
			ids = nil
			for j := range 10 {
				ids = append(ids, (i+j*23)%240)
			}
			if bump[i] {
				ids[0] = (ids[0] + 7) % 240
			}
		}
		var bs []string
		for _, id := range ids {
			bs = append(bs, fmt.Sprintf("{address: 198.18.20.%d}", 10+id))
		}
		fmt.Fprintf(&b, "---\napiVersion: govcloud/v1\nkind: Service\nmetadata: {name: svc-%d}\nspec: {department: lands, vip: 198.19.%d.%d, mode: nat, ports: [{port: 80}], backends: [%s]}\n",
			i, 16+i/250, i%250+1, strings.Join(bs, ", "))
	}
	return b.String()
}

// BenchmarkMaglevTablesReport prints (make bench-maglev) the controller's table computation for
// 1000 services at 65537 slots (10 backends each, svc-0 100) — all from scratch, one service
// changed, one backend removed from every service that has it — and what a host fetches:
// everything from scratch; after missing 10 changes of svc-0 (each replacing one of its 100
// backends); after missing 10 changes of 10 services (one backend of 10 replaced in each);
// against the whole tables.
func BenchmarkMaglevTablesReport(b *testing.B) {
	for b.Loop() {
		benchReport(b)
	}
}

func benchReport(b *testing.B) {
	ctx := context.Background()
	e := newEnv(b, lb.DefaultTableSize)
	var first []int
	for i := range 100 {
		first = append(first, i)
	}
	apply := func(yaml string) int64 {
		r, err := e.admin.Apply(ctx, "bench.yaml", []byte(yaml), client.ApplyOptions{Prune: true})
		if err != nil {
			b.Fatalf("apply: %v", err)
		}
		return r.Revision
	}
	step := func(what string) StepResult {
		start := time.Now()
		res, err := e.k.Step(ctx)
		if err != nil {
			b.Fatalf("%s: %v", what, err)
		}
		took := time.Since(start)
		fmt.Printf("controller: %-44s %4d tables built, %4d removed, %8d slots moved, %9d bytes to etcd, %8.1f ms\n",
			what, res.Changed, res.Deleted, res.MovedSlots, res.BytesWritten, float64(took.Microseconds())/1000)
		return res
	}
	const n = 1000
	rev := apply(manyServices(n, first, nil))
	step(fmt.Sprintf("%d services from scratch", n))

	h := lbtables.NewHolder()
	fetch := func(minRev int64) (*lbtables.FetchResponse, int, time.Duration) {
		start := time.Now()
		resp, err := e.agent.LBTables(ctx, "host1", h.Request(minRev))
		if err != nil {
			b.Fatal(err)
		}
		if errs := h.Apply(resp); len(errs) > 0 {
			b.Fatal(errs)
		}
		return resp, resp.Bytes(), time.Since(start)
	}
	_, all, took := fetch(rev)
	fmt.Printf("host:       fetch of all %d tables from scratch: %d bytes (%d per table), verified in %.1f ms\n", n, all, all/n, float64(took.Microseconds())/1000)

	ids := first
	var moved int
	for i := range 10 {
		ids = append(ids[1:], 100+i)
		rev = apply(manyServices(n, ids, nil))
		res := step(fmt.Sprintf("change %d: one backend of svc-0 replaced", i+1))
		moved += res.MovedSlots
	}
	resp, missed, took := fetch(rev)
	full := len(resp.Tables[lbtables.Name("svc-0", 80, lb.TCP)].Slots)
	whole := e.k.tables[lbtables.Name("svc-0", 80, lb.TCP)].rec.Table
	fmt.Printf("host:       after missing 10 changes of svc-0 (%d slots moved in all): fetched %d bytes (delta: %v, slots part %d), verified in %.1f ms; the whole table is %d bytes\n",
		moved, missed, !resp.Tables[lbtables.Name("svc-0", 80, lb.TCP)].Full, full, float64(took.Microseconds())/1000, len(whole.Slots))
	b.ReportMetric(float64(missed), "bytes-after-10-missed")

	bump := map[int]bool{}
	wholes := 0
	for i := 1; i <= 10; i++ {
		bump[i] = true
		rev = apply(manyServices(n, ids, bump))
		step(fmt.Sprintf("change %d: one backend of svc-%d replaced", i, i))
		wholes += len(e.k.tables[lbtables.Name(fmt.Sprintf("svc-%d", i), 80, lb.TCP)].rec.Table.Slots)
	}
	resp, missed, took = fetch(rev)
	fmt.Printf("host:       after missing 10 changes of 10 services (one each): fetched %d bytes for %d tables, verified in %.1f ms; those whole tables are %d bytes\n",
		missed, len(resp.Tables), float64(took.Microseconds())/1000, wholes)

	// One backend (198.18.20.10) removed from every service listing it (not last).
	var sb strings.Builder
	sb.WriteString(strings.ReplaceAll(manyServices(n, ids, bump), "{address: 198.18.20.10}, ", ""))
	apply(sb.String())
	step("backend 198.18.20.10 removed from every service")
}
