package main

import (
	"bytes"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"

	"github.com/govcloud/govcloud/agent"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
	"github.com/govcloud/govcloud/controlplane/lbtables/keeper"
)

// The controller computes and serves the shared Maglev tables (issue 19).
func init() { controllerExtensions = append(controllerExtensions, keeper.Extension(0, nil)) }

// Maglev table modes of the agent (--maglev-tables).
const (
	tablesShared = "shared" // the controller's tables: identical on every host
	tablesLocal  = "local"  // each host's own history (fetched shared tables only compared)
	tablesOff    = "off"    // each host's own history, nothing fetched
)

// configureTables sets cfg's table source from the --maglev-tables mode.
func configureTables(cfg *agent.Config, mode string, src agent.TableSource) error {
	switch mode {
	case tablesShared:
		cfg.Tables = src
	case tablesLocal:
		cfg.Tables, cfg.LocalTables = src, true
	case tablesOff:
	default:
		return fmt.Errorf("--maglev-tables %q: want %s, %s or %s", mode, tablesShared, tablesLocal, tablesOff)
	}
	return nil
}

// withTableMismatch appends to the metering handler's exposition (text format 0.0.4) the
// gauge govcloud_lb_table_mismatch{service}: 1 for each load-balancer service ("name/port/
// proto") whose Maglev table on this host differs from the controller's, 0 otherwise.
func withTableMismatch(metrics http.Handler, tables func() map[string]hoststatus.LBTable) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		if metrics != nil {
			metrics.ServeHTTP(rec, r)
		}
		var b bytes.Buffer
		b.Write(rec.Body.Bytes())
		ts := tables()
		if len(ts) > 0 {
			b.WriteString("# HELP govcloud_lb_table_mismatch 1 when this host's Maglev table of a load-balancer service differs from the controller's shared table (issue 19).\n")
			b.WriteString("# TYPE govcloud_lb_table_mismatch gauge\n")
			for _, n := range slices.Sorted(maps.Keys(ts)) {
				v := 0
				if ts[n].Mismatch {
					v = 1
				}
				fmt.Fprintf(&b, "govcloud_lb_table_mismatch{service=%q} %d\n", n, v) // names are validated: no escapes but \" and \\
			}
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = w.Write(b.Bytes())
	})
}
