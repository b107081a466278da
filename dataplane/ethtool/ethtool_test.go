package ethtool

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/govcloud/govcloud/dataplane/netnstest"
)

// TestTxChecksumOff: the TX checksum features of a veth go off (as 'ethtool -K DEV tx off'
// would) and a second call finds nothing to change; lo's, fixed on, are a *StaysOnError; a
// missing device is another error.
func TestTxChecksumOff(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "ethtool")
	ns := netnstest.New(t, "gct-et")
	if err := netnstest.Veth(ns, "et0", ns, "et1"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dev      string
		changed  string // a feature FeaturesOff must report as turned off ("" none)
		staysOn  bool
		otherErr bool
	}{
		{dev: "et0", changed: "tx-checksum-ip-generic"},
		{dev: "et0"}, // already off
		{dev: "lo", staysOn: true},
		{dev: "nosuch0", otherErr: true},
	} {
		var got []string
		var err error
		if derr := ns.Do(func() error { got, err = FeaturesOff(tc.dev, TxChecksum...); return nil }); derr != nil {
			t.Fatal(derr)
		}
		var stays *StaysOnError
		switch {
		case tc.staysOn != errors.As(err, &stays) || tc.otherErr != (err != nil && stays == nil):
			t.Errorf("%s: error %v, want stays on %v, other error %v", tc.dev, err, tc.staysOn, tc.otherErr)
		case tc.changed != "" && !slices.Contains(got, tc.changed), tc.changed == "" && len(got) > 0:
			t.Errorf("%s: turned off %v, want %q", tc.dev, got, tc.changed)
		}
	}
	if out := ns.MustRun(t, "ethtool", "-k", "et0"); !strings.Contains(out, "tx-checksumming: off") {
		t.Errorf("ethtool -k et0: tx checksumming not off:\n%s", out)
	}
}
