package lbmap

import (
	"net/netip"
	"testing"
	"time"

	"github.com/govcloud/govcloud/dataplane/bpfobj"
	"github.com/govcloud/govcloud/lb"
)

// ActiveConnections (issue 22, drains you can watch): flows the program put in the connection
// table count per VIP and backend; a bare SYN does not; entries idle longer than the window or
// of a backend no longer programmed do not.
func TestActiveConnections(t *testing.T) {
	r := newRig(t, Options{})
	mustSet(t, r.dp, testServices())
	for i, f := range []flow{
		{src: client4, dst: "203.0.113.10", sport: 41000, dport: 80, payload: "a"},
		{src: client4, dst: "203.0.113.10", sport: 41001, dport: 80, payload: "b"},
		{src: client4, dst: "203.0.113.10", sport: 41001, dport: 80, payload: "b again"}, // same flow
		{src: client4, dst: "203.0.113.10", sport: 41002, dport: 80, syn: true},          // bare SYN: not kept
		{src: client6, dst: "2001:db8:f::10", sport: 41003, dport: 80, payload: "c"},
	} {
		if v, _ := r.run(t, r.dp.Program(), frame(t, mac("02:00:00:00:00:fe"), upMAC, 0, ipPacket(t, f))); v != xdpTX {
			t.Fatalf("packet %d: verdict %d", i, v)
		}
	}
	// An entry last used ten minutes ago (atime 1 ns after boot) is no longer active.
	stale := bpfobj.LbFlowKey{Src: addrWords(netip.MustParseAddr(client4)), Dst: addrWords(netip.MustParseAddr("203.0.113.10")),
		Sport: htons(41009), Dport: htons(80), Proto: 6, Family: 4}
	id := r.dp.state.BackendIDs()[netip.AddrPortFrom(netip.MustParseAddr(hostA4), 0).String()]
	if err := r.dp.objs.Conntrack.Put(stale, bpfobj.LbCtEntry{BackendId: id, AtimeNs: 1}); err != nil {
		t.Fatal(err)
	}
	got, err := r.dp.ActiveConnections(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	web4 := ActiveKey{VIP: lb.VIP{Addr: netip.MustParseAddr("203.0.113.10"), Port: 80, Proto: lb.TCP}, Backend: hostA4 + ":0"}
	web6 := ActiveKey{VIP: lb.VIP{Addr: netip.MustParseAddr("2001:db8:f::10"), Port: 80, Proto: lb.TCP}, Backend: "[" + hostA6 + "]:0"}
	if len(got) != 2 || got[web4] != 2 || got[web6] != 1 {
		t.Fatalf("active connections %v, want %v: 2 and %v: 1", got, web4, web6)
	}
	// The backend leaves every service: its entries are not counted.
	mustSet(t, r.dp, nil)
	if got, err := r.dp.ActiveConnections(time.Minute); err != nil || len(got) != 0 {
		t.Fatalf("after removing every service: %v %v", got, err)
	}
}
