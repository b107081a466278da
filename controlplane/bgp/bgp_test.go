package bgp

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func validCfg() Config {
	return Config{RouterID: netip.MustParseAddr("192.0.2.1"), ASN: 65101, Peers: []Peer{
		{Address: netip.MustParseAddr("192.0.2.254"), ASN: 65000, Password: "pw", HoldTime: 9 * time.Second, Keepalive: 3 * time.Second},
		{Address: netip.MustParseAddr("2001:db8::1"), ASN: 65000},
	}}
}

func TestValidate(t *testing.T) {
	vip := netip.MustParsePrefix("198.18.100.1/32")
	for _, tc := range []struct {
		desc    string
		mutate  func(*Config, *[]Advertisement)
		wantErr string
	}{
		{"valid", func(*Config, *[]Advertisement) {}, ""},
		{"IPv6 router ID", func(c *Config, _ *[]Advertisement) { c.RouterID = netip.MustParseAddr("2001:db8::9") }, `router ID "2001:db8::9"`},
		{"zero ASN", func(c *Config, _ *[]Advertisement) { c.ASN = 0 }, "local ASN"},
		{"duplicate peer", func(c *Config, _ *[]Advertisement) { c.Peers = append(c.Peers, c.Peers[0]) }, "peer 192.0.2.254: listed twice"},
		{"keepalive above hold", func(c *Config, _ *[]Advertisement) { c.Peers[0].Keepalive = 10 * time.Second }, "keepalive 10s"},
		{"hold too short", func(c *Config, _ *[]Advertisement) { c.Peers[0].HoldTime = time.Second }, "hold time 1s"},
		{"not a host route", func(_ *Config, a *[]Advertisement) {
			*a = append(*a, Advertisement{Prefix: netip.MustParsePrefix("198.18.100.0/24")})
		}, `advertisement "198.18.100.0/24"`},
		{"duplicate advert", func(_ *Config, a *[]Advertisement) { *a = append(*a, (*a)[0]) }, "198.18.100.1/32: listed twice"},
		{"AS_TRANS local ASN", func(c *Config, _ *[]Advertisement) { c.ASN = 23456 }, "local ASN 23456: 23456 is AS_TRANS"},
		{"reserved peer ASN", func(c *Config, _ *[]Advertisement) { c.Peers[0].ASN = 4294967295 }, "ASN 4294967295: 4294967295 is reserved"},
		{"BFD interval too short", func(c *Config, _ *[]Advertisement) { c.Peers[0].BFD = &BFD{MinTx: time.Millisecond} }, "peer 192.0.2.254: BFD minTx 1ms"},
		{"BFD over multihop", func(c *Config, _ *[]Advertisement) { c.Peers[0].BFD = &BFD{}; c.Peers[0].Multihop = 3 }, "BFD with multihop 3"},
		{"hold-down above its maximum", func(c *Config, _ *[]Advertisement) { c.HoldDown = HoldDown{Initial: 2 * time.Minute} }, "hold-down initial delay 2m0s"},
		{"IPv6 routes over an IPv4 session", func(c *Config, _ *[]Advertisement) { c.Peers[0].IPv6 = true }, "a session carries only its own address family"},
		{"IPv4 routes over an IPv6 session", func(c *Config, _ *[]Advertisement) { c.Peers[1].IPv4 = true }, "2001:db8::1: family IPv4=true"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			cfg, adv := validCfg(), []Advertisement{{Prefix: vip}}
			tc.mutate(&cfg, &adv)
			err := Validate(cfg, adv)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestDepartmentCommunities(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		fabric, local, dept     uint32
		wantStandard, wantLarge string // "" = none
	}{
		{"2-byte fabric ASN", 65000, 4200000001, 7, "65000:7", "4200000001:1:7"},
		{"4-byte fabric ASN: no truncated 65000+2^16", 65536 + 65000, 65001, 7, "", "65001:1:7"},
		{"4-byte private fabric ASN", 4200000000, 4200000001, 1001, "", "4200000001:1:1001"},
		{"department ID above 16 bits", 65000, 65001, 70000, "", "65001:1:70000"},
		{"no fabric peer", 0, 65001, 7, "", "65001:1:7"},
		{"largest 2-byte values", 65534, 65001, 65535, "65534:65535", "65001:1:65535"},
		{"fabric AS 65535: 65535:x are well-known communities (65535:666 BLACKHOLE)", 65535, 65001, 666, "", "65001:1:666"},
		{"fabric AS_TRANS 23456 stands for every 4-byte ASN", 23456, 65001, 7, "", "65001:1:7"},
		{"first 4-byte ASN 65536", 65536, 65536, 7, "", "65536:1:7"},
		{"largest 4-byte ASN", 4294967294, 4294967294, 4294967295, "", "4294967294:1:4294967295"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs, lc := DepartmentCommunities(tc.fabric, tc.local, tc.dept)
			var std string
			if len(cs) > 1 {
				t.Fatalf("%d standard communities", len(cs))
			}
			if len(cs) == 1 {
				std = cs[0].String()
				if cs[0].Uint32() != tc.fabric<<16|tc.dept {
					t.Errorf("standard community %s encodes as %d", std, cs[0].Uint32())
				}
			}
			if std != tc.wantStandard || lc.String() != tc.wantLarge {
				t.Errorf("got %q and %q, want %q and %q", std, lc, tc.wantStandard, tc.wantLarge)
			}
		})
	}
}

func TestFakeIsIdempotent(t *testing.T) {
	var f Fake
	adv := []Advertisement{{Prefix: netip.MustParsePrefix("198.18.100.1/32")}, {Prefix: netip.MustParsePrefix("2001:db8:100::1/128")}}
	for i := 0; i < 3; i++ {
		if err := f.Set(validCfg(), adv); err != nil {
			t.Fatal(err)
		}
	}
	if f.Changes != 1 || f.Sets != 3 {
		t.Fatalf("changes %d sets %d, want 1 and 3", f.Changes, f.Sets)
	}
	st := f.Status()
	if len(st) != 2 || st[0].Advertised != 1 || st[1].Advertised != 1 || !st[0].Established {
		t.Fatalf("status %+v: want each peer with the one prefix of its family", st)
	}
	if err := f.Set(validCfg(), adv[:1]); err != nil || f.Changes != 2 {
		t.Fatalf("withdraw: err %v changes %d", err, f.Changes)
	}
	if err := f.Set(Config{ASN: 1}, nil); err == nil {
		t.Fatal("fake accepted an invalid config")
	}
	if err := f.Set(Config{}, nil); err != nil || len(f.Status()) != 0 {
		t.Fatalf("zero config (no BGP): err %v status %v", err, f.Status())
	}
	if err := f.Set(validCfg(), adv); err != nil {
		t.Fatal(err)
	}
	_ = f.Close(context.Background(), true)
	if err := f.Set(validCfg(), adv); err != ErrClosed {
		t.Fatalf("Set after Close: %v", err)
	}
	if s := FormatStatus(f.Status()); !strings.Contains(s, "idle") || strings.Contains(s, "pw") {
		t.Fatalf("closed fake status %q", s)
	}
}
