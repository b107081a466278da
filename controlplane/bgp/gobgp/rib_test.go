package gobgp

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	api "github.com/osrg/gobgp/v3/api"

	"github.com/govcloud/govcloud/controlplane/bgp"
)

// ribPrefixes lists the speaker's global RIB for both families.
func (s *Speaker) ribPrefixes(t testing.TB) []string {
	var out []string
	for _, f := range []*api.Family{familyV4, familyV6} {
		err := s.srv.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: f}, func(d *api.Destination) {
			for range d.Paths {
				out = append(out, d.Prefix)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(out)
	return out
}

func TestSetWithoutPeers(t *testing.T) {
	s := New(Options{})
	defer s.Close(context.Background(), false)
	cfg := bgp.Config{RouterID: netip.MustParseAddr("192.0.2.1"), ASN: 65101, ListenPort: -1}
	if err := s.Set(cfg, h1Adverts(true)); err != nil {
		t.Fatal(err)
	}
	if got, want := s.ribPrefixes(t), []string{"198.18.100.1/32", "198.18.100.2/32", "2001:db8:100::1/128"}; !slices.Equal(got, want) {
		t.Fatalf("RIB %v, want %v", got, want)
	}
	if err := s.Set(cfg, h1Adverts(false)); err != nil {
		t.Fatal(err)
	}
	if got, want := s.ribPrefixes(t), []string{"198.18.100.1/32", "2001:db8:100::1/128"}; !slices.Equal(got, want) {
		t.Fatalf("after withdrawing vip2: RIB %v, want %v", got, want)
	}
}

func TestLocalPathsHaveNoNeighbor(t *testing.T) {
	s := New(Options{})
	defer s.Close(context.Background(), false)
	cfg := bgp.Config{RouterID: netip.MustParseAddr("192.0.2.1"), ASN: 65101, ListenPort: -1,
		Peers: []bgp.Peer{{Address: netip.MustParseAddr("192.0.2.9"), ASN: 65000}}}
	if err := s.Set(cfg, h1Adverts(true)); err != nil {
		t.Fatal(err)
	}
	st := s.Status()
	if len(st) != 1 || st[0].Accepted != 0 || st[0].Established {
		t.Fatalf("status %+v: want one unestablished peer with nothing accepted", st)
	}
}
