package lab

import (
	"context"
	"time"
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
		for _, h := range l.hosts {
			st, err := c.Desired(ctx, h, 0, time.Second)
			if err == nil && st != nil {
				err = l.syncGuests(h, st)
			}
			if err != nil && ctx.Err() == nil {
				l.printf("%s guests %s: %v\n", time.Now().UTC().Format(time.RFC3339), h, err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}
