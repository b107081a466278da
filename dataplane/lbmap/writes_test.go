package lbmap

import (
	"net/netip"
	"testing"

	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/lb"
)

// TestSettersWriteOnlyChanges: every setter given what the maps already hold writes nothing
// (Writes does not move), and a changed value is written (the agent's dataplane write count,
// which the disaster drill holds at 0 across a controller restore).
func TestSettersWriteOnlyChanges(t *testing.T) {
	netnstest.RequirePrivileged(t)
	dp, err := Load(Options{ConnTableSize: 1 << 12, NATTableSize: 1 << 12})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	a := netip.MustParseAddr
	vip := lb.VIP{Addr: a("198.19.255.5"), Port: 80, Proto: lb.TCP}
	apply := func(self string, vlanDom uint32) error {
		for _, err := range []error{
			dp.SetConfig(Config{EncapSource4: a(self), SNATSource4: a(self)}),
			dp.SetVLANDomains(map[uint16]uint32{120: vlanDom, 130: 8}),
			dp.SetDecapAddrs([]netip.Addr{a(self)}),
			dp.SetTunnelSources([]netip.Addr{a("198.18.0.11"), a("198.18.0.12")}),
			dp.SetLocalVIPs([]LocalVIP{{VIP: vip, Department: 7}}),
		} {
			if err != nil {
				return err
			}
		}
		return nil
	}
	for _, tc := range []struct {
		desc        string
		self        string
		vlanDom     uint32
		wantChanged bool
	}{
		{"first programming", "198.18.0.11", 7, true},
		{"the same state again", "198.18.0.11", 7, false},
		{"and again", "198.18.0.11", 7, false},
		{"a VLAN's domain changed", "198.18.0.11", 9, true},
		{"the host's address changed", "198.18.0.12", 9, true},
		{"the same state once more", "198.18.0.12", 9, false},
	} {
		before := dp.Writes()
		if err := apply(tc.self, tc.vlanDom); err != nil {
			t.Fatalf("%s: %v", tc.desc, err)
		}
		if changed := dp.Writes() != before; changed != tc.wantChanged {
			t.Errorf("%s: writes %d -> %d, want a change: %v", tc.desc, before, dp.Writes(), tc.wantChanged)
		}
	}
}
