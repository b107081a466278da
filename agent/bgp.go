package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/govcloud/govcloud/controlplane/bgp"
	"github.com/govcloud/govcloud/controlplane/desired"
)

// bgpConfig turns the host's BGP settings into the speaker's. Passwords are read here from
// their file or variable and never leave the speaker.
func bgpConfig(st *desired.State) (bgp.Config, error) {
	if st.BGP == nil {
		return bgp.Config{}, nil
	}
	cfg := bgp.Config{ASN: st.BGP.ASN}
	cfg.RouterID = st.BGP.RouterID
	if !cfg.RouterID.IsValid() {
		cfg.RouterID = st.Address
	}
	if !cfg.RouterID.IsValid() {
		return cfg, errors.New("router ID: none, and no host address")
	}
	for i, p := range st.BGP.Peers {
		addr := p.Address
		if !addr.IsValid() {
			return cfg, fmt.Errorf("peer %d (AS%d): no address", i, p.ASN)
		}
		peer := bgp.Peer{Address: addr, ASN: p.ASN, GracefulRestart: p.GracefulRestart, Multihop: uint8(p.Multihop),
			HoldTime: time.Duration(p.HoldTime) * time.Second, Keepalive: time.Duration(p.Keepalive) * time.Second}
		switch {
		case p.PasswordFile != "":
			b, err := os.ReadFile(p.PasswordFile)
			if err != nil {
				return cfg, fmt.Errorf("peer %s: password file: %w", addr, err)
			}
			peer.Password = bgp.Secret(strings.TrimSpace(string(b)))
		case p.PasswordEnv != "":
			v, ok := os.LookupEnv(p.PasswordEnv)
			if !ok {
				return cfg, fmt.Errorf("peer %s: password variable %s is not set", addr, p.PasswordEnv)
			}
			peer.Password = bgp.Secret(v)
		}
		cfg.Peers = append(cfg.Peers, peer)
	}
	return cfg, nil
}

// adverts lists the public VIPs to announce: only while the load balancer is attached here
// and the VIP has a healthy backend somewhere. Each carries its department's communities; the
// next hop is left to each session (the speaker's own address on it), so every ToR of a
// dual-homed host gets an address on its own subnet.
func adverts(st *desired.State, plan lbPlan, attached bool) []bgp.Advertisement {
	if !attached || st.BGP == nil {
		return nil
	}
	var fabricASN uint32
	if len(st.BGP.Peers) > 0 {
		fabricASN = st.BGP.Peers[0].ASN
	}
	up := map[netip.Addr]bool{}
	for _, v := range plan.advertise {
		up[v] = true
	}
	var out []bgp.Advertisement
	seen := map[netip.Addr]bool{}
	for _, svc := range st.Services {
		vip := svc.VIP
		if !up[vip] || seen[vip] {
			continue
		}
		seen[vip] = true
		cs, lc := bgp.DepartmentCommunities(fabricASN, st.BGP.ASN, uint32(svc.TableID))
		a := bgp.Advertisement{Prefix: netip.PrefixFrom(vip, vip.BitLen()), Communities: cs,
			LargeCommunities: []bgp.LargeCommunity{lc}, LocalPref: svc.LocalPref, MED: svc.MED}
		out = append(out, a)
	}
	return out
}
