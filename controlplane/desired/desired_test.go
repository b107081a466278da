package desired

import "testing"

func TestGuestPortNames(t *testing.T) {
	for _, tc := range []struct {
		vm, segment string
	}{{"lands-web-1", "lands-web"}, {"a", "b"}, {"a-very-long-vm-name-that-is-longer-than-fifteen", "segment"}} {
		n := GuestPort(tc.vm, tc.segment)
		if len(n) > 15 || !IsGuestPort(n) {
			t.Errorf("GuestPort(%q, %q) = %q: not a guest port name of at most 15 bytes", tc.vm, tc.segment, n)
		}
	}
	if GuestPort("a", "b") == GuestPort("b", "a") {
		t.Error("GuestPort ignores which is the VM and which the segment")
	}
	for _, n := range []string{"", "gv", "gv1234567", "gv123456789", "gv1234567g", "gw12345678", "GV12345678", "eth0"} {
		if IsGuestPort(n) {
			t.Errorf("IsGuestPort(%q) = true", n)
		}
	}
}
