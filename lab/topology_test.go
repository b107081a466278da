package lab

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// The lab as data, without root: namespaces, links, addresses, FRR neighbours and scrape
// targets for 1, 2 (the default, as before --hosts) and 8 hosts.

func TestTopologyHostCounts(t *testing.T) {
	for _, n := range []int{0, 9, -1, 100} {
		err := CheckHosts(n)
		if err == nil || !strings.Contains(err.Error(), "--hosts ") || !strings.Contains(err.Error(), "1 to 8") {
			t.Errorf("CheckHosts(%d) = %v, want an error naming --hosts, the value and 1 to 8", n, err)
		}
	}
	if _, err := New(Options{Hosts: 9, Dir: t.TempDir(), Bin: "govcloud"}); err == nil || !strings.Contains(err.Error(), "--hosts 9") {
		t.Errorf("New with 9 hosts: %v, want refused naming --hosts 9", err)
	}
	l, err := New(Options{Dir: t.TempDir(), Bin: "govcloud"})
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Hosts(); !slices.Equal(got, []string{"gc-host1", "gc-host2"}) {
		t.Errorf("default hosts %v, want gc-host1, gc-host2", got)
	}
	for _, n := range []int{1, 2, 8} {
		if err := CheckHosts(n); err != nil {
			t.Errorf("CheckHosts(%d): %v", n, err)
		}
	}
}

func TestTopologySteps(t *testing.T) {
	for _, tc := range []struct {
		n     int
		hosts []string
		addrs []string
	}{
		{1, []string{"gc-host1"}, []string{"198.18.0.11"}},
		{2, []string{"gc-host1", "gc-host2"}, []string{"198.18.0.11", "198.18.0.12"}},
		{8, []string{"gc-host1", "gc-host2", "gc-host3", "gc-host4", "gc-host5", "gc-host6", "gc-host7", "gc-host8"},
			[]string{"198.18.0.11", "198.18.0.12", "198.18.0.13", "198.18.0.14", "198.18.0.15", "198.18.0.16", "198.18.0.17", "198.18.0.18"}},
	} {
		hosts := HostNames(tc.n)
		if !slices.Equal(hosts, tc.hosts) {
			t.Fatalf("%d hosts: names %v, want %v", tc.n, hosts, tc.hosts)
		}
		var joined []string
		for _, s := range topologySteps(hosts) {
			joined = append(joined, strings.Join(s, " "))
		}
		var nss, ports, addrs []string
		for _, s := range joined {
			if ns, ok := strings.CutPrefix(s, "ip netns add "); ok {
				nss = append(nss, ns)
			}
			if rest, ok := strings.CutPrefix(s, "ip link add gc-tor-h"); ok {
				ports = append(ports, "gc-tor-h"+strings.Fields(rest)[0])
			}
			if f := strings.Fields(s); len(f) == 8 && f[1] == "-n" && strings.HasPrefix(f[2], "gc-host") && f[3] == "addr" {
				addrs = append(addrs, f[2]+"="+f[5])
			}
		}
		wantNS := append([]string{"gc-tor", "gc-client"}, tc.hosts...)
		if !slices.Equal(nss, wantNS) {
			t.Errorf("%d hosts: namespaces %v, want %v", tc.n, nss, wantNS)
		}
		var wantPorts, wantAddrs []string
		for i, h := range tc.hosts {
			wantPorts = append(wantPorts, torPort(i))
			wantAddrs = append(wantAddrs, h+"="+tc.addrs[i]+"/24")
			// Each host: its port on the ToR's bridge, its fabric address, default via the ToR.
			for _, want := range []string{
				"ip link add " + torPort(i) + " netns gc-tor type veth peer name eth0 netns " + h,
				"ip -n gc-tor link set " + torPort(i) + " master fabric",
				"ip -n " + h + " route add default via 198.18.0.1",
				"ip -n " + h + " addr add " + hostAddr6(i) + "/64 dev eth0 nodad",
				"ip -n " + h + " -6 route add default via 2001:db8:18::1",
			} {
				if !slices.Contains(joined, want) {
					t.Errorf("%d hosts: no step %q", tc.n, want)
				}
			}
		}
		if !slices.Equal(ports, wantPorts) || !slices.Equal(addrs, wantAddrs) {
			t.Errorf("%d hosts: ports %v addresses %v, want %v %v", tc.n, ports, addrs, wantPorts, wantAddrs)
		}
		// 19 steps for the ToR and the client, 11 per host.
		if len(joined) != 19+11*tc.n {
			t.Errorf("%d hosts: %d steps, want %d", tc.n, len(joined), 19+11*tc.n)
		}
	}
}

// TestTopologyFRR: one eBGP neighbour per host, its own AS; the default lab's file is as it
// was before --hosts.
func TestTopologyFRR(t *testing.T) {
	const two = "frr defaults datacenter\nhostname gc-tor\nlog file /run/x/frr.log\n!\n" +
		"router bgp 65000\n bgp router-id 198.18.0.1\n no bgp ebgp-requires-policy\n bgp bestpath as-path multipath-relax\n bgp graceful-restart\n" +
		" neighbor 198.18.0.11 remote-as 65001\n neighbor 198.18.0.12 remote-as 65002\n" +
		" neighbor 2001:db8:18::11 remote-as 65001\n neighbor 2001:db8:18::12 remote-as 65002\n" +
		" address-family ipv4 unicast\n  maximum-paths 8\n  no neighbor 2001:db8:18::11 activate\n  no neighbor 2001:db8:18::12 activate\n exit-address-family\n" +
		" address-family ipv6 unicast\n  maximum-paths 8\n  neighbor 2001:db8:18::11 activate\n  neighbor 2001:db8:18::12 activate\n exit-address-family\n!\n"
	if got := frrConfig("/run/x", 2); got != two {
		t.Errorf("FRR config of the default lab:\n%s\nwant:\n%s", got, two)
	}
	neighbours := func(conf string) []string {
		var out []string
		for _, line := range strings.Split(conf, "\n") {
			if strings.HasPrefix(line, " neighbor ") {
				out = append(out, strings.TrimSpace(line))
			}
		}
		return out
	}
	if got := neighbours(frrConfig("/run/x", 1)); !slices.Equal(got, []string{"neighbor 198.18.0.11 remote-as 65001", "neighbor 2001:db8:18::11 remote-as 65001"}) {
		t.Errorf("1 host: neighbours %v", got)
	}
	got := neighbours(frrConfig("/run/x", 8))
	if len(got) != 16 || got[7] != "neighbor 198.18.0.18 remote-as 65008" || got[2] != "neighbor 198.18.0.13 remote-as 65003" || got[15] != "neighbor 2001:db8:18::18 remote-as 65008" {
		t.Errorf("8 hosts: neighbours %v", got)
	}
}

func TestTopologyPrometheus(t *testing.T) {
	const two = "global: {scrape_interval: 1s, evaluation_interval: 5s}\nrule_files: [\"/r.yml\"]\n" +
		"scrape_configs:\n  - job_name: govcloud-agent\n    honor_labels: true\n    static_configs: [{targets: [\"198.18.0.11:9480\", \"198.18.0.12:9480\"]}]\n"
	if got := promConfig("/r.yml", 2, false, 0); got != two {
		t.Errorf("prometheus.yml of the default lab:\n%s\nwant:\n%s", got, two)
	}
	for _, tc := range []struct {
		every time.Duration
		want  string
	}{{0, "1s"}, {time.Second, "1s"}, {15 * time.Second, "15s"}, {1500 * time.Millisecond, "1500ms"}, {2 * time.Minute, "120s"}} {
		if got := promConfig("", 1, false, tc.every); !strings.HasPrefix(got, "global: {scrape_interval: "+tc.want+",") {
			t.Errorf("every %v: %q, want scrape_interval %s", tc.every, strings.SplitN(got, "\n", 2)[0], tc.want)
		}
	}
	var cfg struct {
		ScrapeConfigs []struct {
			Job     string `yaml:"job_name"`
			Statics []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal([]byte(promConfig("", 8, true, 0)), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.ScrapeConfigs) != 2 {
		t.Fatalf("8 hosts with VMs: %d jobs, want agents and compute", len(cfg.ScrapeConfigs))
	}
	for _, j := range cfg.ScrapeConfigs {
		ts := j.Statics[0].Targets
		if len(ts) != 8 || !strings.HasPrefix(ts[0], "198.18.0.11:") || !strings.HasPrefix(ts[7], "198.18.0.18:") {
			t.Errorf("job %s: targets %v, want one per host 198.18.0.11..18", j.Job, ts)
		}
	}
}

// TestTopologyConfigFit: the example configuration is applied as it is with 2 hosts or more
// (the lab declares hosts 3..N as the example declares 1 and 2) and folded onto gc-host1 with 1.
func TestTopologyConfigFit(t *testing.T) {
	const file = "../deploy/examples/lab/lab.yaml"
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{2, 8} {
		out, declared, notes, err := fitConfig(file, data, HostNames(n))
		if err != nil || string(out) != string(data) || len(notes) > 0 {
			t.Errorf("%d hosts: changed the example (%v, notes %v)", n, err, notes)
		}
		if !slices.Equal(declared, []string{"gc-host1", "gc-host2"}) {
			t.Errorf("%d hosts: declared %v, want gc-host1, gc-host2", n, declared)
		}
	}
	out, declared, notes, err := fitConfig(file, data, HostNames(1))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(declared, []string{"gc-host1"}) || len(notes) != 3 {
		t.Errorf("1 host: declared %v, notes %q; want gc-host1 and 3 notes (gc-host2 left out, 2 VMs moved)", declared, notes)
	}
	docs := docsOf(t, out)
	for _, d := range docs {
		if d["kind"] == "Host" && name(d) != "gc-host1" {
			t.Errorf("1 host: Host %s kept", name(d))
		}
		if d["kind"] == "VM" && d["spec"].(map[string]any)["host"] != "gc-host1" {
			t.Errorf("1 host: VM %s on %v", name(d), d["spec"].(map[string]any)["host"])
		}
	}
	if len(docs) != len(docsOf(t, data))-1 {
		t.Errorf("1 host: %d documents, want the example's less one", len(docs))
	}

	// The lab's own Host documents say what the example's say about gc-host1 and gc-host2.
	l, err := New(Options{Hosts: 8, Dir: t.TempDir(), Bin: "govcloud"})
	if err != nil {
		t.Fatal(err)
	}
	ours := map[string]map[string]any{}
	for _, d := range docsOf(t, []byte(l.hostsYAML(l.Hosts()))) {
		ours[name(d)] = d
	}
	if len(ours) != 8 || ours["gc-host8"]["spec"].(map[string]any)["address"] != "198.18.0.18" || ours["gc-host8"]["spec"].(map[string]any)["asn"] != 65008 {
		t.Errorf("the lab's Host documents: %v", ours)
	}
	for _, d := range docsOf(t, data) {
		if d["kind"] != "Host" {
			continue
		}
		if got, want := yamlString(t, ours[name(d)]), yamlString(t, d); got != want {
			t.Errorf("Host %s: the lab's\n%s\nthe example's\n%s", name(d), got, want)
		}
	}
}

// TestTopologyFollowUp: verify and down read the host count up recorded.
func TestTopologyFollowUp(t *testing.T) {
	dir := t.TempDir()
	l, err := New(Options{Dir: dir, Bin: "govcloud"})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.followUp(); err != nil || len(l.Hosts()) != 2 {
		t.Fatalf("no lab: %v, hosts %v", err, l.Hosts())
	}
	if err := os.WriteFile(filepath.Join(dir, hostsFile), []byte("8\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := l.followUp(); err != nil || len(l.Hosts()) != 8 || l.hostIndex("gc-host8") != 7 {
		t.Fatalf("lab of 8: %v, hosts %v", err, l.Hosts())
	}
	if err := os.WriteFile(filepath.Join(dir, hostsFile), []byte("12\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := l.followUp(); err == nil || !strings.Contains(err.Error(), "12") {
		t.Fatalf("a recorded 12: %v, want refused", err)
	}
}

func docsOf(t *testing.T, data []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, part := range strings.Split(string(data), "\n---\n") {
		var d map[string]any
		if err := yaml.Unmarshal([]byte(part), &d); err != nil {
			t.Fatal(err)
		}
		if d != nil {
			out = append(out, d)
		}
	}
	return out
}

func name(d map[string]any) string { return d["metadata"].(map[string]any)["name"].(string) }

func yamlString(t *testing.T, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
