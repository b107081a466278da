package reconcile

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/govcloud/govcloud/controlplane/config"
	"github.com/govcloud/govcloud/controlplane/config/configtest"
	"github.com/govcloud/govcloud/controlplane/desired"
)

const guardsYAML = configtest.LandsHealth + `---
apiVersion: govcloud/v1
kind: Segment
metadata: {name: lands-app}
spec: {department: lands, vlan: 121, ipv4: 198.18.21.0/24, gateway: 198.18.21.1, ipv6: "2001:db8:21::/64"}
---
apiVersion: govcloud/v1
kind: Host
metadata: {name: h1}
spec: {uplink: eth0, address: 198.18.0.11}
---
apiVersion: govcloud/v1
kind: Host
metadata: {name: h2}
spec: {uplink: eth0, address: 198.18.0.12}
---
apiVersion: govcloud/v1
kind: VM
metadata: {name: db-1, labels: {tier: db}}
spec: {department: lands, vcpus: 1, memoryMiB: 64, networks: [{segment: lands-web}], host: h1}
---
apiVersion: govcloud/v1
kind: VM
metadata: {name: app-1, labels: {tier: app}}
spec: {department: lands, vcpus: 1, memoryMiB: 64, networks: [{segment: lands-app}], host: h2}
---
apiVersion: govcloud/v1
kind: VM
metadata: {name: web-1}
spec: {department: lands, vcpus: 1, memoryMiB: 64, networks: [{segment: lands-web}], host: h1}
---
apiVersion: govcloud/v1
kind: VM
metadata: {name: hdb, labels: {tier: db}}
spec: {department: health, vcpus: 1, memoryMiB: 64, networks: [{segment: health-web}], host: h1}
---
apiVersion: govcloud/v1
kind: SecurityPolicy
metadata: {name: db-from-app}
spec:
  department: lands
  selector: {tier: db}
  allow:
    - from: [{vmLabels: {tier: app}}, {cidr: 198.18.20.0/28}]
      protocol: tcp
      ports: [{port: 5432}, {port: 8000, endPort: 8080}]
    - from: [{segment: lands-app}]
      protocol: icmp
    - from: [{vmLabels: {tier: nothing}}]
    - protocol: udp
`

// TestGuards: the controller resolves a policy's labels and segments to addresses for the
// hosts of the VMs it selects, only within the department.
func TestGuards(t *testing.T) {
	st := validState(t, guardsYAML)
	// Placement and addresses as the allocator would set them.
	place := func(vm, host, seg, a4, a6 string) {
		o := st.Get(config.KindVM, vm)
		o.Status.Host = host
		o.Status.Networks = []config.VMAddress{{Segment: seg, IPv4: a4, IPv6: a6, MAC: "02:00:00:00:00:01"}}
	}
	place("db-1", "h1", "lands-web", "198.18.20.30", "")
	place("app-1", "h2", "lands-app", "198.18.21.10", "2001:db8:21::10")
	place("web-1", "h1", "lands-web", "198.18.20.31", "")
	place("hdb", "h1", "health-web", "198.18.30.30", "")

	h1 := ForHost(st, "h1", 1)
	if len(h1.Guards) != 1 || h1.Guards[0].VM != "db-1" {
		t.Fatalf("h1 guards %+v, want db-1's alone (web-1 is not selected, hdb is another department's)", h1.Guards)
	}
	p := netip.MustParsePrefix
	want := []desired.GuardRule{
		{Policy: "db-from-app", Sources: []netip.Prefix{p("198.18.21.10/32"), p("2001:db8:21::10/128"), p("198.18.20.0/28")}, Protocol: "tcp",
			Ports: []desired.PortRange{{First: 5432, Last: 5432}, {First: 8000, Last: 8080}}},
		{Policy: "db-from-app", Sources: []netip.Prefix{p("198.18.21.0/24"), p("2001:db8:21::/64")}, Protocol: "icmp"},
		{Policy: "db-from-app", Sources: []netip.Prefix{}, Protocol: "any"},
		{Policy: "db-from-app", Sources: []netip.Prefix{p("0.0.0.0/0"), p("::/0")}, Protocol: "udp"},
	}
	if got, w := fmt.Sprintf("%+v", h1.Guards[0].Rules), fmt.Sprintf("%+v", want); got != w {
		t.Errorf("rules\n got %s\nwant %s", got, w)
	}
	if h2 := ForHost(st, "h2", 1); len(h2.Guards) != 0 {
		t.Errorf("h2 guards %+v: no selected VM there", h2.Guards)
	}
	// A label change moves the guard.
	st.Get(config.KindVM, "web-1").Metadata.Labels = map[string]string{"tier": "db"}
	if h1 := ForHost(st, "h1", 2); len(h1.Guards) != 2 {
		t.Errorf("after labelling web-1 db: guards %+v", h1.Guards)
	}
}
