package metering

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Client calls the controller's usage API (see API).
type Client struct {
	Base  string // e.g. http://127.0.0.1:8480
	Token string
	HTTP  *http.Client
}

func (c *Client) call(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.Base, "/")+path, rd)
	if err != nil {
		return err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("controller %s: %w", c.Base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("controller %s%s: %w", c.Base, path, err)
	}
	if resp.StatusCode >= 400 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("controller %s%s: %s", c.Base, path, e.Error)
		}
		return fmt.Errorf("controller %s%s: HTTP %d: %s", c.Base, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("controller %s%s: decode answer: %w", c.Base, path, err)
	}
	return nil
}

// Bill fetches a month's bill ("YYYY-MM"; dept "" for all departments).
func (c *Client) Bill(ctx context.Context, month, dept string) (Bill, error) {
	return c.BillWith(ctx, month, BillOptions{Department: dept})
}

// BillWith fetches a month's bill with options.
func (c *Client) BillWith(ctx context.Context, month string, opt BillOptions) (Bill, error) {
	var b Bill
	err := c.call(ctx, http.MethodGet, "/v1/usage?"+billQuery(month, opt), nil, &b)
	return b, err
}

// Invoice fetches a closed month's frozen bill (an error while the month is open).
func (c *Client) Invoice(ctx context.Context, month string, opt BillOptions) (Bill, error) {
	var b Bill
	err := c.call(ctx, http.MethodGet, "/v1/usage/invoice?"+billQuery(month, opt), nil, &b)
	return b, err
}

func billQuery(month string, opt BillOptions) string {
	q := url.Values{"month": {month}}
	for k, v := range map[string]string{"department": opt.Department, "costCentre": opt.CostCentre, "by": opt.By} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q.Encode()
}

// Report sends one usage report.
func (c *Client) Report(ctx context.Context, r Report) (Outcome, error) {
	var o Outcome
	err := c.call(ctx, http.MethodPost, "/v1/usage/reports", r, &o)
	return o, err
}
