package libvirt

import (
	"context"
	"fmt"
	"path/filepath"
)

// GuestAgentSocket is the unix socket of the VM's QEMU guest agent channel
// (org.qemu.guest_agent.0, where qemu-guest-agent answers in the Debian image). libvirtd itself
// is its one client: talk to the agent through AgentCommand.
func (p *Provider) GuestAgentSocket(vm string) string {
	return filepath.Join(p.cfg.StateDir, "console", domName(vm)+".qga")
}

// AgentCommand sends one QEMU guest agent command (JSON: {"execute":"guest-ping"}) to the
// qemu-guest-agent of VM vm through libvirtd and returns the agent's JSON reply
// ({"return":{}}). timeoutSec bounds the wait for the agent (libvirt's own timeout, seconds).
// A guest without an agent (the tiny guest) fails after it.
func (p *Provider) AgentCommand(ctx context.Context, vm, cmd string, timeoutSec int) (string, error) {
	d, err := p.l.DomainLookupByName(domName(vm))
	if err != nil {
		return "", fmt.Errorf("vm %q: %w", vm, err)
	}
	if _, ok := p.meta(d); !ok {
		return "", fmt.Errorf("vm %q: domain %s is not this host's", vm, domName(vm))
	}
	r, err := p.l.QEMUDomainAgentCommand(d, cmd, int32(timeoutSec), 0)
	if err != nil {
		return "", fmt.Errorf("vm %q: guest agent: %w", vm, err)
	}
	if len(r) == 0 {
		return "", fmt.Errorf("vm %q: guest agent: empty reply", vm)
	}
	return r[0], nil
}
