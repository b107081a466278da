package lbmap

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"testing"
	"time"

	"github.com/govcloud/govcloud/lb"
)

// ctRun sends one client segment of flow f through xdp_lb and returns the backend host it was
// tunnelled to, after checking the output is exactly the dsr encapsulation toward it.
func ctRun(t *testing.T, r *rig, f flow) string {
	t.Helper()
	ext := mac("02:00:00:00:00:fe")
	inner := ipPacket(t, f)
	v, out := r.run(t, r.dp.Program(), frame(t, ext, upMAC, f.vlan, inner))
	if v != xdpTX {
		t.Fatalf("flow %s:%d -> %s:%d: verdict %s, want TX", f.src, f.sport, f.dst, f.dport, verdictName[v])
	}
	host := outerDst(t, out)
	if want := dsrTo(t, host, f.vlan, inner); !bytes.Equal(out, want) {
		t.Fatalf("flow %d to %s:\n got  %s\n want %s", f.sport, host, hex.EncodeToString(out), hex.EncodeToString(want))
	}
	return host
}

func backendPackets(t *testing.T, r *rig, host string) uint64 {
	t.Helper()
	bc, err := r.dp.BackendCounters()
	if err != nil {
		t.Fatal(err)
	}
	return bc[netip.AddrPortFrom(netip.MustParseAddr(host), 0).String()].Packets
}

// TestXDPConntrackMembership: a connection-table entry is followed only while its backend is
// a member of the flow's VIP. A backend that leaves one VIP but still serves another (dsr: a
// host shared by many VIPs) gets none of the first VIP's flows any more; a drained backend
// keeps its established flows but never a bare SYN, even on a 5-tuple it had before.
func TestXDPConntrackMembership(t *testing.T) {
	type fam struct{ name, client, vipA, vipB, hostA, hostB, other string }
	fams := []fam{
		{"v4", client4, "203.0.113.40", "203.0.113.41", hostA4, hostB4, natBE4},
		{"v6", client6, "2001:db8:f::40", "2001:db8:f::41", hostA6, hostB6, natBE6},
	}
	const n = 22
	for _, tc := range []struct {
		name string
		// before and after are the two VIPs' backends (a, b) before and after the change.
		before, after func(f fam) (a, b []lb.Backend)
		// synAfter sends the flows' second round as bare SYNs (a new connection on the
		// reused 5-tuple) instead of established segments.
		synAfter bool
		// wantOnA: whether a's flows that were on host A stay there after the change.
		wantOnA bool
	}{
		{name: "backend leaves VIP a only: its flows of a are re-chosen",
			before: func(f fam) ([]lb.Backend, []lb.Backend) {
				return []lb.Backend{be(f.hostA, 0, 1), be(f.hostB, 0, 1)}, []lb.Backend{be(f.hostA, 0, 1)}
			},
			after: func(f fam) ([]lb.Backend, []lb.Backend) {
				return []lb.Backend{be(f.hostB, 0, 1)}, []lb.Backend{be(f.hostA, 0, 1)}
			}},
		{name: "backend leaves VIP a only, b keeps it among others",
			before: func(f fam) ([]lb.Backend, []lb.Backend) {
				return []lb.Backend{be(f.hostA, 0, 1), be(f.hostB, 0, 1), be(f.other, 0, 1)}, []lb.Backend{be(f.hostA, 0, 1)}
			},
			after: func(f fam) ([]lb.Backend, []lb.Backend) {
				return []lb.Backend{be(f.hostB, 0, 1), be(f.other, 0, 1)}, []lb.Backend{be(f.hostA, 0, 1), be(f.other, 0, 1)}
			}},
		{name: "backend leaves VIP a and is drained in b",
			before: func(f fam) ([]lb.Backend, []lb.Backend) {
				return []lb.Backend{be(f.hostA, 0, 1), be(f.hostB, 0, 1)}, []lb.Backend{be(f.hostA, 0, 1), be(f.hostB, 0, 1)}
			},
			after: func(f fam) ([]lb.Backend, []lb.Backend) {
				return []lb.Backend{be(f.hostB, 0, 1)}, []lb.Backend{be(f.hostA, 0, 0), be(f.hostB, 0, 1)}
			}},
		{name: "drained in a: established flows stay",
			before: func(f fam) ([]lb.Backend, []lb.Backend) {
				return []lb.Backend{be(f.hostA, 0, 1), be(f.hostB, 0, 1)}, []lb.Backend{be(f.hostA, 0, 1)}
			},
			after: func(f fam) ([]lb.Backend, []lb.Backend) {
				return []lb.Backend{be(f.hostA, 0, 0), be(f.hostB, 0, 1)}, []lb.Backend{be(f.hostA, 0, 1)}
			},
			wantOnA: true},
		{name: "drained in a: a bare SYN on a reused 5-tuple goes elsewhere",
			before: func(f fam) ([]lb.Backend, []lb.Backend) {
				return []lb.Backend{be(f.hostA, 0, 1), be(f.hostB, 0, 1)}, []lb.Backend{be(f.hostA, 0, 1)}
			},
			after: func(f fam) ([]lb.Backend, []lb.Backend) {
				return []lb.Backend{be(f.hostA, 0, 0), be(f.hostB, 0, 1)}, []lb.Backend{be(f.hostA, 0, 1)}
			},
			synAfter: true},
		{name: "active in a: a bare SYN on a reused 5-tuple keeps its backend",
			before: func(f fam) ([]lb.Backend, []lb.Backend) {
				return []lb.Backend{be(f.hostA, 0, 1), be(f.hostB, 0, 1)}, []lb.Backend{be(f.hostA, 0, 1)}
			},
			after: func(f fam) ([]lb.Backend, []lb.Backend) {
				return []lb.Backend{be(f.hostA, 0, 1), be(f.hostB, 0, 1), be(f.other, 0, 1)}, []lb.Backend{be(f.hostA, 0, 1)}
			},
			synAfter: true, wantOnA: true},
	} {
		for _, fm := range fams {
			t.Run(tc.name+"/"+fm.name, func(t *testing.T) {
				r := newRig(t, Options{})
				set := func(a, b []lb.Backend) {
					mustSet(t, r.dp, []lb.Service{
						svc("a", 0, fm.vipA, 80, lb.TCP, lb.DSR, a...),
						svc("b", 0, fm.vipB, 80, lb.TCP, lb.DSR, b...),
					})
				}
				set(tc.before(fm))
				owner := map[uint16]string{}
				onA := 0
				for p := uint16(1); p <= n; p++ {
					owner[p] = ctRun(t, r, flow{src: fm.client, dst: fm.vipA, sport: 40000 + p, dport: 80})
					if owner[p] == fm.hostA {
						onA++
					}
				}
				// b's flow on host A: must stay whatever a does.
				bFlow := flow{src: fm.client, dst: fm.vipB, sport: 39999, dport: 80}
				bHost := ctRun(t, r, bFlow)
				if onA == 0 {
					t.Fatal("no flow of a on host A; the row proves nothing")
				}
				set(tc.after(fm))
				beforeA := backendPackets(t, r, fm.hostA)
				stayed := 0
				for p := uint16(1); p <= n; p++ {
					got := ctRun(t, r, flow{src: fm.client, dst: fm.vipA, sport: 40000 + p, dport: 80, syn: tc.synAfter})
					if owner[p] != fm.hostA {
						continue
					}
					if got == fm.hostA {
						stayed++
					}
					if tc.synAfter && got != fm.hostA {
						// The new connection's next segment follows the new choice, not the old entry.
						if again := ctRun(t, r, flow{src: fm.client, dst: fm.vipA, sport: 40000 + p, dport: 80}); again != got {
							t.Fatalf("flow %d: SYN went to %s, its next segment to %s", p, got, again)
						}
					}
				}
				want := 0
				if tc.wantOnA {
					want = onA
				}
				if stayed != want {
					t.Fatalf("%d of %d flows of a that were on host A went there again, want %d", stayed, onA, want)
				}
				if got := backendPackets(t, r, fm.hostA) - beforeA; got != uint64(want) {
					t.Fatalf("host A's counter moved by %d, want %d", got, want)
				}
				if got := ctRun(t, r, bFlow); got != bHost {
					t.Fatalf("b's flow moved %s -> %s", bHost, got)
				}
			})
		}
	}
}

// TestXDPConntrackLife: entries carry TCP state and their access time; a FIN or RST from the
// client shortens an entry's life to FlowLifeClose, UDP lives FlowLifeOther and established TCP
// FlowLifeTCP; ExpireFlows removes exactly the entries past their life (and those of removed
// VIPs); a new SYN on the 5-tuple reopens a closing entry.
func TestXDPConntrackLife(t *testing.T) {
	for _, fm := range []struct{ name, client, vip, host string }{
		{"v4", client4, "203.0.113.10", hostA4},
		{"v6", client6, "2001:db8:f::10", hostA6},
	} {
		t.Run(fm.name, func(t *testing.T) {
			r := newRig(t, Options{})
			udpVIP := "203.0.113.11"
			if netip.MustParseAddr(fm.vip).Is6() {
				udpVIP = "2001:db8:f::11"
			}
			mustSet(t, r.dp, testServices())
			est := flow{src: fm.client, dst: fm.vip, sport: 41001, dport: 80}
			fin := flow{src: fm.client, dst: fm.vip, sport: 41002, dport: 80}
			rst := flow{src: fm.client, dst: fm.vip, sport: 41003, dport: 80}
			udp := flow{src: fm.client, dst: udpVIP, sport: 41004, dport: 53, udp: true}
			for _, f := range []flow{est, fin, rst, udp} {
				ctRun(t, r, f)
			}
			finSeg, rstSeg := fin, rst
			finSeg.fin, rstSeg.rst = true, true
			ctRun(t, r, finSeg)
			ctRun(t, r, rstSeg)
			flows := func() map[uint16]Flow {
				t.Helper()
				fl, err := r.dp.Flows()
				if err != nil {
					t.Fatal(err)
				}
				m := map[uint16]Flow{}
				for _, f := range fl {
					m[f.Client.Port()] = f
				}
				return m
			}
			got := flows()
			for port, closing := range map[uint16]bool{41001: false, 41002: true, 41003: true, 41004: false} {
				f, ok := got[port]
				if !ok || f.Closing != closing {
					t.Fatalf("flow %d: %+v (present %v), want closing %v", port, f, ok, closing)
				}
			}
			if f := got[41001]; f.Backend != netip.AddrPortFrom(netip.MustParseAddr(fm.host), 0).String() || f.VIP.Addr() != netip.MustParseAddr(fm.vip) || f.Proto != lb.TCP {
				t.Fatalf("flow 41001 = %+v", f)
			}
			// The access time moves with traffic (in half-second steps).
			first := got[41001].LastSeen
			time.Sleep(600 * time.Millisecond)
			ctRun(t, r, est)
			if later := flows()[41001].LastSeen; later <= first {
				t.Fatalf("access time %v did not move from %v after a packet 600 ms later", later, first)
			}
			now := MonotonicNow()
			expire := func(at time.Duration, want int, left ...uint16) {
				t.Helper()
				n, err := r.dp.ExpireFlows(at)
				if err != nil {
					t.Fatal(err)
				}
				got := flows()
				if n != want || len(got) != len(left) {
					t.Fatalf("ExpireFlows(+%v) removed %d, left %v; want %d removed, %v left", at-now, n, got, want, left)
				}
				for _, p := range left {
					if _, ok := got[p]; !ok {
						t.Fatalf("flow %d expired early", p)
					}
				}
			}
			expire(now+FlowLifeClose-time.Second, 0, 41001, 41002, 41003, 41004)
			expire(now+FlowLifeClose+time.Second, 2, 41001, 41004)
			expire(now+FlowLifeOther+time.Second, 1, 41001)
			// A SYN on a closing 5-tuple opens a new connection: the entry lives again.
			ctRun(t, r, finSeg)
			syn := fin
			syn.syn = true
			ctRun(t, r, syn)
			if f := flows()[41002]; f.Closing {
				t.Fatalf("flow 41002 still closing after a new SYN: %+v", f)
			}
			expire(now+FlowLifeClose+time.Second, 0, 41001, 41002)
			expire(now+FlowLifeTCP+time.Minute, 2)
			// Entries of a VIP that is gone are removed at once.
			ctRun(t, r, est)
			mustSet(t, r.dp, nil)
			expire(now, 1)
		})
	}
}
