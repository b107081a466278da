package agent

import (
	"testing"

	"github.com/govcloud/govcloud/dataplane/hostnet"
	"github.com/govcloud/govcloud/dataplane/trunk"
)

// TestBandwidthQuotaReachesHostNetwork: the desired state's bandwidthMbps becomes each
// department's limit on the host, and its local guest ports are policed; unset is unlimited.
func TestBandwidthQuotaReachesHostNetwork(t *testing.T) {
	for _, tc := range []struct {
		name        string
		lands       int
		wantPoliced int // lands-web-1's port
	}{
		{name: "100 Mbit/s", lands: 100, wantPoliced: 1},
		{name: "raised to 200 Mbit/s", lands: 200, wantPoliced: 1},
		{name: "unset: unlimited, no limiter on the port", lands: 0, wantPoliced: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := labState()
			st.Departments[0].BandwidthMbps = tc.lands
			hn, err := hostNetwork(st)
			if err != nil {
				t.Fatal(err)
			}
			if got := hn.Departments[0]; got.Name != "lands" || got.BandwidthMbps != tc.lands {
				t.Fatalf("department %q limit %d Mbit/s, want lands %d", got.Name, got.BandwidthMbps, tc.lands)
			}
			if got := hn.Departments[1].BandwidthMbps; got != 0 {
				t.Fatalf("health limit %d, want 0 (unset)", got)
			}
			p, err := hostnet.PlanFor(hn, 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Policed) != tc.wantPoliced {
				t.Fatalf("policed ports %+v, want %d", p.Policed, tc.wantPoliced)
			}
			if tc.wantPoliced > 0 {
				if g := p.Policed[0]; g.Ifname != GuestPort("lands-web-1", "lands-web") || g.Port != (trunk.GuestPort{Department: 1001, Segment: 120}) {
					t.Fatalf("policed %+v", g)
				}
				if len(p.Rates) != 1 || p.Rates[0].Rate != trunk.MbpsRate(tc.lands) {
					t.Fatalf("rates %+v, want lands at %d Mbit/s", p.Rates, tc.lands)
				}
			}
		})
	}
}
