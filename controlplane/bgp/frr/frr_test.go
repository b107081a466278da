package frr_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/bgp/frr"
	"github.com/govcloud/govcloud/dataplane/netnstest"
)

// TestStartQueryStop: FRR started in a namespace answers vtysh; zebra has no BGP route yet
// (ErrNoRoute, an empty table); Stop ends every daemon it started.
func TestStartQueryStop(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "vtysh", frr.Daemons+"/zebra", frr.Daemons+"/bgpd")
	ns := netnstest.New(t, "gct-frr")
	dir, err := os.MkdirTemp("", "gct-frr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { (&frr.Router{Netns: ns.Name, Dir: dir}).Stop(); os.RemoveAll(dir) })
	r, err := frr.Start(ns.Name, dir, "frr defaults datacenter\nrouter bgp 65000\n bgp router-id 198.18.0.1\n!\n", frr.Options{Zebra: true})
	if err != nil {
		t.Fatal(err)
	}
	pids := r.PIDs()
	if len(pids) != 2 || pids["zebra"] == 0 || pids["bgpd"] == 0 {
		t.Fatalf("pids %v: want zebra and bgpd", pids)
	}
	if _, err := r.BGPNexthops("198.18.99.0/24"); !errors.Is(err, frr.ErrNoRoute) {
		t.Errorf("next hops of an unknown prefix: %v, want ErrNoRoute", err)
	}
	if routes, err := r.BGPRoutes(); err != nil || len(routes) != 0 {
		t.Errorf("BGP routes %v (%v), want none", routes, err)
	}
	if n, err := r.Count("ipv4"); err != nil || n != 0 {
		t.Errorf("count %d (%v), want 0", n, err)
	}
	r.Stop()
	for d, pid := range pids {
		deadline := time.Now().Add(2 * time.Second)
		for running(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if running(pid) {
			t.Errorf("%s (%d) still runs after Stop", d, pid)
		}
	}
}

// running says whether pid is a live process (not gone, not a zombie awaiting its reaper).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// TestSelectedHops: only the selected BGP route's active next hops count, sorted.
func TestSelectedHops(t *testing.T) {
	for _, tc := range []struct {
		desc      string
		json      string
		want      []string
		wantFound bool
	}{
		{"ECMP, two active", `[{"protocol":"bgp","selected":true,"nexthops":[{"ip":"198.18.0.12","active":true},{"ip":"198.18.0.11","active":true}]}]`, []string{"198.18.0.11", "198.18.0.12"}, true},
		{"one hop inactive", `[{"protocol":"bgp","selected":true,"nexthops":[{"ip":"198.18.0.11","active":true},{"ip":"198.18.0.12","active":false}]}]`, []string{"198.18.0.11"}, true},
		{"bgp not selected (a static wins)", `[{"protocol":"bgp","selected":false,"nexthops":[{"ip":"198.18.0.11","active":true}]},{"protocol":"static","selected":true,"nexthops":[{"ip":"198.18.0.1","active":true}]}]`, nil, false},
		{"selected, every hop inactive", `[{"protocol":"bgp","selected":true,"nexthops":[{"ip":"198.18.0.11"}]}]`, nil, true},
		{"no routes", `[]`, nil, false},
	} {
		var rs []frr.Route
		if err := json.Unmarshal([]byte(tc.json), &rs); err != nil {
			t.Fatal(err)
		}
		hops, found := frr.SelectedHops(rs)
		if !slices.Equal(hops, tc.want) || found != tc.wantFound {
			t.Errorf("%s: %v found=%v, want %v found=%v", tc.desc, hops, found, tc.want, tc.wantFound)
		}
	}
}
