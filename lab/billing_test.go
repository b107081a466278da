package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/metering"
)

// guestAddr is the IPv4 address of a lab guest's segment interface (not the VIPs on lo).
func guestAddr(t *testing.T, ns string) (addr, ifname string) {
	t.Helper()
	out, err := nsOut(ns, "ip", "-4", "-o", "addr", "show")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 4 && f[1] != "lo" {
			return strings.Split(f[3], "/")[0], f[1]
		}
	}
	t.Fatalf("%s: no segment address in %q", ns, out)
	return "", ""
}

var nftCounterRE = regexp.MustCompile(`counter packets (\d+) bytes (\d+)`)

// frameBytes counts what ns sends to dst from now on: read returns the frames' bytes on the
// wire (the IP bytes nftables counts at output, plus a 14-byte Ethernet header each), which
// is what the trunk and the load balancer count.
func frameBytes(t *testing.T, ns, dst string) (read func() uint64) {
	t.Helper()
	for _, c := range [][]string{
		{"nft", "add", "table", "ip", "gcbill"},
		{"nft", "add", "chain", "ip", "gcbill", "out", "{ type filter hook output priority 0; }"},
		{"nft", "add", "rule", "ip", "gcbill", "out", "ip", "daddr", dst, "counter"},
	} {
		if err := nsx(ns, c...); err != nil {
			t.Fatal(err)
		}
	}
	return func() uint64 {
		out, err := nsOut(ns, "nft", "list", "chain", "ip", "gcbill", "out")
		if err != nil {
			t.Fatal(err)
		}
		m := nftCounterRE.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("%s: no counter in %q", ns, out)
		}
		p, _ := strconv.ParseUint(m[1], 10, 64)
		b, _ := strconv.ParseUint(m[2], 10, 64)
		return b + 14*p
	}
}

// billed is one department's billed quantities in base units, by resource.
func billed(b metering.Bill) map[string]map[string]uint64 {
	out := map[string]map[string]uint64{}
	for _, l := range b.Lines {
		if out[l.Department] == nil {
			out[l.Department] = map[string]uint64{}
		}
		out[l.Department][l.Resource] += l.BaseQuantity
	}
	return out
}

// TestLabBilling: a known transfer through a public VIP from gc-client, and a known transfer
// between two hosts inside a department (guest to guest across the trunk), with host1's agent
// killed with SIGKILL in the middle of both; each department's bill moves by the defined bytes
// (README "What a department's network usage is"): lands' network_vip_in_bytes by exactly the
// frames gc-client sent to lands' VIP, health's by nothing; lands' network_tx_bytes by the
// frames its two guests sent each other plus the lab's background on the trunk (bounded by
// health's, which sent nothing).
func TestLabBilling(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra", "curl", "ethtool", "ping", "nft")
	if len(labNamespaces()) > 0 {
		t.Fatalf("a lab is already running here (%v): 'sudo make demo-down' first", labNamespaces())
	}
	dir := t.TempDir() + "/lab"
	bin, run := labCLI(t, dir)
	if _, err := run("up"); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	defer func() { _, _ = run("down") }()
	l, admin := openLab(t, bin, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := l.client(admin)
	mc := &metering.Client{Base: c.Base, Token: admin, HTTP: c.HTTP}
	vips, err := l.vips(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	vip := ""
	for _, v := range vips {
		if v.Department == "lands" {
			vip = v.VIP
		}
	}
	web1, web2 := "gc-vm-lands-web-1", "gc-vm-lands-web-2"
	a1, if1 := guestAddr(t, web1)
	a2, if2 := guestAddr(t, web2)
	// No ARP across the trunk during the test: each guest knows the other's MAC.
	mac := func(ns, ifname string) string {
		out, err := nsOut(ns, "cat", "/sys/class/net/"+ifname+"/address")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	if err := nsx(web1, "ip", "neigh", "replace", a2, "lladdr", mac(web2, if2), "dev", if1, "nud", "permanent"); err != nil {
		t.Fatal(err)
	}
	if err := nsx(web2, "ip", "neigh", "replace", a1, "lladdr", mac(web1, if1), "dev", if2, "nud", "permanent"); err != nil {
		t.Fatal(err)
	}

	// The bill once every reporter has reported after since.
	settled := func(since time.Time) metering.Bill {
		t.Helper()
		deadline := time.Now().Add(150 * time.Second)
		for {
			b, err := mc.Bill(ctx, metering.Month(time.Now()), "")
			if err != nil {
				t.Fatal(err)
			}
			fresh := 0
			for _, r := range b.MeteredUpTo {
				if (r.Source == metering.SourceNetwork || r.Source == metering.SourceLB) && r.Time.After(since) {
					fresh++
				}
			}
			if fresh == 2*len(defaultHosts) {
				return b
			}
			if time.Now().After(deadline) {
				t.Fatalf("reporters not all fresh after %s: %+v", since, b.MeteredUpTo)
			}
			time.Sleep(2 * time.Second)
		}
	}
	client := frameBytes(t, NSClient, vip)
	w1, w2 := frameBytes(t, web1, a2), frameBytes(t, web2, a1)
	before := billed(settled(time.Now()))

	// The transfers: HTTP requests (1000-byte bodies: every packet fits the fabric's MTU with
	// the dsr encapsulation) to lands' VIP from gc-client and from one guest to the other, for
	// about 10 s; host1's agent killed with SIGKILL half-way and started again.
	body := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(body, []byte(strings.Repeat("x", 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	for _, tr := range []struct{ ns, url string }{{NSClient, "http://" + vip + "/"}, {web1, "http://" + a2 + "/"}} {
		go func() {
			for i := 0; i < 50; i++ {
				if _, err := nsOut(tr.ns, "curl", "-sS", "--max-time", "5", "-o", "/dev/null", "--data-binary", "@"+body, tr.url); err != nil {
					done <- fmt.Errorf("request %d %s -> %s: %w", i, tr.ns, tr.url, err)
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
			done <- nil
		}()
	}
	time.Sleep(5 * time.Second)
	l.kill("agent-gc-host1")
	time.Sleep(time.Second)
	if err := l.startAgent("gc-host1"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	sentVIP, sentEW := client(), w1()+w2()
	after := billed(settled(time.Now()))
	if sentVIP < 50*1000 || sentEW < 50*1000 {
		t.Fatalf("transfers too small: VIP %d bytes, east-west %d", sentVIP, sentEW)
	}
	delta := func(dept, res string) uint64 { return after[dept][res] - before[dept][res] }
	// North-south: exact. Nothing else reaches a public VIP in the lab.
	if got := delta("lands", metering.ResNetVIPInBytes); got != sentVIP {
		t.Errorf("lands network_vip_in_bytes moved by %d bytes, want exactly %d (the frames gc-client sent to %s)", got, sentVIP, vip)
	}
	if got := delta("health", metering.ResNetVIPInBytes); got != 0 {
		t.Errorf("health network_vip_in_bytes moved by %d bytes, want 0", got)
	}
	// East-west: every frame of the transfer, plus whatever else the department's segments
	// sent across the trunk meanwhile (the lab's own background: a few 42-byte ARP frames per
	// department, seen in health too, which sent nothing); never less, never more than that.
	background := delta("health", metering.ResNetTxBytes)
	if got := delta("lands", metering.ResNetTxBytes); got < sentEW || got-sentEW > max(background, 42)*2 || background > 1024 {
		t.Errorf("lands network_tx_bytes moved by %d bytes, want the transfer's %d plus background (health's: %d)", got, sentEW, background)
	}
	t.Logf("lands: VIP %d bytes billed %d; east-west %d bytes billed %d; health background %d", sentVIP, delta("lands", metering.ResNetVIPInBytes), sentEW, delta("lands", metering.ResNetTxBytes), background)
}
