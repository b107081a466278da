package gobgp

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/bgp"
	"github.com/govcloud/govcloud/controlplane/bgp/frrtest"
	"github.com/govcloud/govcloud/dataplane/netnstest"
)

const birdConf = `router id 198.18.4.1;
protocol device {}
protocol bgp host {
  local 198.18.4.1 as 65000;
  neighbor 198.18.4.2 as 65104;
  connect retry time 1;
  ipv4 { import all; export none; };
}
`

// TestBIRD checks a second implementation, BIRD 2, learns and loses a VIP.
func TestBIRD(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "bird", "birdc")
	rtr, h := netnstest.New(t, "gct-brd"), netnstest.New(t, "gct-brh")
	must(t, netnstest.Veth(rtr, "t4", h, "up"))
	must(t, rtr.AddrAdd("t4", "198.18.4.1/30"))
	must(t, h.AddrAdd("up", "198.18.4.2/30"))
	dir := t.TempDir()
	conf, sock := filepath.Join(dir, "bird.conf"), filepath.Join(dir, "bird.ctl")
	must(t, os.WriteFile(conf, []byte(birdConf), 0o644))
	rtr.MustRun(t, "bird", "-c", conf, "-s", sock, "-P", filepath.Join(dir, "bird.pid"))
	birdc := func(args ...string) string {
		out, _ := rtr.Run("birdc", append([]string{"-s", sock}, args...)...)
		return out
	}

	sp := startSpeaker(t, h)
	cfg := bgp.Config{RouterID: netip.MustParseAddr("198.18.4.2"), ASN: 65104, Peers: []bgp.Peer{
		{Address: netip.MustParseAddr("198.18.4.1"), ASN: 65000, HoldTime: 9 * time.Second}}}
	vip := bgp.Advertisement{Prefix: netip.MustParsePrefix("198.18.104.1/32"), Communities: []bgp.Community{{ASN: 65000, Value: deptID}}}
	sp.MustSet(cfg, []bgp.Advertisement{vip})
	frrtest.WaitFor(t, "BIRD to learn the VIP", 30*time.Second, func() (bool, error) {
		return strings.Contains(birdc("show", "route", "198.18.104.1/32"), "198.18.104.1/32"), nil
	})
	if out := birdc("show", "route", "198.18.104.1/32", "all"); !strings.Contains(out, "(65000,7)") {
		t.Errorf("BIRD route lacks the department community (65000,7):\n%s", out)
	}
	sp.MustSet(cfg, nil)
	frrtest.WaitFor(t, "BIRD to lose the VIP", 10*time.Second, func() (bool, error) {
		return !strings.Contains(birdc("show", "route", "198.18.104.1/32"), "198.18.104.1/32"), nil
	})
	if out := birdc("show", "protocols", "host"); !strings.Contains(out, "Established") {
		t.Errorf("withdrawing reset the session:\n%s", out)
	}
}
