package lbmap

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/lb"
)

// The end-to-end test runs the load balancer the way an agent does: a separate process that
// loads with pinned maps, attaches xdp_lb to the LB host's uplink with a pinned link,
// programs services and can be killed with SIGKILL and started again.

const agentEnv = "GOVCLOUD_TEST_LB_AGENT"

type agentSpec struct {
	PinPath  string
	Uplink   string
	Self     string
	Services []lb.Service
}

// TestMain doubles as the agent stand-in that startAgent runs (the test binary with agentEnv set).
func TestMain(m *testing.M) {
	if raw := os.Getenv(agentEnv); raw != "" {
		os.Exit(lbAgentProcess(raw))
	}
	os.Exit(m.Run())
}

// lbAgentProcess loads the dataplane from spec, says "ready", then applies each service list
// read from stdin until it is killed.
func lbAgentProcess(raw string) int {
	var spec agentSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fmt.Println("bad spec:", err)
		return 2
	}
	dp, err := Load(Options{PinPath: spec.PinPath, ConnTableSize: 1 << 16})
	if err == nil {
		err = dp.SetConfig(Config{EncapSource4: netip.MustParseAddr(spec.Self), SNATSource4: netip.MustParseAddr(spec.Self)})
	}
	if err == nil {
		_, err = dp.AttachXDP(spec.Uplink, dp.Program())
	}
	if err == nil {
		err = dp.Set(spec.Services)
	}
	if err != nil {
		fmt.Println("agent:", err)
		return 1
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(nil, 1<<20)
	for in.Scan() { // each line: a new JSON service list
		var svcs []lb.Service
		if err := json.Unmarshal(in.Bytes(), &svcs); err != nil {
			fmt.Println("bad services:", err)
			continue
		}
		if err := dp.Set(svcs); err != nil {
			fmt.Println("set:", err)
			continue
		}
		fmt.Println("ready")
	}
	select {}
}

type agentProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

func startAgent(t *testing.T, ns *netnstest.NS, spec agentSpec) *agentProc {
	t.Helper()
	raw, _ := json.Marshal(spec)
	cmd := ns.Cmd(os.Args[0])
	cmd.Env = append(os.Environ(), agentEnv+"="+string(raw))
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &agentProc{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	t.Cleanup(func() { a.kill() })
	a.waitReady(t)
	return a
}

func (a *agentProc) waitReady(t *testing.T) {
	t.Helper()
	for a.out.Scan() {
		if a.out.Text() == "ready" {
			return
		}
		t.Logf("agent: %s", a.out.Text())
	}
	t.Fatal("agent exited before it was ready")
}

func (a *agentProc) set(t *testing.T, svcs []lb.Service) {
	t.Helper()
	raw, _ := json.Marshal(svcs)
	if _, err := fmt.Fprintf(a.stdin, "%s\n", raw); err != nil {
		t.Fatal(err)
	}
	a.waitReady(t)
}

func (a *agentProc) kill() {
	if a.cmd.Process != nil {
		_ = a.cmd.Process.Kill()
		_ = a.cmd.Wait()
	}
}

// echoServer answers every line with the backend's name, on a socket made inside ns.
func echoServer(t *testing.T, ns *netnstest.NS, addr, name string) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
					if _, err := fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr()); err != nil {
						return
					}
				}
			}()
		}
	}()
}

type clientConn struct {
	c       net.Conn
	r       *bufio.Reader
	backend string
}

// ask sends a line and returns the answering backend's name and the source it saw.
func (cc *clientConn) ask() (string, string, error) {
	_ = cc.c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintln(cc.c, "ping"); err != nil {
		return "", "", err
	}
	line, err := cc.r.ReadString('\n')
	if err != nil {
		return "", "", err
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		return "", "", fmt.Errorf("odd answer %q", line)
	}
	return f[0], f[1], nil
}

func dialN(t *testing.T, ns *netnstest.NS, addr string, n int) []*clientConn {
	t.Helper()
	conns := make([]*clientConn, n)
	for i := range conns {
		var c net.Conn
		if err := ns.Do(func() (err error) { c, err = net.DialTimeout("tcp", addr, 3*time.Second); return }); err != nil {
			t.Fatalf("dial %s #%d: %v", addr, i, err)
		}
		t.Cleanup(func() { c.Close() })
		cc := &clientConn{c: c, r: bufio.NewReader(c)}
		name, _, err := cc.ask()
		if err != nil {
			t.Fatalf("conn %d to %s: %v", i, addr, err)
		}
		cc.backend = name
		conns[i] = cc
	}
	return conns
}

// checkConns asks every connection again; those whose backend is in lost may fail, all others
// must answer from the same backend.
func checkConns(t *testing.T, step string, conns []*clientConn, lost map[string]bool) (broken int) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, cc := range conns {
		if cc == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			name, _, err := cc.ask()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case lost[cc.backend]:
				conns[i] = nil
				broken++
			case err != nil:
				t.Errorf("%s: connection %d on %s broke: %v", step, i, cc.backend, err)
			case name != cc.backend:
				t.Errorf("%s: connection %d moved from %s to %s", step, i, cc.backend, name)
			}
		}()
	}
	wg.Wait()
	return broken
}

func TestEndToEnd(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "ethtool")
	sw := netnstest.New(t, "gct-sw")
	client := netnstest.New(t, "gct-cl")
	lbh := netnstest.New(t, "gct-lbh")
	hosts := []*netnstest.NS{netnstest.New(t, "gct-b1"), netnstest.New(t, "gct-b2"), netnstest.New(t, "gct-b3")}
	sw.MustRun(t, "ip", "link", "add", "br0", "type", "bridge")
	sw.MustRun(t, "ip", "link", "set", "br0", "up")
	plug := func(ns *netnstest.NS, port, addr string) {
		t.Helper()
		if err := netnstest.Veth(ns, "eth0", sw, port); err != nil {
			t.Fatal(err)
		}
		sw.MustRun(t, "ip", "link", "set", port, "master", "br0")
		if err := ns.AddrAdd("eth0", addr); err != nil {
			t.Fatal(err)
		}
		// veth hands packets over with checksums left to "hardware" (CHECKSUM_PARTIAL); frames
		// that XDP forwards as raw bytes must carry finished checksums, as from a real NIC.
		ns.MustRun(t, "ethtool", "-K", "eth0", "tx", "off")
	}
	plug(client, "p-cl", "198.18.0.100/24")
	plug(lbh, "p-lb", "198.18.0.1/24")
	for i, h := range hosts {
		plug(h, fmt.Sprintf("p-b%d", i+1), fmt.Sprintf("198.18.0.%d/24", 10+i))
	}
	// The client reaches the VIPs through the LB host (what BGP will do in the lab).
	client.MustRun(t, "ip", "route", "add", "203.0.113.0/24", "via", "198.18.0.1")
	lbh.MustRun(t, "sysctl", "-qw", "net.ipv4.conf.all.forwarding=1")
	lbh.MustRun(t, "ping", "-c1", "-W2", "198.18.0.100") // nat replies go straight to the client

	// Frames the LB sends back out (XDP_TX) arrive at its switch port; a veth peer needs an XDP
	// program (NAPI) to take them.
	passDP, err := Load(Options{ConnTableSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer passDP.Close()
	keepAttached(t, sw, passDP, "p-lb", passDP.PassProgram())

	// Backend hosts: VIP on lo for dsr, decapsulation on the uplink, echo servers on VIP:80
	// (dsr) and on their own address:8080 (nat).
	for i, h := range hosts {
		name := fmt.Sprintf("b%d", i+1)
		self := fmt.Sprintf("198.18.0.%d", 10+i)
		h.MustRun(t, "ip", "addr", "add", "203.0.113.10/32", "dev", "lo")
		h.MustRun(t, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0")
		dp, err := Load(Options{ConnTableSize: 1024})
		if err != nil {
			t.Fatal(err)
		}
		defer dp.Close()
		if err := dp.SetDecapAddrs([]netip.Addr{netip.MustParseAddr(self)}); err != nil {
			t.Fatal(err)
		}
		// Decapsulate only what the LB host (198.18.0.1) sends to the dsr VIP.
		if err := dp.SetTunnelSources([]netip.Addr{netip.MustParseAddr("198.18.0.1")}); err != nil {
			t.Fatal(err)
		}
		if err := dp.SetLocalVIPs([]LocalVIP{{VIP: lb.VIP{Addr: netip.MustParseAddr("203.0.113.10"), Port: 80, Proto: lb.TCP}}}); err != nil {
			t.Fatal(err)
		}
		keepAttached(t, h, dp, "eth0", dp.DecapProgram())
		echoServer(t, h, "203.0.113.10:80", name)
		echoServer(t, h, self+":8080", name)
		lbh.MustRun(t, "ping", "-c1", "-W2", self) // the LB resolves its backend hosts' MACs
	}

	services := func(backends ...int) []lb.Service {
		var dsr, nat []lb.Backend
		for _, i := range backends {
			a := fmt.Sprintf("198.18.0.%d", 10+i)
			dsr = append(dsr, be(a, 0, 1))
			nat = append(nat, be(a, 8080, 1))
		}
		return []lb.Service{
			svc("web", 0, "203.0.113.10", 80, lb.TCP, lb.DSR, dsr...),
			svc("web-nat", 0, "203.0.113.20", 80, lb.TCP, lb.NAT, nat...),
		}
	}
	// 'ip netns exec' remounts /sys, hiding /sys/fs/bpf: the agent pins into a bpffs of its own
	// mounted where both this test and the namespaced agent see it.
	bpffs := t.TempDir()
	if out, err := exec.Command("mount", "-t", "bpf", "bpf", bpffs).CombinedOutput(); err != nil {
		t.Fatalf("mounting bpffs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", bpffs).Run() })
	pin := filepath.Join(bpffs, "lb")
	spec := agentSpec{PinPath: pin, Uplink: "eth0", Self: "198.18.0.1", Services: services(0, 1)}
	agent := startAgent(t, lbh, spec)

	dsrConns := dialN(t, client, "203.0.113.10:80", 24)
	natConns := dialN(t, client, "203.0.113.20:80", 24)
	for _, set := range [][]*clientConn{dsrConns, natConns} {
		used := map[string]int{}
		for _, c := range set {
			used[c.backend]++
		}
		if used["b1"] == 0 || used["b2"] == 0 || len(used) != 2 {
			t.Fatalf("connections spread %v, want both b1 and b2", used)
		}
	}
	// nat: the backend sees the LB's address, not the client's.
	if _, src, err := natConns[0].ask(); err != nil || !strings.HasPrefix(src, "198.18.0.1:") {
		t.Fatalf("nat backend saw source %q (%v), want the LB 198.18.0.1", src, err)
	}
	// dsr: the backend sees the client.
	if _, src, err := dsrConns[0].ask(); err != nil || !strings.HasPrefix(src, "198.18.0.100:") {
		t.Fatalf("dsr backend saw source %q (%v), want the client", src, err)
	}
	all := append(append([]*clientConn{}, dsrConns...), natConns...)

	spec.Services = services(0, 1, 2)
	agent.set(t, spec.Services) // add b3
	if n := checkConns(t, "add backend", all, nil); n != 0 {
		t.Fatalf("adding a backend broke %d connections", n)
	}
	newConns := dialN(t, client, "203.0.113.10:80", 24)
	if got := countBackend(newConns, "b3"); got == 0 {
		t.Fatal("no new connection went to the added backend b3")
	}

	agent.kill() // SIGKILL mid-stream: pinned link and maps keep forwarding
	if n := checkConns(t, "agent killed", all, nil); n != 0 {
		t.Fatalf("%d connections broke while the agent was down", n)
	}
	agent = startAgent(t, lbh, spec) // restarted with the same desired state
	all = append(all, newConns...)
	if n := checkConns(t, "agent restarted", all, nil); n != 0 {
		t.Fatalf("agent restart broke %d connections", n)
	}

	onB2 := countBackend(all, "b2")
	agent.set(t, services(0, 2)) // remove b2
	broken := checkConns(t, "remove b2", all, map[string]bool{"b2": true})
	if broken != onB2 {
		t.Fatalf("removing b2: %d connections lost, want exactly b2's %d", broken, onB2)
	}
	if n := checkConns(t, "after removal", all, nil); n != 0 {
		t.Fatalf("%d connections broke after removal", n)
	}
}

// keepAttached attaches prog in ns and holds the link until the test ends (a dropped link is
// closed by the garbage collector, detaching the program).
func keepAttached(t testing.TB, ns *netnstest.NS, dp *Dataplane, ifname string, prog *ebpf.Program) {
	t.Helper()
	var l link.Link
	if err := ns.Do(func() (err error) { l, err = dp.AttachXDP(ifname, prog); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
}

func countBackend(conns []*clientConn, name string) int {
	n := 0
	for _, c := range conns {
		if c != nil && c.backend == name {
			n++
		}
	}
	return n
}
