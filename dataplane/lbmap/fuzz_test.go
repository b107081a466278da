package lbmap

import (
	"bytes"
	"testing"
)

// FuzzXDP feeds arbitrary frames through xdp_lb: the verdict is always one of DROP, PASS, TX
// or REDIRECT, and a passed frame is never modified (no decap address is configured, so
// nothing the program passes may have been touched). Run longer with 'make fuzz-lb'.
func FuzzXDP(f *testing.F) {
	r := newRig(f, Options{ConnTableSize: 1 << 12})
	mustSet(f, r.dp, testServices())
	ext := mac("02:00:00:00:00:fe")
	for _, fl := range []flow{
		{src: client4, dst: "203.0.113.10", sport: 1, dport: 80},
		{src: client4, dst: "203.0.113.11", sport: 2, dport: 53, udp: true},
		{src: client6, dst: "2001:db8:f::10", sport: 3, dport: 80, syn: true},
		{src: client4, dst: "203.0.113.12", sport: 4, dport: 80},
		{src: "198.19.1.5", dst: "198.19.0.10", sport: 5, dport: 80, vlan: 120},
	} {
		f.Add(frame(f, ext, upMAC, fl.vlan, ipPacket(f, fl)))
	}
	f.Add(frame(f, ext, upMAC, 0, icmpTooBig(f, "198.51.100.1", "203.0.113.13", client4, 80, 9)))
	f.Add(frame(f, ext, upMAC, 0, icmpTooBig(f, "2001:db8:1::fe", "2001:db8:f::13", client6, 80, 9)))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 14 || len(in) > 1500 {
			return
		}
		v, out := r.run(t, r.dp.Program(), in)
		switch v {
		case xdpDrop, xdpTX, xdpRedirect:
		case xdpPass:
			if !bytes.Equal(out, in) {
				t.Fatalf("passed frame was modified:\n in  %x\n out %x", in, out)
			}
		default:
			t.Fatalf("verdict %d outside DROP/PASS/TX/REDIRECT", v)
		}
	})
}
