package netdev

import (
	"context"
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// WatchNewLinks signals out (without blocking: one pending signal is enough) whenever a link
// whose name begins with prefix appears in the calling thread's network namespace, until ctx
// ends. The agent uses it to retry at once a pass that waited for a guest port the compute
// agent was still making. The error is the subscription's; a closed subscription ends it.
func WatchNewLinks(ctx context.Context, prefix string, out chan<- struct{}) error {
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{}); err != nil {
		return fmt.Errorf("subscribing to link changes: %w", err)
	}
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-updates:
				if !ok {
					return
				}
				if u.Header.Type != unix.RTM_NEWLINK || u.Link == nil || !strings.HasPrefix(u.Link.Attrs().Name, prefix) {
					continue
				}
				select {
				case out <- struct{}{}:
				default:
				}
			}
		}
	}()
	return nil
}
