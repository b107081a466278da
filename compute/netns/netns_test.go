package netns

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/dataplane/netnstest"
)

func guest(name, addr, mac string) compute.VMSpec {
	hw, _ := net.ParseMAC(mac)
	p := netip.MustParsePrefix(addr)
	return compute.VMSpec{Name: name, Department: "lands", VCPUs: 1, MemoryMiB: 64, NICs: []compute.NIC{{
		Segment: "web", VLAN: 3904, MAC: hw, Addr: p, Gateway: netip.MustParseAddr("198.18.204.1"),
		Bridge: "gcbr3904", Port: "gvt" + name,
	}}}
}

// testBridge makes bridge name (in the test's namespace), up, removed when the test ends.
func testBridge(t testing.TB, name string) {
	t.Helper()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netlink.LinkDel(br) })
	if err := netlink.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
}

// testProvider is a provider with its own state dir, serving HTTP with busybox, its
// namespaces named prefix+VM.
func testProvider(t testing.TB, prefix string) *Provider {
	t.Helper()
	dir := t.TempDir()
	p, err := New(Config{StateDir: dir, HTTPCommand: BusyboxHTTP(dir), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Two namespace guests on one segment bridge: each has the controller's MAC and address, a
// default route via the gateway and TX checksum offload off, and one answers the other's HTTP
// request with its name. Ensure is idempotent; a changed spec replaces the guest; Delete removes
// namespace, port, process and state.
func TestGuestsOnABridge(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "busybox", "ethtool", "curl")
	ctx := context.Background()
	testBridge(t, "gcbr3904")
	p := testProvider(t, "gct-nn-")
	a, b := guest("ga", "198.18.204.10/24", "02:00:00:c7:04:0a"), guest("gb", "198.18.204.11/24", "02:00:00:c7:04:0b")
	t.Cleanup(func() { p.Delete(ctx, "ga"); p.Delete(ctx, "gb") })
	sa, err := p.Ensure(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Ensure(ctx, b); err != nil {
		t.Fatal(err)
	}
	var body string
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		out, err := exec.Command("ip", "netns", "exec", "gct-nn-gb", "curl", "-sS", "--max-time", "1", "http://198.18.204.10/").CombinedOutput()
		if body = strings.TrimSpace(string(out)); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if body != "ga" {
		t.Fatalf("HTTP from gb to ga: %q, want ga", body)
	}
	out, _ := exec.Command("ip", "netns", "exec", "gct-nn-ga", "ethtool", "-k", "eth0").CombinedOutput()
	if !strings.Contains(string(out), "tx-checksumming: off") {
		t.Fatalf("ethtool -k eth0 in ga: tx checksumming not off:\n%s", out)
	}
	out, _ = exec.Command("ip", "-n", "gct-nn-ga", "route", "show", "default").CombinedOutput()
	if !strings.Contains(string(out), "via 198.18.204.1 dev eth0") {
		t.Fatalf("default route in ga: %q", out)
	}
	out, _ = exec.Command("ip", "-n", "gct-nn-ga", "link", "show", "eth0").CombinedOutput()
	if !strings.Contains(string(out), "02:00:00:c7:04:0a") {
		t.Fatalf("ga eth0 MAC: %s", out)
	}

	// Idempotent, then replaced on change.
	sa2, err := p.Ensure(ctx, a)
	if err != nil || sa2.PID != sa.PID {
		t.Fatalf("second ensure: pid %d -> %d (%v): want the same guest", sa.PID, sa2.PID, err)
	}
	// The VIPs it serves as a dsr backend go on lo, and change in place.
	lo := func() string {
		out, _ := exec.Command("ip", "-n", "gct-nn-ga", "-o", "addr", "show", "dev", "lo").CombinedOutput()
		return string(out)
	}
	a.Serves = []netip.Addr{netip.MustParseAddr("198.19.254.1"), netip.MustParseAddr("2001:db8::1")}
	if st, err := p.Ensure(ctx, a); err != nil || st.PID != sa.PID {
		t.Fatalf("ensure with VIPs: pid %d -> %d (%v): want the same guest", sa.PID, st.PID, err)
	}
	if got := lo(); !strings.Contains(got, "198.19.254.1/32") || !strings.Contains(got, "2001:db8::1/128") {
		t.Fatalf("lo of ga %q: want both VIPs", got)
	}
	a.Serves = []netip.Addr{netip.MustParseAddr("198.19.254.2")}
	if _, err := p.Ensure(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got := lo(); !strings.Contains(got, "198.19.254.2/32") || strings.Contains(got, "198.19.254.1/32") || strings.Contains(got, "2001:db8::1") {
		t.Fatalf("lo of ga %q: want 198.19.254.2 only", got)
	}
	if r, _ := p.load("ga"); !slices.Equal(r.Serves, []string{"198.19.254.2"}) {
		t.Fatalf("recorded VIPs %v", r.Serves)
	}

	a.NICs[0].Addr = netip.MustParsePrefix("198.18.204.12/24")
	sa3, err := p.Ensure(ctx, a)
	if err != nil || sa3.PID == sa.PID || sa3.Addresses[0] != "198.18.204.12" {
		t.Fatalf("changed ensure: %+v (%v): want a new guest at .12", sa3, err)
	}
	us, err := p.Usage(ctx)
	if err != nil || len(us) != 2 || us[0].MemoryBytes != 64<<20 {
		t.Fatalf("usage %+v %v", us, err)
	}

	if err := p.Delete(ctx, "ga"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/run/netns/gct-nn-ga"); err == nil {
		t.Error("namespace remains")
	}
	if _, err := netlink.LinkByName("gvtga"); err == nil {
		t.Error("port remains")
	}
	if _, err := os.Stat(p.recPath("ga")); err == nil {
		t.Error("state file remains")
	}
	if alive(sa3.PID) {
		t.Errorf("guest server %d still runs", sa3.PID)
	}
	// A missing bridge fails before anything is made.
	c := guest("gc", "198.18.204.13/24", "02:00:00:c7:04:0c")
	c.NICs[0].Bridge = "gcbr3999"
	if _, err := p.Ensure(ctx, c); err == nil || !strings.Contains(err.Error(), `bridge "gcbr3999"`) {
		t.Fatalf("missing bridge: %v", err)
	}
	if l, _ := p.List(ctx); len(l) != 1 || l[0].Name != "gb" {
		t.Fatalf("list %+v: want only gb", l)
	}
}

// TestReusedAddressAnnounced: a guest re-made at an address another MAC held moments ago (a
// VM deleted and re-applied, or replaced on a MAC change) is reachable from a neighbour at
// once: its NIC announces itself (gratuitous ARP) instead of the neighbour sending to the old
// MAC until its entry goes stale.
func TestReusedAddressAnnounced(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "busybox", "ethtool", "ping", "sysctl")
	ctx := context.Background()
	testBridge(t, "gcbr3903")
	p := testProvider(t, "gct-ra-")
	t.Cleanup(func() { p.Delete(ctx, "peer"); p.Delete(ctx, "re") })
	// Its own bridge: TestGuestsOnABridge's may exist at the same time (another test binary).
	g := func(name, addr, mac string) compute.VMSpec {
		s := guest(name, addr, mac)
		s.NICs[0].Bridge, s.NICs[0].Port = "gcbr3903", "gvr"+name
		return s
	}
	if _, err := p.Ensure(ctx, g("peer", "198.18.204.30/24", "02:00:00:c7:04:30")); err != nil {
		t.Fatal(err)
	}
	ping := func(within time.Duration) error {
		var out []byte
		var err error
		for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if out, err = exec.Command("ip", "netns", "exec", "gct-ra-peer", "ping", "-c1", "-W0.3", "198.18.204.31").CombinedOutput(); err == nil {
				return nil
			}
		}
		return fmt.Errorf("%v: %s", err, out)
	}
	for i, tc := range []struct {
		desc string
		mac  string
		re   func(s compute.VMSpec) error // how the guest at .31 is re-made
	}{
		{"first made", "02:00:00:c7:04:31", func(s compute.VMSpec) error { _, err := p.Ensure(ctx, s); return err }},
		{"deleted and made again with another MAC", "02:00:00:c7:04:32", func(s compute.VMSpec) error {
			if err := p.Delete(ctx, "re"); err != nil {
				return err
			}
			_, err := p.Ensure(ctx, s)
			return err
		}},
		{"replaced by a MAC change", "02:00:00:c7:04:33", func(s compute.VMSpec) error { _, err := p.Ensure(ctx, s); return err }},
	} {
		if err := tc.re(g("re", "198.18.204.31/24", tc.mac)); err != nil {
			t.Fatalf("%s: %v", tc.desc, err)
		}
		// 2 s: far below the 5 s (DELAY) at least a stale entry takes to be probed again.
		if err := ping(2 * time.Second); err != nil {
			t.Fatalf("%s (%d): peer's ping to the guest at its reused address: %v; peer's neighbours: %s", tc.desc, i, err, neighbours("gct-ra-peer"))
		}
		if n := neighbours("gct-ra-peer"); !strings.Contains(n, tc.mac) {
			t.Errorf("%s: peer's neighbour entry %q lacks the guest's MAC %s", tc.desc, n, tc.mac)
		}
	}
}

func neighbours(ns string) string {
	out, _ := exec.Command("ip", "-n", ns, "neigh", "show", "198.18.204.31").CombinedOutput()
	return strings.TrimSpace(string(out))
}

// TestDualStackGuests: namespace guests on a dual-stack segment get their IPv6 address (not
// tentative: no duplicate address detection) and an IPv6 default route via gateway6, reach
// each other by ping and HTTP over IPv6, and an IPv4-only guest gets neither.
func TestDualStackGuests(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "busybox", "ethtool", "curl", "ping")
	ctx := context.Background()
	testBridge(t, "gcbr3905")
	p := testProvider(t, "gct-n6-")
	dual := func(name, addr, addr6, mac string) compute.VMSpec {
		s := guest(name, addr, mac)
		s.NICs[0].Bridge, s.NICs[0].VLAN, s.NICs[0].Gateway = "gcbr3905", 3905, netip.MustParseAddr("198.18.205.1")
		if addr6 != "" {
			s.NICs[0].Addr6, s.NICs[0].Gateway6 = netip.MustParsePrefix(addr6), netip.MustParseAddr("2001:db8:205::1")
		}
		return s
	}
	specs := []compute.VMSpec{
		dual("g6a", "198.18.205.10/24", "2001:db8:205::a/64", "02:00:00:c7:05:0a"),
		dual("g6b", "198.18.205.11/24", "2001:db8:205::b/64", "02:00:00:c7:05:0b"),
		dual("g4c", "198.18.205.12/24", "", "02:00:00:c7:05:0c"),
	}
	for _, s := range specs {
		t.Cleanup(func() { p.Delete(ctx, s.Name) })
		st, err := p.Ensure(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{s.NICs[0].Addr.Addr().String()}
		if s.NICs[0].Addr6.IsValid() {
			want = append(want, s.NICs[0].Addr6.Addr().String())
		}
		if !slices.Equal(st.Addresses, want) {
			t.Errorf("%s: addresses %v, want %v", s.Name, st.Addresses, want)
		}
	}
	for _, c := range []struct {
		ns, addr6, route6 string // "" when the guest must have none
	}{
		{"gct-n6-g6a", "2001:db8:205::a/64", "default via 2001:db8:205::1 dev eth0"},
		{"gct-n6-g6b", "2001:db8:205::b/64", "default via 2001:db8:205::1 dev eth0"},
		{"gct-n6-g4c", "", ""},
	} {
		addrs, _ := exec.Command("ip", "-n", c.ns, "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global").CombinedOutput()
		routes, _ := exec.Command("ip", "-n", c.ns, "-6", "route", "show", "default").CombinedOutput()
		switch {
		case c.addr6 == "" && (strings.TrimSpace(string(addrs)) != "" || strings.TrimSpace(string(routes)) != ""):
			t.Errorf("%s: IPv4-only guest has IPv6 %q, routes %q", c.ns, addrs, routes)
		case c.addr6 != "" && (!strings.Contains(string(addrs), c.addr6) || strings.Contains(string(addrs), "tentative")):
			t.Errorf("%s: eth0 IPv6 %q, want %s, not tentative", c.ns, addrs, c.addr6)
		case c.addr6 != "" && !strings.Contains(string(routes), c.route6):
			t.Errorf("%s: IPv6 default route %q, want %q", c.ns, routes, c.route6)
		}
	}
	if out, err := exec.Command("ip", "netns", "exec", "gct-n6-g6b", "ping", "-6", "-c", "1", "-W", "2", "2001:db8:205::a").CombinedOutput(); err != nil {
		t.Fatalf("ping -6 from g6b to g6a: %v: %s", err, out)
	}
	var body string
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		out, err := exec.Command("ip", "netns", "exec", "gct-n6-g6b", "curl", "-sS", "--max-time", "1", "http://[2001:db8:205::a]/").CombinedOutput()
		if body = strings.TrimSpace(string(out)); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if body != "g6a" {
		t.Fatalf("HTTP over IPv6 from g6b to g6a: %q, want g6a", body)
	}
}

// TestProvidersScopedToTheirHost: two providers on one machine (two hosts of the lab), each
// with its own state dir and the same namespace prefix, reconcile their own VMs: neither
// lists nor deletes the other's guest (the same server keeps running in each), a VM of the
// other host's name is refused while that host holds it, and once the other host deleted it,
// it can be made here.
func TestProvidersScopedToTheirHost(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "busybox", "ethtool")
	ctx := context.Background()
	testBridge(t, "gcbr3904")
	log := slog.New(slog.DiscardHandler)
	var ps [2]*Provider
	for i := range ps {
		ps[i] = testProvider(t, "gct-ns-")
	}
	want := [2][]compute.VMSpec{
		{guest("h1a", "198.18.204.20/24", "02:00:00:c7:04:14")},
		{guest("h2a", "198.18.204.21/24", "02:00:00:c7:04:15")},
	}
	t.Cleanup(func() {
		for _, p := range ps {
			for _, n := range []string{"h1a", "h2a"} {
				p.Delete(ctx, n)
			}
		}
	})
	pids := map[string]int{}
	for round := 0; round < 2; round++ {
		for i, p := range ps {
			got, err := compute.Reconcile(ctx, p, want[i], log)
			if err != nil {
				t.Fatalf("round %d: host %d: %v", round, i+1, err)
			}
			for _, st := range got {
				if st.State != compute.Running {
					t.Fatalf("round %d: host %d: vm %s %s (%s)", round, i+1, st.Name, st.State, st.Message)
				}
				if old, ok := pids[st.Name]; ok && old != st.PID {
					t.Errorf("round %d: vm %s remade (server pid %d -> %d)", round, st.Name, old, st.PID)
				}
				pids[st.Name] = st.PID
			}
		}
		for i, p := range ps {
			l, err := p.List(ctx)
			if err != nil || len(l) != 1 || l[0].Name != want[i][0].Name {
				t.Fatalf("round %d: host %d lists %+v (%v), want only %s", round, i+1, l, err, want[i][0].Name)
			}
		}
		for _, n := range []string{"h1a", "h2a"} {
			if !nsExists("gct-ns-"+n) || !alive(pids[n]) {
				t.Fatalf("round %d: guest %s: namespace there %v, server %d alive %v", round, n, nsExists("gct-ns-"+n), pids[n], alive(pids[n]))
			}
		}
	}
	// h2a moves to host 1: refused while host 2 holds it, made once host 2 deleted it.
	move := append(slices.Clone(want[0]), want[1][0])
	if _, err := compute.Reconcile(ctx, ps[0], move, log); err == nil || !strings.Contains(err.Error(), "another host still holds it") {
		t.Fatalf("host 1 making h2a while host 2 holds it: %v", err)
	}
	if !alive(pids["h2a"]) {
		t.Fatal("host 1 killed host 2's guest h2a")
	}
	if _, err := compute.Reconcile(ctx, ps[1], nil, log); err != nil {
		t.Fatal(err)
	}
	got, err := compute.Reconcile(ctx, ps[0], move, log)
	if err != nil || len(got) != 2 || got[1].State != compute.Running {
		t.Fatalf("host 1 after host 2 let h2a go: %+v %v", got, err)
	}
	if got[0].PID != pids["h1a"] {
		t.Errorf("h1a remade by the move (pid %d -> %d)", pids["h1a"], got[0].PID)
	}
}
