package server

import (
	"context"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// govcloud patch 2: AddPaths adds and withdraws in one operation, and a withdrawal forgets the
// UUID AddPath gave the prefix (it leaked one map entry per prefix added one by one and
// withdrawn in a batch).
func TestAddPathsWithdrawForgetsUUID(t *testing.T) {
	s := NewBgpServer()
	go s.Serve()
	ctx := context.Background()
	if err := s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: 64512, RouterId: "192.0.2.1", ListenPort: -1}}); err != nil {
		t.Fatal(err)
	}
	defer s.StopBgp(ctx, &api.StopBgpRequest{})
	path := func(prefix string, withdraw bool) *api.Path {
		t.Helper()
		attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(0), bgp.NewPathAttributeNextHop("192.0.2.1")}
		p, err := apiutil.NewPath(bgp.NewIPAddrPrefix(32, prefix), withdraw, attrs, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		p.Family = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
		return p
	}
	uuids := func() (n int) {
		_ = s.mgmtOperation(func() error { n = len(s.uuidMap); return nil }, false)
		return n
	}
	local := func() (n int) {
		_ = s.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}}, func(*api.Destination) { n++ })
		return n
	}
	for _, p := range []string{"198.51.100.1", "198.51.100.2", "198.51.100.3"} {
		if _, err := s.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path(p, false)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		name               string
		paths              []*api.Path
		wantUUIDs, wantRIB int
	}{
		{"add two in a batch: no UUID kept", []*api.Path{path("198.51.100.4", false), path("198.51.100.5", false)}, 3, 5},
		{"withdraw two added one by one", []*api.Path{path("198.51.100.1", true), path("198.51.100.2", true)}, 1, 3},
		{"withdraw one added in a batch and one never added", []*api.Path{path("198.51.100.4", true), path("198.51.100.9", true)}, 1, 2},
		{"withdraw and add in one batch", []*api.Path{path("198.51.100.3", true), path("198.51.100.6", false)}, 0, 2},
	} {
		if err := s.AddPaths(ctx, api.TableType_GLOBAL, "", step.paths); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if got, rib := uuids(), local(); got != step.wantUUIDs || rib != step.wantRIB {
			t.Errorf("%s: %d UUIDs kept and %d prefixes in the RIB, want %d and %d", step.name, got, rib, step.wantUUIDs, step.wantRIB)
		}
	}
}
