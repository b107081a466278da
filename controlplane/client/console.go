package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/govcloud/govcloud/controlplane/config"
)

// DeleteOptions modify DeleteObjects.
type DeleteOptions struct {
	DryRun         bool
	IgnoreNotFound bool // skip objects that do not exist instead of refusing the delete
}

// DeleteObjects deletes every object of keys in one transaction (POST /v1/delete): all of
// them or, when one is refused (still used by an object not deleted, not found), none.
func (c *Client) DeleteObjects(ctx context.Context, keys []config.Key, opt DeleteOptions) (*ApplyResult, error) {
	b, err := json.Marshal(struct {
		Objects []config.Key `json:"objects"`
	}{keys})
	if err != nil {
		return nil, fmt.Errorf("encode delete request: %w", err)
	}
	q := url.Values{}
	if opt.DryRun {
		q.Set("dryRun", "true")
	}
	if opt.IgnoreNotFound {
		q.Set("ignoreNotFound", "true")
	}
	var out ApplyResult
	if _, err := c.do(ctx, http.MethodPost, "/v1/delete?"+q.Encode(), map[string]string{"Content-Type": "application/json"}, bytes.NewReader(b), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ConsoleTail is the end of a VM's serial console log: Data ends at byte offset End of the
// whole log. Note says why there is nothing (no output sent yet, VM pending).
type ConsoleTail struct {
	VM      string    `json:"vm"`
	Host    string    `json:"host"`
	End     int64     `json:"end"`
	Data    []byte    `json:"data"`
	Updated time.Time `json:"updated"`
	Note    string    `json:"note,omitempty"`
}

// Console reads the end of VM's serial console log: the bytes after offset after, or all the
// controller holds when after < 0 (GET /v1/vms/{vm}/console).
func (c *Client) Console(ctx context.Context, vm string, after int64) (*ConsoleTail, error) {
	p := "/v1/vms/" + url.PathEscape(vm) + "/console"
	if after >= 0 {
		p += "?after=" + strconv.FormatInt(after, 10)
	}
	var out ConsoleTail
	if _, err := c.do(ctx, http.MethodGet, p, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PutConsole sends the end of VM's console log (data, ending at offset end of the whole log)
// from the compute agent of host.
func (c *Client) PutConsole(ctx context.Context, host, vm string, end int64, data []byte) error {
	b, err := json.Marshal(ConsoleTail{End: end, Data: data})
	if err != nil {
		return fmt.Errorf("encode console of VM %q: %w", vm, err)
	}
	_, err = c.do(ctx, http.MethodPut, "/v1/hosts/"+url.PathEscape(host)+"/console/"+url.PathEscape(vm), map[string]string{"Content-Type": "application/json"}, bytes.NewReader(b), nil)
	return err
}
