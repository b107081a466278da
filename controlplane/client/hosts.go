package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/govcloud/govcloud/controlplane/hoststatus"
)

// HostStatuses returns every host's last agent report (admin, network and agent tokens).
func (c *Client) HostStatuses(ctx context.Context) (map[string]json.RawMessage, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return nil, err
	}
	return st.Hosts, nil
}

// PeerHealth returns, for host's agent, its peers' reports pruned to what it needs: per other
// host, the backends placed there, of services host balances, found down.
func (c *Client) PeerHealth(ctx context.Context, host string) (map[string]hoststatus.Backends, error) {
	var out map[string]hoststatus.Backends
	_, err := c.do(ctx, http.MethodGet, "/v1/hosts/"+url.PathEscape(host)+"/peer-health", nil, nil, &out)
	return out, err
}
