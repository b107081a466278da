package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/govcloud/govcloud/controlplane/lbtables"
)

// LBTables fetches the shared Maglev tables host misses (POST /v1/hosts/{name}/lbtables):
// deltas against the generations in req.Have, whole tables for the others, once the
// controller's tables cover req.MinRevision (the host's agent, admin).
func (c *Client) LBTables(ctx context.Context, host string, req lbtables.FetchRequest) (*lbtables.FetchResponse, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("maglev table fetch of host %q: %w", host, err)
	}
	var out lbtables.FetchResponse
	hdr := map[string]string{"Content-Type": "application/json"}
	if _, err := c.do(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(host)+"/lbtables", hdr, bytes.NewReader(b), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// LBTableSummaries is GET /v1/lbtables: the store revision the controller's tables cover and
// each table's generation and hash, by table name.
type LBTableSummaries struct {
	Revision int64                       `json:"revision"`
	Tables   map[string]lbtables.Summary `json:"tables"`
}

// LBTableSummaries returns the controller's table summaries (any reader but a department).
func (c *Client) LBTableSummaries(ctx context.Context) (*LBTableSummaries, error) {
	var out LBTableSummaries
	if _, err := c.do(ctx, http.MethodGet, "/v1/lbtables", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
