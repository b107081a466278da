package gobgp

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

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
	adv := h1Adverts(true)
	med := uint32(10)
	adv[2].MED = &med
	if err := s.Set(cfg, adv); err != nil {
		t.Fatal(err)
	}
	med = 20 // the caller reusing its variable must not change what Set remembered
	if *s.paths[vip2].MED != 10 {
		t.Fatal("the speaker's memory of an advertisement shares the caller's MED variable")
	}
	if err := s.Set(cfg, adv); err != nil || *s.paths[vip2].MED != 20 {
		t.Fatalf("MED change not applied (err %v, remembered MED %d)", err, *s.paths[vip2].MED)
	}
	if err := s.Set(cfg, h1Adverts(false)); err != nil {
		t.Fatal(err)
	}
	if got, want := s.ribPrefixes(t), []string{"198.18.100.1/32", "2001:db8:100::1/128"}; !slices.Equal(got, want) {
		t.Fatalf("after withdrawing vip2: RIB %v, want %v", got, want)
	}
	if err := s.Set(bgp.Config{}, nil); err != nil || s.srv != nil {
		t.Fatalf("Set of the zero config: err %v, server still running: %v", err, s.srv != nil)
	}
	if err := s.Set(cfg, h1Adverts(false)); err != nil || len(s.ribPrefixes(t)) != 2 {
		t.Fatalf("Set after the zero config: err %v", err)
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

func TestPeerSettingsReachGoBGP(t *testing.T) {
	s := New(Options{Restarting: true, ConnectRetry: 2 * time.Second})
	if !s.restarting {
		t.Fatal("Options.Restarting not kept for the first Set")
	}
	p := bgp.Peer{Address: netip.MustParseAddr("2001:db8::1"), ASN: 65000, Port: 1179, Password: "pw-x",
		HoldTime: 30 * time.Second, Multihop: 4, IPv4: true, IPv6: true, GracefulRestart: true, RestartTime: 90 * time.Second}
	ap := s.apiPeer(p)
	if ap.Conf.AuthPassword != "pw-x" || ap.Conf.PeerAsn != 65000 || ap.Transport.RemotePort != 1179 {
		t.Errorf("conf %+v transport %+v", ap.Conf, ap.Transport)
	}
	if tc := ap.Timers.Config; tc.HoldTime != 30 || tc.KeepaliveInterval != 10 || tc.ConnectRetry != 2 {
		t.Errorf("timers %+v: want hold 30, keepalive 10, connect retry 2", tc)
	}
	if !ap.EbgpMultihop.Enabled || ap.EbgpMultihop.MultihopTtl != 4 {
		t.Errorf("multihop %+v", ap.EbgpMultihop)
	}
	if gr := ap.GracefulRestart; !gr.Enabled || gr.RestartTime != 90 || !gr.LocalRestarting {
		t.Errorf("graceful restart %+v", gr)
	}
	if len(ap.AfiSafis) != 2 || !ap.AfiSafis[0].MpGracefulRestart.Config.Enabled || ap.AfiSafis[1].Config.Family.Afi != api.Family_AFI_IP6 {
		t.Errorf("families %v", ap.AfiSafis)
	}
	s.restarting = false // after the first Set
	if s.apiPeer(p).GracefulRestart.LocalRestarting {
		t.Error("a peer added after the restart's first Set claims to be restarting")
	}
	plain := s.apiPeer(bgp.Peer{Address: netip.MustParseAddr("192.0.2.1"), ASN: 65000})
	if plain.EbgpMultihop != nil || plain.GracefulRestart != nil || len(plain.AfiSafis) != 1 || plain.AfiSafis[0].Config.Family.Afi != api.Family_AFI_IP || plain.Timers.Config.HoldTime != 90 {
		t.Errorf("defaults: %v", plain)
	}
}

func TestDecodeUpdate(t *testing.T) {
	// Ethernet + IPv4 + TCP (20 bytes) + one UPDATE withdrawing 198.18.1.0/24 and
	// announcing 198.18.200.7/32.
	bgpMsg := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 2,
		0, 4, 24, 198, 18, 1, 0, 0, 32, 198, 18, 200, 7}
	binaryLen := len(bgpMsg)
	bgpMsg[16], bgpMsg[17] = byte(binaryLen>>8), byte(binaryLen)
	pkt := make([]byte, 14+20+20)
	pkt[12], pkt[13] = 0x08, 0x00
	pkt[14] = 0x45
	pkt[14+9] = 6
	pkt[14+20+12] = 5 << 4
	pkt = append(pkt, bgpMsg...)
	got := decodeUpdates(pkt)
	if len(got) != 2 || got[0].prefix.String() != "198.18.1.0/24" || !got[0].withdrawn || got[1].prefix.String() != "198.18.200.7/32" || got[1].withdrawn {
		t.Fatalf("decoded %+v", got)
	}
}
