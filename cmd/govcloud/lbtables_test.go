package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/govcloud/govcloud/controlplane/hoststatus"
	"github.com/govcloud/govcloud/controlplane/lbtables"
)

func TestTableMismatchMetricAndStatus(t *testing.T) {
	tables := map[string]hoststatus.LBTable{
		"web/80/tcp": {Generation: 12, Sum: strings.Repeat("ab", 32)},
		"db/5432/tcp": {Generation: 9, Sum: strings.Repeat("cd", 32), Mismatch: true,
			Error: "backend 198.18.20.9:0 is not in generation 9"},
	}
	base := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("govcloud_up 1\n")) })
	rec := httptest.NewRecorder()
	withTableMismatch(base, func() map[string]hoststatus.LBTable { return tables }).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	got := rec.Body.String()
	for _, want := range []string{"govcloud_up 1\n", "# TYPE govcloud_lb_table_mismatch gauge\n",
		`govcloud_lb_table_mismatch{service="db/5432/tcp"} 1` + "\n", `govcloud_lb_table_mismatch{service="web/80/tcp"} 0` + "\n"} {
		if !strings.Contains(got, want) {
			t.Fatalf("metrics lack %q:\n%s", want, got)
		}
	}

	var b bytes.Buffer
	ctl := map[string]lbtables.Summary{"web/80/tcp": {Generation: 14, Sum: strings.Repeat("ef", 32)}, "db/5432/tcp": {Generation: 9, Sum: strings.Repeat("cd", 32)}}
	printTables(&b, hoststatus.Status{TablesMode: "shared", Tables: tables}, ctl)
	out := b.String()
	for _, want := range []string{"maglev tables (shared): 0 of 2 the controller's",
		"table web/80/tcp", "generation 12", "sha256 abababababababab", "behind: the controller's is generation 14",
		"table db/5432/tcp", "NOT VERIFIED: backend 198.18.20.9:0"} {
		if !strings.Contains(out, want) {
			t.Fatalf("status lacks %q:\n%s", want, out)
		}
	}
}
