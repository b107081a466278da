package compute

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

type fakeLogs map[string]string

func (l fakeLogs) ConsoleLog(vm string) string { return l[vm] }

// The sender sends a log when it grew, its end only (Max), again after Resend, and retries
// a failed send on the next pass.
func TestConsoleSender(t *testing.T) {
	ctx := context.Background()
	p := NewFake()
	for _, n := range []string{"vm1", "vm2", "quiet"} {
		if _, err := p.Ensure(ctx, VMSpec{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	logs := fakeLogs{"vm1": "boot\n", "vm2": strings.Repeat("x", 100) + "tail"}
	var sent []string
	fail := map[string]bool{}
	s := &ConsoleSender{Provider: p, Logs: logs, Max: 10, Resend: time.Minute,
		Send: func(_ context.Context, vm string, end int64, data []byte) error {
			if fail[vm] {
				return errors.New("controller away")
			}
			sent = append(sent, fmt.Sprintf("%s@%d:%s", vm, end, data))
			return nil
		}}
	t0 := time.Date(2026, 12, 6, 7, 0, 0, 0, time.UTC)
	pass := func(at time.Duration, want ...string) {
		t.Helper()
		sent = nil
		err := s.Pass(ctx, t0.Add(at))
		if fmt.Sprint(sent) != fmt.Sprint(want) {
			t.Errorf("at %s sent %q, want %q (err %v)", at, sent, want, err)
		}
	}
	pass(0, "vm1@5:boot\n", "vm2@104:xxxxxxtail")
	pass(2 * time.Second) // nothing grew
	logs["vm1"] += "login:"
	fail["vm1"] = true
	pass(4 * time.Second)
	fail["vm1"] = false
	pass(6*time.Second, "vm1@11:oot\nlogin:")
	pass(70*time.Second, "vm1@11:oot\nlogin:", "vm2@104:xxxxxxtail") // resent: a restored store has an older one
}
