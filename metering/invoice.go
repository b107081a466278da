package metering

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ClosesAt is when month m ("YYYY-MM") closes: Limits.Grace after the next month began.
// Reports dated in a closed month are refused, and its bill is frozen as its invoice.
func (l *Ledger) ClosesAt(m string) (time.Time, error) {
	t, err := time.Parse("2006-01", m)
	if err != nil {
		return time.Time{}, fmt.Errorf("month %q: want YYYY-MM", m)
	}
	return t.AddDate(0, 1, 0).Add(l.Limits.withDefaults().Grace), nil
}

// Closed says whether month m is closed now.
func (l *Ledger) Closed(m string) bool { return monthClosed(m, l.now(), l.Limits.withDefaults().Grace) }

func (l *Ledger) invoiceKey(month string) string { return l.prefix + "invoices/" + month }

// Invoice returns month's frozen bill input, nil when it is not frozen (yet).
func (l *Ledger) Invoice(ctx context.Context, month string) (*BillInput, error) {
	v, err := l.store.Get(ctx, l.invoiceKey(month))
	if err != nil || v.Rev == 0 {
		return nil, err
	}
	var in BillInput
	if err := json.Unmarshal(v.Value, &in); err != nil {
		return nil, fmt.Errorf("invoice %s: %w", month, err)
	}
	return &in, nil
}

// Freeze stores in as its month's invoice unless one is stored already, and returns the
// stored one: the first freeze wins (several controllers may race), later ones change
// nothing. The month must be closed.
func (l *Ledger) Freeze(ctx context.Context, in *BillInput) (*BillInput, error) {
	if !l.Closed(in.Month) {
		return nil, fmt.Errorf("invoice %s: the month is open until %s", in.Month, in.ClosesAt.UTC().Format(time.RFC3339))
	}
	now := l.now().UTC()
	in.FrozenAt = &now
	b, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	err = l.store.Commit(ctx, map[string]int64{l.invoiceKey(in.Month): 0}, map[string][]byte{l.invoiceKey(in.Month): b})
	if errors.Is(err, ErrConflict) {
		return l.Invoice(ctx, in.Month)
	}
	if err != nil {
		return nil, err
	}
	return in, nil
}
