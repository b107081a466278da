package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// keyConsole holds the end of each VM's serial console log: console/VM (see PutConsole).
func (s *Store) keyConsole() string { return s.prefix + "console/" }

// PutConsole stores the end of vm's serial console log as its host's compute agent sent it
// (any JSON; the API's ConsoleTail), replacing the last one. Every controller reads it, so
// the console works whichever controller an agent and a reader reach.
func (s *Store) PutConsole(ctx context.Context, vm string, tail json.RawMessage) error {
	if _, err := s.cli.Put(ctx, s.keyConsole()+vm, string(tail)); err != nil {
		return fmt.Errorf("store console of VM %q: %w", vm, err)
	}
	return nil
}

// Console returns the end of vm's console log stored by PutConsole (nil when none).
func (s *Store) Console(ctx context.Context, vm string) (json.RawMessage, error) {
	r, err := s.cli.Get(ctx, s.keyConsole()+vm)
	if err != nil {
		return nil, fmt.Errorf("read console of VM %q: %w", vm, err)
	}
	if len(r.Kvs) == 0 {
		return nil, nil
	}
	return r.Kvs[0].Value, nil
}

// PruneConsoles deletes the stored console logs of the VMs keep says no to (deleted VMs).
func (s *Store) PruneConsoles(ctx context.Context, keep func(vm string) bool) error {
	r, err := s.cli.Get(ctx, s.keyConsole(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("list consoles: %w", err)
	}
	for _, kv := range r.Kvs {
		vm := strings.TrimPrefix(string(kv.Key), s.keyConsole())
		if keep(vm) {
			continue
		}
		if _, err := s.cli.Delete(ctx, string(kv.Key)); err != nil {
			return fmt.Errorf("delete console of VM %q: %w", vm, err)
		}
	}
	return nil
}
