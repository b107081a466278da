package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
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
// host, the backends placed there, of services host balances, found down (host ->
// {"status": {"backends": {"service/address": "down: ..."}}}).
func (c *Client) PeerHealth(ctx context.Context, host string) (map[string]json.RawMessage, error) {
	var out map[string]json.RawMessage
	_, err := c.do(ctx, http.MethodGet, "/v1/hosts/"+url.PathEscape(host)+"/peer-health", nil, nil, &out)
	return out, err
}
