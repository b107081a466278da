package client

import (
	"context"
	"encoding/json"
)

// HostStatuses returns every host's last agent report (admin, network and agent tokens).
func (c *Client) HostStatuses(ctx context.Context) (map[string]json.RawMessage, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return nil, err
	}
	return st.Hosts, nil
}
