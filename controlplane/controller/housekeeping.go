package controller

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/govcloud/govcloud/controlplane/store"
)

// AdvertiseURL is the API URL this controller registers for the others to forward writes to:
// advertise when given (scheme://HOST:PORT, HOST neither empty nor a wildcard address, scheme
// that of the API), else scheme://listen. A wildcard listen address is refused with external
// etcd (other controllers could not reach it) and means loopback with the embedded etcd (no
// other controller exists).
func AdvertiseURL(advertise, scheme, listen string, external bool) (string, error) {
	if advertise != "" {
		u, err := url.Parse(advertise)
		if err != nil {
			return "", fmt.Errorf("--advertise-url %q: %w", advertise, err)
		}
		if u.Scheme+"://" != scheme {
			return "", fmt.Errorf("--advertise-url %q: scheme %q, but the API serves %s", advertise, u.Scheme, strings.TrimSuffix(scheme, "://"))
		}
		if u.Port() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return "", fmt.Errorf("--advertise-url %q: want %sHOST:PORT and nothing more", advertise, scheme)
		}
		if err := reachableHost(u.Hostname()); err != nil {
			return "", fmt.Errorf("--advertise-url %q: %w", advertise, err)
		}
		return scheme + u.Host, nil
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("listen address %q: %w", listen, err)
	}
	if reachableHost(host) != nil {
		if external {
			return "", fmt.Errorf("--listen %s is a wildcard address, which other controllers cannot reach: give --advertise-url %sHOST:%s (this controller's address they can reach)", listen, scheme, port)
		}
		host = "127.0.0.1"
	}
	return scheme + net.JoinHostPort(host, port), nil
}

func reachableHost(h string) error {
	if h == "" {
		return fmt.Errorf("no host")
	}
	if a, err := netip.ParseAddr(h); err == nil && a.IsUnspecified() {
		return fmt.Errorf("%s is a wildcard address, not one others can reach", h)
	}
	return nil
}

// housekeeping is the leader's upkeep of etcd: compaction of an external etcd's history and
// the audit log's retention, so the database stays bounded.
func housekeeping(ctx context.Context, st *store.Store, opt Options, external bool, log *slog.Logger) {
	compactEvery := opt.Compaction
	if compactEvery == 0 {
		compactEvery = DefaultCompaction
	}
	if !external {
		compactEvery = -1 // the embedded etcd compacts itself
	}
	retainEvery := opt.RetentionInterval
	if retainEvery <= 0 {
		retainEvery = DefaultRetentionInterval
	}
	maxAge, maxEntries := opt.AuditMaxAge, opt.AuditMaxEntries
	if maxAge == 0 {
		maxAge = DefaultAuditMaxAge
	}
	if maxEntries == 0 {
		maxEntries = DefaultAuditMaxEntries
	}
	var c *Compactor
	var ct <-chan time.Time
	if compactEvery > 0 {
		c = &Compactor{Store: st}
		t := time.NewTicker(compactEvery)
		defer t.Stop()
		ct = t.C
		_ = c.Step(ctx) // remember the current revision: compacted to at the next tick
	}
	rt := time.NewTicker(retainEvery)
	defer rt.Stop()
	retain := func() {
		var before time.Time
		if maxAge > 0 {
			before = time.Now().Add(-maxAge)
		}
		n, err := st.TrimAudit(ctx, before, max(maxEntries, 0))
		if err != nil && ctx.Err() == nil {
			log.Warn("audit retention", "err", err)
		} else if n > 0 {
			log.Info("audit retention: trimmed", "entries", n, "maxAge", maxAge, "maxEntries", maxEntries)
		}
	}
	retain()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ct:
			if err := c.Step(ctx); err != nil && ctx.Err() == nil {
				log.Warn("etcd compaction", "err", err)
			}
		case <-rt.C:
			retain()
		}
	}
}

// Compactor compacts etcd's history one step behind: each Step compacts to the revision the
// previous Step saw, so watchers always have one interval of history to catch up from.
type Compactor struct {
	Store *store.Store
	prev  int64
}

// Step compacts to the revision of the previous Step (if any) and remembers the current one.
func (c *Compactor) Step(ctx context.Context) error {
	cli := c.Store.Client()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r, err := cli.Get(ctx, c.Store.Prefix()+"state")
	if err != nil {
		return fmt.Errorf("read etcd revision: %w", err)
	}
	cur := r.Header.Revision
	if c.prev > 0 && c.prev < cur {
		if _, err := cli.Compact(ctx, c.prev); err != nil && !strings.Contains(err.Error(), "compacted") {
			return fmt.Errorf("compact etcd to revision %d: %w", c.prev, err)
		}
	}
	c.prev = cur
	return nil
}
