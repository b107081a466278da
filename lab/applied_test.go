package lab

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/agent"
	"github.com/govcloud/govcloud/controlplane/client"
)

const appliedYAML = `apiVersion: govcloud/v1
kind: Department
metadata: {name: roads}
spec: {displayName: Roads, costCentre: CC-3180, quotas: {vcpus: 4, memoryGiB: 2, storageGiB: 10, bandwidthMbps: 100}}
---
apiVersion: govcloud/v1
kind: Segment
metadata: {name: roads-web}
spec: {department: roads, vlan: 180, ipv4: 198.18.80.0/24, gateway: 198.18.80.1}
---
apiVersion: govcloud/v1
kind: VM
metadata: {name: roads-web-1}
spec: {department: roads, vcpus: 1, memoryMiB: 64, image: tiny, networks: [{segment: roads-web}], host: gc-host1}
---
apiVersion: govcloud/v1
kind: VM
metadata: {name: roads-web-2}
spec: {department: roads, vcpus: 1, memoryMiB: 64, image: tiny, networks: [{segment: roads-web}], host: gc-host2}
`

// appliedAfterUp (issue 23): a department, a segment and two VMs on different hosts applied
// after 'lab up' become real through the hosts' compute agents: within 10 s both guests exist
// and answer each other's HTTP across the hosts, and each host reports its guest ready. Deleted,
// nothing of them is left: namespaces, guest ports, the compute agents' records.
func appliedAfterUp(t *testing.T, bin, dir string) {
	t.Helper()
	ctx := context.Background()
	l, admin := openLab(t, bin, dir)
	c := l.client(admin)
	vms := map[string]string{"roads-web-1": "gc-host1", "roads-web-2": "gc-host2"}
	start := time.Now()
	if _, err := c.Apply(ctx, "roads.yaml", []byte(appliedYAML), client.ApplyOptions{}); err != nil {
		t.Fatalf("apply roads.yaml: %v", err)
	}
	addr := map[string]string{}
	deadline := start.Add(10 * time.Second)
	for {
		err := func() error {
			for vm := range vms {
				if !nsExists("gc-vm-" + vm) {
					return fmt.Errorf("guest %s not made", vm)
				}
				if addr[vm] == "" {
					a, _, err := guestAddr4("gc-vm-" + vm)
					if err != nil {
						return err
					}
					addr[vm] = a
				}
			}
			for from, to := range map[string]string{"roads-web-1": "roads-web-2", "roads-web-2": "roads-web-1"} {
				body, err := l.guestHTTP(from, addr[to])
				if err != nil {
					return fmt.Errorf("HTTP from %s to %s (%s): %v", from, to, addr[to], err)
				}
				if strings.TrimSpace(body) != to {
					return fmt.Errorf("HTTP from %s to %s (%s): %q, want %q", from, to, addr[to], body, to)
				}
			}
			return nil
		}()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("applied after up: not answering across hosts within 10s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("applied after up: roads-web-1 (gc-host1) and roads-web-2 (gc-host2) answer each other %.1fs after the apply", time.Since(start).Seconds())

	for _, o := range [][2]string{{"vms", "roads-web-1"}, {"vms", "roads-web-2"}, {"segments", "roads-web"}, {"departments", "roads"}} {
		if _, err := c.Delete(ctx, o[0], o[1], false); err != nil {
			t.Fatalf("delete %s %s: %v", o[0], o[1], err)
		}
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		var left []string
		for vm, h := range vms {
			if nsExists("gc-vm-" + vm) {
				left = append(left, "namespace gc-vm-"+vm)
			}
			port := agent.GuestPort(vm, "roads-web")
			if exec.Command("ip", "-n", h, "link", "show", port).Run() == nil {
				left = append(left, "port "+port+" in "+h)
			}
			if m, _ := filepath.Glob(filepath.Join(dir, "compute", "*", "netns", vm+".*")); len(m) > 0 {
				left = append(left, "records "+strings.Join(m, ", "))
			}
			if exec.Command("ip", "-n", h, "link", "show", "gcbr180").Run() == nil {
				left = append(left, "bridge gcbr180 in "+h)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after delete, left after 30s: %s", strings.Join(left, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// guestAddr4 is the IPv4 address on eth0 of namespace ns.
func guestAddr4(ns string) (string, *net.IPNet, error) {
	out, err := nsOut(ns, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
	if err != nil {
		return "", nil, err
	}
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "inet" {
			ip, n, err := net.ParseCIDR(f[i+1])
			if err != nil {
				return "", nil, err
			}
			return ip.String(), n, nil
		}
	}
	return "", nil, fmt.Errorf("%s: no IPv4 address on eth0: %q", ns, out)
}
