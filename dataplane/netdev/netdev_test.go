package netdev

import "testing"

func TestNames(t *testing.T) {
	for _, v := range []uint16{1, 120, 4094} {
		for _, n := range []string{BridgeName(v), BridgePortName(v), TrunkPortName(v)} {
			if len(n) > 15 {
				t.Errorf("%s longer than IFNAMSIZ-1", n)
			}
			got, ok := SegmentVLAN(n)
			if !ok || got != v {
				t.Errorf("SegmentVLAN(%q) = %d, %v; want %d", n, got, ok, v)
			}
			if !isOurName(n) {
				t.Errorf("isOurName(%q) = false", n)
			}
		}
	}
	for _, n := range []string{"gcbr", "gcbr12a", "gcbr0120", "eth0", "gcvx12", "gcbr99999", "gcbr4095", "gcbr0"} {
		if _, ok := SegmentVLAN(n); ok {
			t.Errorf("SegmentVLAN(%q) accepted", n)
		}
	}
}
