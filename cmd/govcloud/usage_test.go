package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/govcloud/govcloud/controlplane/api"
	"github.com/govcloud/govcloud/controlplane/apitest"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/store"
	"github.com/govcloud/govcloud/metering"
)

// usageFixture is apitest.Base plus what the attack needs: a department with nothing on any
// host (treasury, no segment), a second host with a health VM, and a lands VM with a volume.
const usageFixture = apitest.Base + `---
apiVersion: govcloud/v1
kind: Department
metadata: {name: treasury}
spec: {displayName: Treasury}
` + apitest.Host2 + `---
apiVersion: govcloud/v1
kind: Volume
metadata: {name: lands-data}
spec: {department: lands, sizeGiB: 8}
---
apiVersion: govcloud/v1
kind: VM
metadata: {name: lands-vm3}
spec: {department: lands, vcpus: 1, memoryMiB: 512, host: host1, volumes: [lands-data], networks: [{segment: lands-web}]}
`

// usageEnv is a real controller (API server, embedded etcd, real tokens) serving the ledger.
type usageEnv struct {
	t     *testing.T
	st    *store.Store
	url   string
	tok   map[string]string // role -> token
	id    map[string]string // role -> token id
	clock time.Time
}

func newUsageEnv(t *testing.T) (*usageEnv, context.Context) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped by -short (make test-unit): starts an embedded etcd")
	}
	e := &usageEnv{t: t, tok: map[string]string{}, id: map[string]string{}, clock: time.Date(2026, 12, 10, 12, 0, 0, 0, time.UTC)}
	old := usageClock
	usageClock = func() time.Time { return e.clock }
	t.Cleanup(func() { usageClock = old })
	e.st = apitest.Store(t).WithPrefix(fmt.Sprintf("/test/usage/%d/", time.Now().UnixNano()))
	srv := api.New(e.st, apitest.Log, api.Options{ID: "test"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	if err := usageLedger(ctx, srv, e.st); err != nil {
		t.Fatal(err)
	}
	go srv.Run(ctx)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	e.url = hs.URL
	admin, err := api.Bootstrap(ctx, e.st)
	if err != nil {
		t.Fatal(err)
	}
	e.tok["admin"] = admin
	for name, req := range map[string]client.TokenRequest{
		"lands": {Name: "lands-viewer", Role: api.RoleDepartment, Department: "lands"},
		"host1": {Name: "agent-host1", Role: api.RoleAgent, Host: "host1"},
		"host2": {Name: "agent-host2", Role: api.RoleAgent, Host: "host2"},
	} {
		if e.tok[name], err = client.New(hs.URL, admin).CreateToken(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	for role, tok := range e.tok {
		var who store.Token
		if code := e.do(ctx, tok, "GET", "/v1/whoami", "", &who); code != 200 || who.ID == "" {
			t.Fatalf("whoami %s: %d %+v", role, code, who)
		}
		e.id[role] = who.ID
	}
	if _, err := client.New(hs.URL, admin).Apply(ctx, "usage.yaml", []byte(usageFixture), client.ApplyOptions{}); err != nil {
		t.Fatalf("apply fixture: %v", err)
	}
	return e, ctx
}

// do sends a request with tok and decodes a JSON answer into out (when not nil); it returns
// the status, and the error message of a failure in out when out is a *string.
func (e *usageEnv) do(ctx context.Context, tok, method, path, body string, out any) int {
	e.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, method, e.url+path, strings.NewReader(body))
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if s, ok := out.(*string); ok {
		var er struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &er) == nil && er.Error != "" {
			*s = er.Error
		} else {
			*s = string(b)
		}
	} else if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			e.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

// report posts rep with role's token; it returns the status and the error message or answer.
func (e *usageEnv) report(ctx context.Context, role string, rep any) (int, string) {
	e.t.Helper()
	var body []byte
	switch r := rep.(type) {
	case string:
		body = []byte(r)
	default:
		body, _ = json.Marshal(rep)
	}
	var msg string
	code := e.do(ctx, e.tok[role], "POST", "/v1/usage/reports", string(body), &msg)
	return code, msg
}

// ledgerKeys is everything the ledger stores, key -> value: a refused report changes none
// of it (no reporter state, no month's usage, in any month).
func (e *usageEnv) ledgerKeys(ctx context.Context) string {
	e.t.Helper()
	r, err := e.st.Client().Get(ctx, e.st.Prefix()+"metering/", clientv3.WithPrefix())
	if err != nil {
		e.t.Fatal(err)
	}
	var lines []string
	for _, kv := range r.Kvs {
		if strings.Contains(string(kv.Key), "/metering/invoices/") {
			continue // frozen by the controller's minute loop as the test clock moves, not by reports
		}
		lines = append(lines, string(kv.Key)+"="+string(kv.Value))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func (e *usageEnv) lastAudit(ctx context.Context) store.AuditEntry {
	e.t.Helper()
	a, err := e.st.Audit(ctx, 1)
	if err != nil || len(a) != 1 {
		e.t.Fatalf("audit: %v %v", a, err)
	}
	return a[0]
}

func (e *usageEnv) bill(ctx context.Context, month string) metering.Usage {
	e.t.Helper()
	u, err := metering.NewLedgerAt(metering.EtcdKV{C: e.st.Client()}, e.st.Prefix()+"metering/").Usage(ctx, month)
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

// TestUsageThroughTheController serves the ledger from a real API server (embedded etcd, real
// tokens): the network and compute agents of host1 report as host1 and are billed; every
// attack on the ledger of issue 14 §1 (and more of each class) is refused with a message
// naming the field and value, leaves every ledger key as it was, is counted by reason and is
// in the audit log with the token id and client address; then the bill through the CLI.
func TestUsageThroughTheController(t *testing.T) {
	e, ctx := newUsageEnv(t)
	T := e.clock
	net := func(seq uint64, epoch string, at time.Time, samples ...metering.Sample) metering.Report {
		return metering.Report{Host: "host1", Source: metering.SourceNetwork, Epoch: epoch, Seq: seq, PrevSeq: seq - 1, Time: at, Samples: samples}
	}
	cmp := func(seq uint64, at time.Time, samples ...metering.Sample) metering.Report {
		return metering.Report{Host: "host1", Source: metering.SourceCompute, Epoch: "compute", Seq: seq, PrevSeq: seq - 1, Time: at, Samples: samples}
	}
	tx := func(dept string, v uint64) metering.Sample {
		return metering.Sample{Department: dept, Resource: metering.ResNetTxBytes, Total: v}
	}
	rx := func(dept string, v uint64) metering.Sample {
		return metering.Sample{Department: dept, Resource: metering.ResNetRxBytes, Total: v}
	}
	cpu := func(dept, vm string, v uint64) metering.Sample {
		return metering.Sample{Department: dept, Resource: metering.ResVCPUSeconds, Item: vm, Total: v}
	}
	mem := func(dept, vm string, v uint64) metering.Sample {
		return metering.Sample{Department: dept, Resource: metering.ResMemoryMiBSeconds, Item: vm, Gauge: true, Level: v}
	}
	vol := func(dept, vm string, v uint64) metering.Sample {
		return metering.Sample{Department: dept, Resource: metering.ResVolumeGiBSeconds, Item: vm, Gauge: true, Level: v}
	}
	mustReport := func(role string, rep metering.Report) metering.Outcome {
		t.Helper()
		code, msg := e.report(ctx, role, rep)
		var o metering.Outcome
		if code != 200 || json.Unmarshal([]byte(msg), &o) != nil || !o.Applied {
			t.Fatalf("report %d of %s/%s: %d %s", rep.Seq, rep.Host, rep.Source, code, msg)
		}
		return o
	}

	// Honest reports: the baselines, then a minute of traffic and an hour of VMs.
	if o := mustReport("host1", net(1, "e1", T, tx("lands", 0), rx("health", 0))); !o.Baseline {
		t.Fatalf("first network report %+v, want the baseline", o)
	}
	// The compute agent reports as host1 with its own source: no longer refused.
	mustReport("host1", cmp(1, T, cpu("lands", "lands-vm1", 500), mem("lands", "lands-vm1", 1024), vol("lands", "lands-vm3", 9)))
	e.clock = T.Add(time.Minute)
	mustReport("host1", net(2, "e1", e.clock, tx("lands", 4<<30), rx("health", 100<<20)))
	e.clock = T.Add(time.Hour)
	mustReport("host1", cmp(2, e.clock, cpu("lands", "lands-vm1", 500+7000), mem("lands", "lands-vm1", 1024), vol("lands", "lands-vm3", 9)))
	e.clock = T.Add(time.Hour + time.Minute)
	month := metering.Month(T)
	want := metering.Usage{
		"lands":  {metering.ResNetTxBytes: 4 << 30, metering.ResVCPUSeconds: 7000, metering.ResMemoryMiBSeconds: 1024 * 3600, metering.ResVolumeGiBSeconds: 9 * 3600},
		"health": {metering.ResNetRxBytes: 100 << 20},
	}
	if got := e.bill(ctx, month); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("honest usage %v, want %v", got, want)
	}

	now := e.clock
	many := func(n int, s func(i int) metering.Sample) []metering.Sample {
		out := make([]metering.Sample, n)
		for i := range out {
			out[i] = s(i)
		}
		return out
	}
	big := net(3, "e1", now.AddDate(100, 0, 0))
	big.Samples = many(100, func(i int) metering.Sample { return mem("lands", fmt.Sprintf("vm%d", i), 1<<20) })
	big.Source = metering.SourceCompute
	for _, tc := range []struct {
		name   string
		role   string
		rep    any // a metering.Report, or a raw JSON body
		status int
		reason string   // "" for refusals before the ledger (malformed JSON)
		want   []string // in the message: the field and the value
	}{
		// A department and a resource the desired state puts on the host, nothing else.
		{"department with nothing on host1", "host1", net(3, "e1", now, tx("lands", 4<<30), rx("treasury", 100<<30)), 422, metering.ReasonNotOnHost,
			[]string{`samples[1].department "treasury"`, "nothing of department treasury is on host host1"}},
		{"department that does not exist", "host1", net(3, "e1", now, tx("ghost", 1)), 422, metering.ReasonNotOnHost, []string{`samples[0].department "ghost"`, "no such department"}},
		{"resource that does not exist", "host1", net(3, "e1", now, metering.Sample{Department: "lands", Resource: "gpu_seconds", Total: 1}), 422, metering.ReasonResource,
			[]string{`samples[0].resource "gpu_seconds"`, "unknown resource"}},
		{"network agent reporting vCPU time", "host1", net(3, "e1", now, cpu("lands", "lands-vm1", 9000)), 422, metering.ReasonResource,
			[]string{`samples[0].resource "vcpu_seconds"`, "not metered by a network reporter"}},
		{"VM placed on another host", "host1", cmp(3, now, cpu("health", "health-vm2", 600)), 422, metering.ReasonNotOnHost,
			[]string{`samples[0].item "health-vm2"`, "no VM of that name is placed on host host1"}},
		{"VM of another department", "host1", cmp(3, now, cpu("health", "lands-vm1", 7600)), 422, metering.ReasonNotOnHost,
			[]string{`samples[0].department "health"`, "VM lands-vm1 on host host1 is of department lands"}},
		{"VM that does not exist", "host1", cmp(3, now, mem("lands", "ghost-vm", 1)), 422, metering.ReasonNotOnHost, []string{`samples[0].item "ghost-vm"`}},
		{"department name with control characters", "host1", net(3, "e1", now, tx("lands\n2026-12-10 admin revoked everything", 1)), 422, metering.ReasonInvalid,
			[]string{`samples[0].department "lands\n2026-12-10 admin revoked everything"`, "control character"}},
		// Growth physically possible, totals monotonic, no wrap.
		{"total near 2^64 (wraps the month's sum)", "host1", net(3, "e1", now, tx("lands", 1<<64-1)), 422, metering.ReasonImpossible,
			[]string{`samples[0].total "18446744073709551615"`, "more than 100 Gbit/s can carry"}},
		{"a day of 100 Gbit/s in an hour", "host1", net(3, "e1", now, tx("lands", 4<<30+100e9/8*86400)), 422, metering.ReasonImpossible, []string{`samples[0].total`, "network_tx_bytes of host host1 grew", "in 1h0m0s"}},
		{"departments each within the link, together beyond it", "host1", net(3, "e1", now, tx("lands", 4<<30+30e12), tx("health", 30e12)), 422, metering.ReasonImpossible, []string{"network_tx_bytes of host host1 grew by 60000000000000 bytes"}},
		{"lower total without a new epoch (erasing)", "host1", net(3, "e1", now, tx("lands", 1)), 422, metering.ReasonNotMonotonic,
			[]string{`samples[0].total "1"`, "below 4294967296", `epoch "e1"`}},
		{"new epoch with an impossible total", "host1", net(3, "e2", now, tx("lands", 1<<50)), 422, metering.ReasonImpossible, []string{`samples[0].total "1125899906842624"`}},
		{"vCPU-seconds beyond vCPUs x elapsed", "host1", cmp(3, now, cpu("lands", "lands-vm1", 7500+3600)), 422, metering.ReasonImpossible,
			[]string{`samples[0].total "11100"`, "VM lands-vm1 grew by 3600 vCPU-seconds", "its 2 vCPUs"}},
		{"VM restart claiming more than it could use since", "host1", cmp(3, now, cpu("lands", "lands-vm1", 500)), 422, metering.ReasonImpossible, []string{`samples[0].total "500"`, "its 2 vCPUs"}},
		{"memory beyond the VM's", "host1", cmp(3, now, mem("lands", "lands-vm1", 1<<30)), 422, metering.ReasonImpossible, []string{`samples[0].level "1073741824"`, "VM lands-vm1 has 1024 MiB"}},
		{"volumes beyond the VM's", "host1", cmp(3, now, vol("lands", "lands-vm3", 1000)), 422, metering.ReasonImpossible, []string{`samples[0].level "1000"`, "at most 72 GiB"}},
		{"a level on a counter", "host1", cmp(3, now, metering.Sample{Department: "lands", Resource: metering.ResVCPUSeconds, Item: "lands-vm1", Level: 5}), 422, metering.ReasonInvalid, []string{`samples[0].level "5"`}},
		{"a counter sent as a level", "host1", cmp(3, now, metering.Sample{Department: "lands", Resource: metering.ResVCPUSeconds, Item: "lands-vm1", Gauge: true, Level: 5}), 422, metering.ReasonInvalid, []string{`samples[0].gauge "true"`}},
		{"duplicate series in one report", "host1", net(3, "e1", now, tx("lands", 4<<30+1), tx("lands", 4<<30+2)), 422, metering.ReasonInvalid, []string{`samples[1] "lands/network_tx_bytes/"`, "the same series as samples[0]"}},
		{"negative total", "host1", `{"host":"host1","source":"network","epoch":"e1","seq":3,"prevSeq":2,"time":"` + now.Format(time.RFC3339) + `","samples":[{"department":"lands","resource":"network_tx_bytes","total":-1}]}`, 400, "", []string{"total", "uint64"}},
		{"total beyond 64 bits", "host1", `{"host":"host1","source":"network","epoch":"e1","seq":3,"prevSeq":2,"time":"` + now.Format(time.RFC3339) + `","samples":[{"department":"lands","resource":"network_tx_bytes","total":1e30}]}`, 400, "", []string{"total"}},
		{"NaN total", "host1", `{"host":"host1","source":"network","epoch":"e1","seq":3,"prevSeq":2,"time":"` + now.Format(time.RFC3339) + `","samples":[{"department":"lands","resource":"network_tx_bytes","total":NaN}]}`, 400, "", []string{"invalid character"}},
		// Time within the window, never into a closed month.
		{"dated a year ahead", "host1", net(3, "e1", now.AddDate(1, 0, 0), tx("lands", 5<<30)), 422, metering.ReasonClock, []string{`time "2027-12-10T13:01:00Z"`, "from the controller's clock"}},
		{"dated ten minutes ahead", "host1", net(3, "e1", now.Add(10*time.Minute), tx("lands", 5<<30)), 422, metering.ReasonClock, []string{`time "2026-12-10T13:11:00Z"`}},
		{"backdated into last month", "host1", net(3, "e1", time.Date(2026, 11, 15, 0, 0, 0, 0, time.UTC), tx("lands", 5<<30)), 422, metering.ReasonClock, []string{`time "2026-11-15T00:00:00Z"`}},
		{"before the last counted report", "host1", cmp(3, T.Add(time.Hour-30*time.Second), cpu("lands", "lands-vm1", 7500)), 422, metering.ReasonInvalid, []string{`time "2026-12-10T12:59:30Z"`, "before"}},
		// Bounded work per report.
		{"100 memory series dated a century ahead", "host1", big, 422, metering.ReasonClock, []string{`time "2126-12-10T13:01:00Z"`}},
		{"5000 samples", "host1", metering.Report{Host: "host1", Source: metering.SourceCompute, Epoch: "compute", Seq: 3, Time: now,
			Samples: many(5000, func(i int) metering.Sample { return cpu("lands", fmt.Sprintf("vm%d", i), 1) })}, 422, metering.ReasonTooLarge, []string{`samples "5000"`, "at most 4096"}},
		// Identity: the token's host, a known source, well-formed fields.
		{"host1's agent reporting as host2", "host1", metering.Report{Host: "host2", Source: metering.SourceNetwork, Epoch: "e", Seq: 1, Time: now}, 403, metering.ReasonIdentity,
			[]string{`host "host2"`, "agent-host1 (agent) may not report usage of this host"}},
		{"old-style reporter name of another host", "host1", `{"reporter":"host2","epoch":"e","seq":1,"time":"` + now.Format(time.RFC3339) + `","samples":[]}`, 403, metering.ReasonIdentity, []string{`host "host2"`}},
		{"department token reporting", "lands", net(3, "e1", now, tx("lands", 5<<30)), 403, metering.ReasonIdentity, []string{`host "host1"`, "lands-viewer (department)"}},
		{"unknown source", "host1", metering.Report{Host: "host1", Source: "gpu", Epoch: "e", Seq: 3, Time: now}, 422, metering.ReasonInvalid, []string{`source "gpu"`}},
		{"reporter differing from host", "host1", metering.Report{Host: "host1", Reporter: "host2", Source: metering.SourceNetwork, Epoch: "e1", Seq: 3, Time: now}, 422, metering.ReasonInvalid, []string{`reporter "host2"`}},
		{"seq 0", "host1", net(0, "e1", now), 422, metering.ReasonInvalid, []string{`seq "0"`}},
		{"epoch with control characters", "host1", net(3, "e1\x1b[2J", now), 422, metering.ReasonInvalid, []string{`epoch "e1\x1b[2J"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys := e.ledgerKeys(ctx)
			before := map[string]uint64{}
			if tc.reason != "" {
				before[tc.reason] = metricValue(t, e, tc.reason)
			}
			code, msg := e.report(ctx, tc.role, tc.rep)
			if code != tc.status {
				t.Errorf("status %d, want %d: %s", code, tc.status, msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not name %q", msg, w)
				}
			}
			if after := e.ledgerKeys(ctx); after != keys {
				t.Errorf("the ledger changed:\nbefore %s\nafter  %s", keys, after)
			}
			for _, m := range []string{"2026-11", month, "2027-01", "2027-12", "2126-12"} {
				want := metering.Usage{}
				if m == month {
					want = metering.Usage{
						"lands":  {metering.ResNetTxBytes: 4 << 30, metering.ResVCPUSeconds: 7000, metering.ResMemoryMiBSeconds: 1024 * 3600, metering.ResVolumeGiBSeconds: 9 * 3600},
						"health": {metering.ResNetRxBytes: 100 << 20}}
				}
				if got := e.bill(ctx, m); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("bill of %s changed: %v", m, got)
				}
			}
			if tc.reason != "" {
				if got := metricValue(t, e, tc.reason); got != before[tc.reason]+1 {
					t.Errorf("govcloud_usage_reports_refused_total{reason=%q} %d -> %d, want +1", tc.reason, before[tc.reason], got)
				}
			}
			a := e.lastAudit(ctx)
			if a.Result != "refused" || a.TokenID != e.id[tc.role] || !strings.HasPrefix(a.Remote, "127.0.0.1:") || a.Error == "" {
				t.Errorf("audit entry %+v, want a refusal by token %s from 127.0.0.1", a, e.id[tc.role])
			}
			if tc.reason != "" && (a.Action != "usage-report" || a.Detail["reason"] != tc.reason || !strings.Contains(a.Error, msgCore(msg))) {
				t.Errorf("audit entry %+v, want usage-report refused for %s: %s", a, tc.reason, msg)
			}
		})
	}

	// Counted reports are audited too, with what they added.
	mustReport("host1", net(3, "e1", now, tx("lands", 5<<30), rx("health", 100<<20)))
	if a := e.lastAudit(ctx); a.Action != "usage-report" || a.Result != "" || a.TokenID != e.id["host1"] || a.Detail["applied"] != true {
		t.Errorf("audit of a counted report: %+v", a)
	}

	// Reads: a department sees its own bill only; agents and anonymous callers none.
	mc := func(role string) *metering.Client { return &metering.Client{Base: e.url, Token: e.tok[role]} }
	if _, err := mc("host1").Bill(ctx, month, ""); err == nil {
		t.Fatal("agent read usage")
	}
	if _, err := mc("").Bill(ctx, month, ""); err == nil {
		t.Fatal("anonymous read usage")
	}
	b, err := mc("lands").Bill(ctx, month, "")
	if err != nil || len(b.Departments) != 1 || b.Departments[0].Department != "lands" {
		t.Fatalf("lands' bill: %+v %v", b, err)
	}
	if _, err := mc("lands").Bill(ctx, month, "health"); err == nil || !strings.Contains(err.Error(), "may not read the usage of department \"health\"") {
		t.Fatalf("lands reading health: %v", err)
	}

	// The CLI, as an operator: csv with totals (5 GiB tx x 0.05, 7000 vCPU-s x 0.04/h, ...).
	t.Setenv("GOVCLOUD_API", e.url)
	t.Setenv("GOVCLOUD_TOKEN", e.tok["admin"])
	var out bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetArgs([]string{"usage", "--month", month, "-o", "csv"})
	if err := root.ExecuteContext(ctx); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&out).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range rows[1:] {
		if r[0] == "line" {
			got[r[3]+"/"+r[5]] = r[12]
		}
	}
	for k, v := range map[string]string{"lands/network_tx_bytes": "0.25", "lands/vcpu_seconds": "0.08", "health/network_tx_bytes": "0.00", "treasury/vcpu_seconds": "0.00"} {
		if got[k] != v {
			t.Errorf("csv %s = %q, want %q\n%s", k, got[k], v, out.String())
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"usage", "--month", "2026-13"}, "2026-13"},
		{[]string{"usage", "--month", month, "--department", "nosuch"}, `department "nosuch" does not exist (departments: health, lands, treasury)`},
		{[]string{"usage", "--month", month, "--by", "colour"}, `--by "colour"`},
		{[]string{"usage", "invoice", "--month", month}, "month " + month + " is open until"},
	} {
		root = newRoot()
		root.SetArgs(tc.args)
		root.SetOut(&out)
		root.SetErr(&out)
		if err := root.ExecuteContext(ctx); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error with %q", tc.args, err, tc.want)
		}
	}

	// A closed month's invoice is the same bytes after a PriceList reaching back into it is
	// applied (like any object: admin, audited, versioned); the open month follows the list.
	invoice := func(args ...string) string {
		var b bytes.Buffer
		root := newRoot()
		root.SetOut(&b)
		root.SetArgs(args)
		if err := root.ExecuteContext(ctx); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return b.String()
	}
	prev := T.AddDate(0, -1, 0).Format("2006-01")
	before := invoice("usage", "invoice", "--month", prev, "-o", "csv")
	pl := `apiVersion: govcloud/v1
kind: PriceList
metadata: {name: dearer}
spec:
  effectiveFrom: ` + prev + `-01
  prices:
    - {resource: network_tx_bytes,     unit: GiB,       unitSize: 1073741824, price: "1.00"}
    - {resource: network_vip_in_bytes, unit: GiB,       unitSize: 1073741824, price: "0.02"}
    - {resource: vcpu_seconds,         unit: vCPU-hour, unitSize: 3600,       price: "0.04"}
    - {resource: memory_mib_seconds,   unit: GiB-hour,  unitSize: 3686400,    price: "0.005"}
    - {resource: volume_gib_seconds,   unit: GiB-month, unitSize: 2592000,    price: "0.10"}
`
	if _, err := client.New(e.url, e.tok["lands"]).Apply(ctx, "prices.yaml", []byte(pl), client.ApplyOptions{}); err == nil {
		t.Fatal("a department token applied a price list")
	}
	if _, err := client.New(e.url, e.tok["admin"]).Apply(ctx, "prices.yaml", []byte(pl), client.ApplyOptions{}); err != nil {
		t.Fatalf("apply PriceList: %v", err)
	}
	if a := e.lastAudit(ctx); a.Action != "apply" {
		t.Errorf("last audit %+v, want the apply", a)
	}
	if after := invoice("usage", "invoice", "--month", prev, "-o", "csv"); after != before {
		t.Errorf("invoice of %s changed after a PriceList:\n%s\nwas:\n%s", prev, after, before)
	}
	if now := invoice("usage", "--month", month, "--department", "lands", "-o", "json"); !strings.Contains(now, `"charge": "5.00"`) || !strings.Contains(now, `"priceList": "dearer"`) {
		t.Errorf("open month not rated with the new list (5 GiB x 1.00):\n%s", now)
	}
}

// msgCore is a refusal's message without the "usage report refused: " prefix.
func msgCore(msg string) string {
	_, after, _ := strings.Cut(msg, "usage report refused: ")
	return after
}

// metricValue reads govcloud_usage_reports_refused_total{reason} from the controller.
func metricValue(t *testing.T, e *usageEnv, reason string) uint64 {
	t.Helper()
	var text string
	if code := e.do(context.Background(), e.tok["admin"], "GET", "/v1/usage/metrics", "", &text); code != 200 {
		t.Fatalf("metrics: %d %s", code, text)
	}
	var v uint64
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, `govcloud_usage_reports_refused_total{reason="`+reason+`"} `) {
			fmt.Sscan(strings.TrimPrefix(line, `govcloud_usage_reports_refused_total{reason="`+reason+`"} `), &v)
			return v
		}
	}
	t.Fatalf("no govcloud_usage_reports_refused_total{reason=%q} in\n%s", reason, text)
	return 0
}

func TestMain(m *testing.M) {
	code := m.Run()
	apitest.Shutdown()
	os.Exit(code)
}
