package store

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TrimAudit deletes audit entries older than before (zero: no age limit) and, beyond that, the
// oldest ones over keep (0: no count limit). It returns how many it deleted. Entries are keyed
// by time, so each limit is one range deletion.
func (s *Store) TrimAudit(ctx context.Context, before time.Time, keep int64) (int64, error) {
	var n int64
	if !before.IsZero() {
		end := fmt.Sprintf("%s%020d", s.keyAudit(), before.UnixNano())
		r, err := s.cli.Delete(ctx, s.keyAudit(), clientv3.WithRange(end))
		if err != nil {
			return 0, fmt.Errorf("trim audit entries before %s: %w", before.Format(time.RFC3339), err)
		}
		n += r.Deleted
	}
	if keep <= 0 {
		return n, nil
	}
	cr, err := s.cli.Get(ctx, s.keyAudit(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return n, fmt.Errorf("count audit entries: %w", err)
	}
	over := cr.Count - keep
	if over <= 0 {
		return n, nil
	}
	// The key of the oldest entry to keep ends the range.
	r, err := s.cli.Get(ctx, s.keyAudit(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend),
		clientv3.WithKeysOnly(), clientv3.WithLimit(over+1))
	if err != nil {
		return n, fmt.Errorf("find the oldest audit entries: %w", err)
	}
	if int64(len(r.Kvs)) <= over {
		return n, nil
	}
	dr, err := s.cli.Delete(ctx, s.keyAudit(), clientv3.WithRange(string(r.Kvs[over].Key)))
	if err != nil {
		return n, fmt.Errorf("trim audit to %d entries: %w", keep, err)
	}
	return n + dr.Deleted, nil
}
