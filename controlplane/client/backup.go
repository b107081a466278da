package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// BackupPath is the admin-only route that streams a new backup file (see package backup).
const BackupPath = "/v1/backup"

// Backup asks the controller for a new backup and returns its stream and file name (from the
// Content-Disposition header). The caller closes the stream.
func (c *Client) Backup(ctx context.Context) (io.ReadCloser, string, error) {
	resp, base, err := c.send(ctx, http.MethodGet, BackupPath, nil, nil)
	if err != nil {
		return nil, "", err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(b, e) != nil || e.Message == "" {
			e.Message = fmt.Sprintf("controller %s answered HTTP %d: %s", base, resp.StatusCode, strings.TrimSpace(string(b)))
		}
		return nil, "", e
	}
	name := ""
	if _, v, ok := strings.Cut(resp.Header.Get("Content-Disposition"), "filename="); ok {
		name = strings.Trim(v, `"`)
	}
	return resp.Body, name, nil
}
