package netns

import (
	"bytes"
	"encoding/hex"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestARPAnnouncement(t *testing.T) {
	for _, tc := range []struct {
		mac, ip string
		want    string // the frame in hex, fields separated by spaces
	}{
		{"02:00:00:c7:04:0a", "198.18.204.10",
			"ffffffffffff 020000c7040a 0806 0001 0800 06 04 0001 020000c7040a c612cc0a 000000000000 c612cc0a"},
		{"52:54:00:ff:00:01", "192.0.2.255",
			"ffffffffffff 525400ff0001 0806 0001 0800 06 04 0001 525400ff0001 c00002ff 000000000000 c00002ff"},
	} {
		mac, _ := net.ParseMAC(tc.mac)
		want, _ := hex.DecodeString(strings.ReplaceAll(tc.want, " ", ""))
		if got := arpAnnouncement(mac, netip.MustParseAddr(tc.ip)); !bytes.Equal(got, want) {
			t.Errorf("announcement of %s at %s:\n got %x\nwant %x", tc.ip, tc.mac, got, want)
		}
	}
}
