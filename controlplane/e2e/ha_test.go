package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/govcloud/govcloud/controlplane/apitest"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/dataplane/netnstest"
)

// haCluster is three nodes, each a network namespace holding one etcd member (Debian's
// etcd-server) and one controller process, plus a client namespace, joined by a bridge in a
// hub namespace. Node i has 198.18.50.i; the client 198.18.50.100.
type haCluster struct {
	t       testing.TB
	dir     string
	hub     *netnstest.NS
	nodes   []*netnstest.NS
	cl      *netnstest.NS
	etcd    []*exec.Cmd
	etcdOut []*bytes.Buffer
	ctl     []*exec.Cmd
	ctlOut  []*bytes.Buffer
	ca      string
	token   string
}

func nodeAddr(i int) string { return fmt.Sprintf("198.18.50.%d", i+1) }
func ctlURL(i int) string   { return "https://" + nodeAddr(i) + ":8480" }

func etcdEndpoints() string {
	var eps []string
	for i := range 3 {
		eps = append(eps, "http://"+nodeAddr(i)+":2379")
	}
	return strings.Join(eps, ",")
}

// newHACluster builds the namespaces and starts etcd and the controllers; all is removed when
// the test ends.
// With tmpfs, etcd keeps its data in /dev/shm: the disk is shared with other test binaries
// running at the same time, and fsync stalls of theirs would show as etcd leader changes.
func newHACluster(t testing.TB, tmpfs bool) *haCluster {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "etcd", "etcdctl", "ip", "nft")
	dir := t.TempDir()
	if tmpfs {
		if d, err := os.MkdirTemp("/dev/shm", "govcloud-ha-"); err == nil {
			dir = d
			t.Cleanup(func() { os.RemoveAll(d) })
		}
	}
	h := &haCluster{t: t, dir: dir, hub: netnstest.New(t, "gc-hahub")}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := h.hub.Netlink().LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	if err := h.hub.Netlink().LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	attach := func(ns *netnstest.NS, port, addr string) {
		if err := netnstest.Veth(ns, "eth0", h.hub, port); err != nil {
			t.Fatal(err)
		}
		l, err := h.hub.Netlink().LinkByName(port)
		if err == nil {
			err = h.hub.Netlink().LinkSetMaster(l, br)
		}
		if err == nil {
			err = ns.AddrAdd("eth0", addr+"/24")
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		ns := netnstest.New(t, fmt.Sprintf("gc-ha%d", i+1))
		attach(ns, fmt.Sprintf("p%d", i+1), nodeAddr(i))
		h.nodes = append(h.nodes, ns)
	}
	h.cl = netnstest.New(t, "gc-hacl")
	attach(h.cl, "pcl", "198.18.50.100")
	h.etcd, h.etcdOut = make([]*exec.Cmd, 3), make([]*bytes.Buffer, 3)
	for i := range 3 {
		h.startEtcd(i)
	}
	h.waitEtcd()
	h.ctl, h.ctlOut = make([]*exec.Cmd, 3), make([]*bytes.Buffer, 3)
	for i := range 3 {
		h.startController(i)
		if i == 0 {
			h.ca = filepath.Join(h.dir, "c1", "ca.crt")
			tok, err := os.ReadFile(filepath.Join(h.dir, "c1", "admin-token"))
			if err != nil {
				t.Fatalf("first controller wrote no admin token: %v\n%s", err, h.ctlOut[0])
			}
			h.token = strings.TrimSpace(string(tok))
		}
	}
	return h
}

func (h *haCluster) start(ns *netnstest.NS, out *bytes.Buffer, name string, args ...string) *exec.Cmd {
	// 'ip netns exec' and nice exec: the pid is the program's. Raised priority: the failover
	// times measured are the cluster's, not those of a machine busy with other test binaries.
	cmd := ns.Cmd("nice", append([]string{"-n", "-10", name}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGCONT); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// startEtcd starts member i (again: with its data dir it rejoins). Short heartbeat and
// election timeout, as on a LAN, so a dead etcd leader is replaced in about a second and a
// lease of 1 s is granted as 1 s.
func (h *haCluster) startEtcd(i int) {
	var initial []string
	for j := range 3 {
		initial = append(initial, fmt.Sprintf("m%d=http://%s:2380", j+1, nodeAddr(j)))
	}
	a := nodeAddr(i)
	h.etcdOut[i] = &bytes.Buffer{}
	h.etcd[i] = h.start(h.nodes[i], h.etcdOut[i], "etcd", "--name", fmt.Sprintf("m%d", i+1), "--data-dir", filepath.Join(h.dir, fmt.Sprintf("m%d", i+1)),
		"--listen-client-urls", "http://"+a+":2379", "--advertise-client-urls", "http://"+a+":2379",
		"--listen-peer-urls", "http://"+a+":2380", "--initial-advertise-peer-urls", "http://"+a+":2380",
		"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-token", "gc-ha", "--initial-cluster-state", "new",
		"--heartbeat-interval", "50", "--election-timeout", strconv.Itoa(int(etcdElectionTimeout/time.Millisecond)), "--max-txn-ops", "100000", "--max-request-bytes", "67108864",
		"--log-level", "error")
}

func (h *haCluster) waitEtcd() {
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := h.cl.Run("etcdctl", "--endpoints", etcdEndpoints(), "--command-timeout", "2s", "endpoint", "health")
		if err == nil && strings.Count(out, "is healthy") == 3 {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("etcd cluster not healthy after 30s: %v %s\n%s\n%s\n%s", err, out, h.etcdOut[0], h.etcdOut[1], h.etcdOut[2])
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// etcdLeader is the index of the member leading raft.
func (h *haCluster) etcdLeader() int {
	out, err := h.cl.Run("etcdctl", "--endpoints", etcdEndpoints(), "--command-timeout", "2s", "endpoint", "status", "-w", "json")
	var st []struct {
		Endpoint string `json:"Endpoint"`
		Status   struct {
			Header struct {
				MemberID uint64 `json:"member_id"`
			} `json:"header"`
			Leader uint64 `json:"leader"`
		} `json:"Status"`
	}
	if jerr := json.Unmarshal([]byte(out), &st); jerr != nil || len(st) == 0 {
		h.t.Fatalf("etcd endpoint status: %v %v %s", err, jerr, out)
	}
	for _, s := range st {
		if s.Status.Header.MemberID == s.Status.Leader {
			for i := range 3 {
				if strings.Contains(s.Endpoint, nodeAddr(i)+":") {
					return i
				}
			}
		}
	}
	h.t.Fatalf("no etcd leader in %s", out)
	return -1
}

func (h *haCluster) startController(i int) {
	h.ctlOut[i] = &bytes.Buffer{}
	h.ctl[i] = h.start(h.nodes[i], h.ctlOut[i], bin, "controller", "--log-level", "warn", "--id", fmt.Sprintf("c%d", i+1),
		"--data-dir", filepath.Join(h.dir, fmt.Sprintf("c%d", i+1)), "--listen", nodeAddr(i)+":8480",
		"--etcd-endpoints", etcdEndpoints(), "--election-ttl", "1s", "--advertise-url", ctlURL(i))
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _, _ := h.healthz(h.cl, i, time.Second); code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("controller c%d not ready after 30s:\n%s", i+1, h.ctlOut[i])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// partitionRules cut a node's controller off: no connection to any etcd client port, and
// none to its API from anywhere but its own address.
func partitionRules(self string) string {
	return fmt.Sprintf(`table inet gc_partition {
	chain out {
		type filter hook output priority 0;
		tcp dport 2379 drop
	}
	chain in {
		type filter hook input priority 0;
		tcp dport 8480 ip saddr != %s drop
	}
}
`, self)
}

// dialIn dials from inside ns.
func dialIn(ns *netnstest.NS) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			c, err = (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// client is a failover client over the given controllers, dialling from the client namespace
// (or from ns).
func (h *haCluster) client(ns *netnstest.NS, idx ...int) *client.Client {
	var urls []string
	for _, i := range idx {
		urls = append(urls, ctlURL(i))
	}
	c := client.New(strings.Join(urls, ","), h.token)
	if h.ca != "" {
		if err := c.SetCAFile(h.ca); err != nil {
			h.t.Fatal(err)
		}
	}
	c.HTTP.Transport.(*http.Transport).DialContext = dialIn(ns)
	return c
}

// healthz asks controller i for /healthz from ns: the status code (0: no answer within
// timeout) and the reason.
func (h *haCluster) healthz(ns *netnstest.NS, i int, timeout time.Duration) (int, string, error) {
	c := client.New(ctlURL(i), "")
	if h.ca != "" {
		if err := c.SetCAFile(h.ca); err != nil {
			return 0, "", err
		}
	} else {
		c.HTTP.Transport.(*http.Transport).TLSClientConfig.InsecureSkipVerify = true // the CA is being made
	}
	c.HTTP.Transport.(*http.Transport).DialContext = dialIn(ns)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ctlURL(i)+"/healthz", nil)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var rd struct {
		Reason string `json:"reason"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&rd)
	return resp.StatusCode, rd.Reason, nil
}

// leader is the index of the controller that says it leads (-1: none agreed within 10 s).
func (h *haCluster) leader(alive ...int) int {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, i := range alive {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			c := h.client(h.cl, i)
			c.RetryFor = time.Millisecond
			st, err := c.Status(ctx)
			cancel()
			if err == nil && st.Leader.IsLeader {
				return i
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return -1
}

// applyRecord is one apply of the stream: two segments that must both exist or neither.
type applyRecord struct {
	n    int
	ok   bool
	at   time.Time
	took time.Duration
	err  string
}

func streamDoc(n int) string {
	var b strings.Builder
	for j, suffix := range []string{"a", "b"} {
		k := 2*n + j // a /29 each, from 198.18.128.0/17: n < 2048
		net := fmt.Sprintf("198.18.%d.%d", 128+k/32, (k%32)*8)
		fmt.Fprintf(&b, "---\napiVersion: govcloud/v1\nkind: Segment\nmetadata: {name: ha-%d-%s}\nspec: {department: lands, ipv4: %s/29}\n", n, suffix, net)
	}
	return b.String()
}

// stream applies streamDoc(from), (from+1), ... one after another until stop, through c.
func stream(c *client.Client, from int, stop <-chan struct{}) (func() []applyRecord, *sync.WaitGroup) {
	var mu sync.Mutex
	var recs []applyRecord
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := from; n < 2000; n++ {
			select {
			case <-stop:
				return
			default:
			}
			t0 := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			_, err := c.Apply(ctx, fmt.Sprintf("stream-%d.yaml", n), []byte(streamDoc(n)), client.ApplyOptions{})
			cancel()
			r := applyRecord{n: n, ok: err == nil, at: time.Now(), took: time.Since(t0)}
			if err != nil {
				r.err = err.Error()
			}
			mu.Lock()
			recs = append(recs, r)
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return func() []applyRecord {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(recs)
	}, &wg
}

// gapAfter is the time from t to the first successful apply that started after t.
func gapAfter(recs []applyRecord, t time.Time) (time.Duration, bool) {
	for _, r := range recs {
		if r.ok && r.at.Add(-r.took).After(t) {
			return r.at.Sub(t), true
		}
	}
	return 0, false
}

// waitProgress waits until an apply that started after t succeeded (up to 15 s) and returns
// the time from t to its success.
func waitProgress(t testing.TB, recs func() []applyRecord, since time.Time, what string) time.Duration {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if d, ok := gapAfter(recs(), since); ok {
			return d
		}
		time.Sleep(50 * time.Millisecond)
	}
	rs := recs()
	for _, r := range rs[max(0, len(rs)-5):] {
		t.Logf("apply %d ok %v took %v at %s: %s", r.n, r.ok, r.took, r.at.Format("15:04:05.000"), r.err)
	}
	t.Fatalf("%s (at %s): no successful apply within 15s", what, since.Format("15:04:05.000"))
	return 0
}

// etcdElectionTimeout is the test cluster's raft election timeout, and etcdRequestTimeout
// what an etcd member waits for a proposal to apply before it answers "request timed out"
// (etcd's ReqTimeout: 5 s + 2 election timeouts).
const (
	etcdElectionTimeout = 600 * time.Millisecond
	etcdRequestTimeout  = 5*time.Second + 2*etcdElectionTimeout
)

// TestHAControlPlane: three controllers on a real three-member etcd cluster, each member in its
// own namespace. During a stream of applies (two segments each, VLANs allocated): the leading
// controller is killed, then the etcd leader; later the leading controller is paused (SIGSTOP)
// and then cut off from the others. Clients fail over within 3 s each time (the etcd leader's
// death: within etcd's request timeout, when a proposal was lost with it), a write queued at
// the paused leader, directly or through a follower, is not executed after it lost its lease,
// a cut-off controller reports not-ready, an agent's long poll keeps converging, and in the end
// every apply that returned success is present, none is half-applied, and no VLAN is given
// twice.
func TestHAControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster and three controllers")
	}
	h := newHACluster(t, true)
	t.Cleanup(func() {
		if t.Failed() {
			for i := range 3 {
				t.Logf("controller c%d output:\n%s", i+1, h.ctlOut[i])
			}
		}
	})
	admin := h.client(h.cl, 0, 1, 2)
	ctx := context.Background()
	if _, err := admin.Apply(ctx, "base.yaml", []byte(apitest.Base), client.ApplyOptions{}); err != nil {
		t.Fatalf("apply base: %v", err)
	}
	stop := make(chan struct{})
	recs, wg := stream(h.client(h.cl, 0, 1, 2), 0, stop)
	stopped := false
	stopStream := func() {
		if !stopped {
			close(stop)
			wg.Wait()
			stopped = true
		}
	}
	defer stopStream()

	// An agent of host1 long-polls its desired state through the failover client.
	agentRev := make(chan int64, 1024)
	agentCtx, agentStop := context.WithCancel(ctx)
	defer agentStop()
	go func() {
		ac := h.client(h.cl, 2, 1, 0)
		var after int64
		for agentCtx.Err() == nil {
			st, err := ac.Desired(agentCtx, "host1", after, 5*time.Second)
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if st != nil {
				after = st.Revision
				select {
				case agentRev <- after:
				default:
				}
			}
		}
	}()

	alive := []int{0, 1, 2}
	report := map[string]time.Duration{}
	waitProgress(t, recs, time.Now(), "before any failure")

	// 1. Kill the leading controller.
	l := h.leader(alive...)
	if l < 0 {
		t.Fatal("no controller leads")
	}
	kill := time.Now()
	_ = h.ctl[l].Process.Kill()
	alive = slices.DeleteFunc(alive, func(i int) bool { return i == l })
	report[fmt.Sprintf("controller c%d killed (leader)", l+1)] = waitProgress(t, recs, kill, "leader controller killed")

	// 2. Kill the etcd leader, then bring it back (it rejoins from its data dir).
	m := h.etcdLeader()
	kill = time.Now()
	_ = h.etcd[m].Process.Kill()
	_ = h.etcd[m].Wait()
	report[fmt.Sprintf("etcd leader m%d killed", m+1)] = waitProgress(t, recs, kill, "etcd leader killed")
	h.startEtcd(m)
	h.waitEtcd()

	// 3. Pause the leading controller for 4 s. A write sent to it meanwhile (no failover) must
	// not be executed when it resumes: its lease ended.
	l = h.leader(alive...)
	if l < 0 {
		t.Fatal("no controller leads after the kills")
	}
	pause := time.Now()
	_ = h.ctl[l].Process.Signal(syscall.SIGSTOP)
	// sendOnce applies streamDoc(n), renamed, through controller i alone: no failover, no retry.
	sendOnce := func(i, n int, name string) <-chan error {
		done := make(chan error, 1)
		go func() {
			c := h.client(h.cl, i)
			c.AttemptIdle, c.RetryFor = 20*time.Second, time.Millisecond
			qctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			_, err := c.Apply(qctx, name+".yaml", []byte(strings.ReplaceAll(streamDoc(n), fmt.Sprintf("ha-%d", n), name)), client.ApplyOptions{})
			done <- err
		}()
		return done
	}
	queued := sendOnce(l, 2000, "queued")
	// The same write through a follower (no failover): the follower forwards it to the paused
	// leader, gives up when the leader sends nothing, and answers 503; the forwarded copy
	// waiting in the leader's socket must not run when it resumes either.
	f := slices.DeleteFunc(slices.Clone(alive), func(i int) bool { return i == l })[0]
	queuedFwd := sendOnce(f, 2001, "queuedfwd")
	if code, _, err := h.healthz(h.cl, l, time.Second); code == http.StatusOK {
		t.Errorf("paused controller c%d answered /healthz 200 (%v)", l+1, err)
	}
	report[fmt.Sprintf("controller c%d paused (leader)", l+1)] = waitProgress(t, recs, pause, "leader controller paused")
	time.Sleep(time.Until(pause.Add(4 * time.Second)))
	_ = h.ctl[l].Process.Signal(syscall.SIGCONT)
	select {
	case err := <-queued:
		if err == nil {
			t.Errorf("the write queued at the paused leader c%d succeeded after it resumed without its lease", l+1)
		} else if !client.Retryable(err) {
			t.Errorf("the write queued at the paused leader c%d: %v, want a 503", l+1, err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("the write queued at the paused leader c%d got no answer 15 s after it resumed", l+1)
	}
	select {
	case err := <-queuedFwd:
		if err == nil || !client.Retryable(err) {
			t.Errorf("the write sent through follower c%d while the leader c%d was paused: %v, want a 503", f+1, l+1, err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("the write sent through follower c%d got no answer 15 s after the leader resumed", f+1)
	}
	for _, seg := range []string{"queued-a", "queuedfwd-a"} {
		if _, err := admin.Get(ctx, "segment", seg); err == nil {
			t.Errorf("segment %s exists: a write was executed after its leader lost the lease", seg)
		}
	}

	// 4. Cut the leading controller off from etcd and from clients (nftables in its node; its
	// etcd member stays in the cluster): clients fail over, and it reports not-ready to whoever
	// can still ask (its own node).
	l = h.leader(alive...)
	if l < 0 {
		t.Fatal("no controller leads after the pause")
	}
	rules := filepath.Join(t.TempDir(), "partition.nft")
	if err := os.WriteFile(rules, []byte(partitionRules(nodeAddr(l))), 0o600); err != nil {
		t.Fatal(err)
	}
	h.nodes[l].MustRun(t, "nft", "-f", rules)
	// Measured from when the rules are in place (nft takes tens of ms): waitProgress counts
	// only writes that started after it, none that passed before the cut.
	cut := time.Now()
	report[fmt.Sprintf("controller c%d cut off (leader)", l+1)] = waitProgress(t, recs, cut, "leader partitioned")
	notReady := time.Duration(-1)
	for time.Since(cut) < 10*time.Second {
		code, reason, _ := h.healthz(h.nodes[l], l, 3*time.Second)
		if code == http.StatusServiceUnavailable {
			notReady = time.Since(cut)
			t.Logf("cut-off controller c%d /healthz after %v: 503 %s", l+1, notReady.Round(time.Millisecond), reason)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if notReady < 0 {
		t.Errorf("cut-off controller c%d still reports ready 10 s after the partition", l+1)
	}
	h.nodes[l].MustRun(t, "nft", "delete", "table", "inet", "gc_partition")
	waitProgress(t, recs, time.Now(), "after the partition healed")

	// 5. Cut one controller off from etcd only (tcp dport 2379 dropped in its node; clients
	// still reach its API): a write and a read through a client listing it first succeed
	// through another controller within 3 s, and through a client of it alone fail with a
	// retryable 503 within 3 s. Such a controller held every request for 60 s (its etcd calls
	// had no bound), heartbeats keeping its clients from failing over.
	h.etcdCutStep(t, alive, report)
	stopStream()

	// The agent saw the final state.
	final, err := admin.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for seen := int64(0); seen < final.Revision; {
		select {
		case seen = <-agentRev:
		case <-deadline:
			t.Fatalf("agent's long poll did not reach revision %d within 10 s (at %d)", final.Revision, seen)
		}
	}

	// Every successful apply present, none half-applied, no VLAN twice.
	objs, err := admin.List(ctx, "segments")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	vlans := map[int]string{}
	for _, o := range objs {
		have[o.Name] = true
		if prev, dup := vlans[o.VLAN]; dup {
			t.Errorf("VLAN %d given to %s and %s", o.VLAN, prev, o.Name)
		}
		vlans[o.VLAN] = o.Name
	}
	rs := recs()
	var ok, failed int
	for _, r := range rs {
		a, b := have[fmt.Sprintf("ha-%d-a", r.n)], have[fmt.Sprintf("ha-%d-b", r.n)]
		if a != b {
			t.Errorf("apply %d half-applied: a %v, b %v (returned ok %v %s)", r.n, a, b, r.ok, r.err)
		}
		if r.ok {
			ok++
			if !a {
				t.Errorf("apply %d returned success but its segments are missing", r.n)
			}
		} else {
			failed++
			t.Logf("apply %d failed after %v: %s", r.n, r.took.Round(time.Millisecond), r.err)
		}
	}
	t.Logf("%d applies succeeded, %d failed; %d segments, %d distinct VLANs", ok, failed, len(objs), len(vlans))
	keys := make([]string, 0, len(report))
	for k := range report {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		t.Logf("%s: next accepted write after %v", k, report[k].Round(time.Millisecond))
		limit := 3 * time.Second
		if strings.HasPrefix(k, "etcd leader") {
			// A write whose raft proposal went to the killed etcd leader is lost with it: the
			// member it was sent to answers "request timed out" only after etcd's request
			// timeout (5 s + 2 election timeouts), and the controller heartbeats meanwhile.
			limit = etcdRequestTimeout + time.Second
		}
		if report[k] > limit {
			t.Errorf("%s: clients failed over after %v, want within %v", k, report[k].Round(time.Millisecond), limit)
		}
	}
}

// etcdCutRules drop every connection of a node to an etcd client port, nothing else.
const etcdCutRules = `table inet gc_etcdcut {
	chain out {
		type filter hook output priority 0;
		tcp dport 2379 drop
	}
}
`

// etcdCutStep cuts a follower (the leader's cut is step 4) off from etcd only, and checks
// that clients do not wait for it (see TestHAControlPlane step 5).
func (h *haCluster) etcdCutStep(t *testing.T, alive []int, report map[string]time.Duration) {
	l := h.leader(alive...)
	if l < 0 {
		t.Fatal("no controller leads after the partition healed")
	}
	f := slices.DeleteFunc(slices.Clone(alive), func(i int) bool { return i == l })[0]
	rules := filepath.Join(t.TempDir(), "etcdcut.nft")
	if err := os.WriteFile(rules, []byte(etcdCutRules), 0o600); err != nil {
		t.Fatal(err)
	}
	h.nodes[f].MustRun(t, "nft", "-f", rules)
	defer h.nodes[f].MustRun(t, "nft", "delete", "table", "inet", "gc_etcdcut")
	ctx := context.Background()
	first := append([]int{f}, slices.DeleteFunc(slices.Clone(alive), func(i int) bool { return i == f })...)
	doc := strings.ReplaceAll(streamDoc(2002), "ha-2002", "etcdcut")
	for _, step := range []struct {
		what string
		do   func(c *client.Client) error
	}{
		{"apply", func(c *client.Client) error {
			_, err := c.Apply(ctx, "etcdcut.yaml", []byte(doc), client.ApplyOptions{})
			return err
		}},
		{"get", func(c *client.Client) error { _, err := c.Get(ctx, "segment", "lands-web"); return err }},
	} {
		// A client listing the cut-off controller first: served by another one within 3 s.
		t0 := time.Now()
		err := step.do(h.client(h.cl, first...))
		took := time.Since(t0)
		report[fmt.Sprintf("controller c%d cut off from etcd only (follower): %s through it first", f+1, step.what)] = took
		if err != nil {
			t.Errorf("%s through a client listing c%d (cut off from etcd) first: %v after %v, want success through another controller", step.what, f+1, err, took.Round(time.Millisecond))
		}
		// A client of that controller alone (no failover, no idle cut): a 503 within 3 s.
		c := h.client(h.cl, f)
		c.AttemptIdle, c.RetryFor = 20*time.Second, time.Millisecond
		t0 = time.Now()
		err = step.do(c)
		took = time.Since(t0)
		t.Logf("%s through c%d alone, cut off from etcd: after %v: %v", step.what, f+1, took.Round(time.Millisecond), err)
		if err == nil || !client.Retryable(err) || took > 3*time.Second {
			t.Errorf("%s through c%d alone (cut off from etcd): %v after %v, want a retryable 503 within 3 s", step.what, f+1, err, took.Round(time.Millisecond))
		}
	}
}
