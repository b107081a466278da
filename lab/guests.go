package lab

import (
	"context"
	"sync"
	"time"

	"github.com/govcloud/govcloud/controlplane/desired"
)

// guestSyncName is the lab process that keeps namespace guests in step with the controller.
const guestSyncName = "guests"

// SyncGuests runs until ctx ends: every second it reads each host's desired state and makes a
// namespace guest for every VM placed there that has none, and removes guests of VMs no
// longer placed there. It is the namespace lab's stand-in for a compute agent, so VMs applied
// after 'lab up' (the README's "Add a department") get their guest port and answer; 'lab up'
// starts it as the process "guests" (logs/guests.log), 'lab down' stops it. Failures are
// logged and retried on the next pass.
func (l *Lab) SyncGuests(ctx context.Context) error {
	if err := l.followUp(); err != nil {
		return err
	}
	admin, err := l.adminToken()
	if err != nil {
		return err
	}
	c := l.client(admin)
	for {
		// Every host's state first (a guest wanted anywhere is not removed), then the hosts at
		// once: with 8 hosts and 120 guests, one after the other took most of a minute.
		states := make([]*desired.State, len(l.hosts))
		errs := make([]error, len(l.hosts))
		keep := map[string]bool{}
		for i, h := range l.hosts {
			if states[i], errs[i] = c.Desired(ctx, h, 0, time.Second); errs[i] == nil && states[i] != nil {
				for _, vm := range states[i].VMs {
					keep["gc-vm-"+vm.Name] = true
				}
			}
		}
		var wg sync.WaitGroup
		for i, h := range l.hosts {
			if errs[i] != nil || states[i] == nil {
				continue
			}
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = l.syncGuests(h, states[i], keep) }()
		}
		wg.Wait()
		for i, h := range l.hosts {
			if errs[i] != nil && ctx.Err() == nil {
				l.printf("%s guests %s: %v\n", time.Now().UTC().Format(time.RFC3339), h, errs[i])
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}
