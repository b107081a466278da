package hostnet_test

import (
	"path/filepath"
	"testing"

	"github.com/govcloud/govcloud/dataplane/hostnet"
	"github.com/govcloud/govcloud/dataplane/netnstest"
	tt "github.com/govcloud/govcloud/dataplane/trunk/trunktest"
)

// TestOverlappingPrefixes gives two departments the same prefix, gateway and guest address on
// one host. Each guest must get its own gateway's answers: the host's replies are routed by
// the department mark of the connection, not by the main table (which cannot tell them apart).
func TestOverlappingPrefixes(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "ping", "nft")
	host := netnstest.New(t, "gct-oh")
	peer := netnstest.New(t, "gct-op")
	if err := netnstest.Veth(host, "up0", peer, "up1"); err != nil {
		t.Fatal(err)
	}
	d := hostnet.HostNetwork{
		Uplink:      "up0",
		Departments: []hostnet.Department{{Name: "lands", ID: 3, Table: 100}, {Name: "health", ID: 7, Table: 200}},
		Segments: []hostnet.Segment{
			{Name: "lands-app", Department: "lands", VLAN: 140, IPv4: pfx("198.18.40.0/24"), Gateway: ip("198.18.40.1")},
			{Name: "health-app", Department: "health", VLAN: 150, IPv4: pfx("198.18.40.0/24"), Gateway: ip("198.18.40.1")},
		},
	}
	guestsNS := map[string]*netnstest.NS{}
	for _, g := range []struct{ name, seg, mac string }{{"ga", "lands-app", "02:00:00:00:04:0a"}, {"gb", "health-app", "02:00:00:00:05:0a"}} {
		ns := netnstest.New(t, "gct-o"+g.name)
		guestsNS[g.name] = ns
		if err := netnstest.Veth(host, "v"+g.name, ns, "eth0"); err != nil {
			t.Fatal(err)
		}
		ns.MustRun(t, "ip", "link", "set", "eth0", "address", g.mac)
		if err := ns.AddrAdd("eth0", "198.18.40.10/24"); err != nil {
			t.Fatal(err)
		}
		d.Guests = append(d.Guests, hostnet.Guest{Segment: g.seg, Ifname: "v" + g.name, MAC: tt.MAC(g.mac), Addr: ip("198.18.40.10")})
	}
	h, err := hostnet.New(hostnet.Config{NetNS: host.Handle(), PinPath: filepath.Join(tt.BPFFS(t), "h"), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Set(d); err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"ga", "gb"} {
		for i := 0; i < 3; i++ { // both directions of the main table's tie, several times
			if out, err := guestsNS[g].Run("ping", "-c1", "-W1", "198.18.40.1"); err != nil {
				t.Fatalf("%s cannot reach its own gateway: %v\n%s", g, err, out)
			}
		}
	}
}
