package compute

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// ConsoleSource is a provider that keeps each VM's serial console log (the libvirt provider):
// ConsoleLog returns what the VM printed so far ("" when nothing or no such VM).
type ConsoleSource interface {
	ConsoleLog(vm string) string
}

// ConsoleSender sends the end of each VM's serial console log to the controller, so that
// 'govcloud console VM' can show it through the API: after a VM's log grew, and again every
// Resend (a store restored from a backup has an older one, or none). VMs are those Provider lists; Send
// gets a VM's name, the log's length in bytes (end) and its last Max bytes (data).
type ConsoleSender struct {
	Provider Provider
	Logs     ConsoleSource
	Send     func(ctx context.Context, vm string, end int64, data []byte) error
	Max      int           // bytes sent at most; default 64 KiB
	Every    time.Duration // pause between passes; default 2s
	Resend   time.Duration // send an unchanged log again after this; default 10m
	Log      *slog.Logger

	sent map[string]sentLog
}

type sentLog struct {
	end int64
	at  time.Time
}

// Pass sends what changed since the last pass; it returns the failures joined, naming each VM.
func (s *ConsoleSender) Pass(ctx context.Context, now time.Time) error {
	max, resend := s.Max, s.Resend
	if max <= 0 {
		max = 64 << 10
	}
	if resend <= 0 {
		resend = 10 * time.Minute
	}
	if s.sent == nil {
		s.sent = map[string]sentLog{}
	}
	vms, err := s.Provider.List(ctx)
	if err != nil {
		return fmt.Errorf("console: list VMs: %w", err)
	}
	var errs []error
	seen := map[string]bool{}
	for _, vm := range vms {
		seen[vm.Name] = true
		log := s.Logs.ConsoleLog(vm.Name)
		end := int64(len(log))
		last, ok := s.sent[vm.Name]
		if end == 0 || (ok && last.end == end && now.Sub(last.at) < resend) {
			continue
		}
		data := log
		if len(data) > max {
			data = data[len(data)-max:]
		}
		if err := s.Send(ctx, vm.Name, end, []byte(data)); err != nil {
			errs = append(errs, fmt.Errorf("console of VM %q: %w", vm.Name, err))
			continue
		}
		s.sent[vm.Name] = sentLog{end: end, at: now}
	}
	for name := range s.sent {
		if !seen[name] {
			delete(s.sent, name)
		}
	}
	return errors.Join(errs...)
}

// Run makes a pass every Every until ctx ends, logging failures.
func (s *ConsoleSender) Run(ctx context.Context) {
	every := s.Every
	if every <= 0 {
		every = 2 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := s.Pass(ctx, time.Now()); err != nil && ctx.Err() == nil && s.Log != nil {
			s.Log.Warn("send consoles", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
