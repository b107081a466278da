package compute_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/govcloud/govcloud/agent"
	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/compute/netns"
	"github.com/govcloud/govcloud/controlplane/apitest"
	"github.com/govcloud/govcloud/dataplane/netdev"
	"github.com/govcloud/govcloud/dataplane/netnstest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	apitest.Shutdown()
	os.Exit(code)
}

var naming = compute.Naming{Bridge: func(v int) string { return netdev.BridgeName(uint16(v)) }, Port: agent.GuestPort}

const quotaConfig = `apiVersion: govcloud/v1
kind: Department
metadata: {name: cq}
spec: {displayName: Compute quota, quotas: {vcpus: 2, memoryGiB: 1, storageGiB: 5}}
---
apiVersion: govcloud/v1
kind: Segment
metadata: {name: cq-web}
spec: {department: cq, vlan: 3903, ipv4: 198.18.203.0/24, gateway: 198.18.203.1}
---
apiVersion: govcloud/v1
kind: Host
metadata: {name: cqhost}
spec: {uplink: eth0, address: 198.18.0.31, asn: 65001, bgpPeers: [{address: 198.18.0.1, asn: 65000}]}
---
apiVersion: govcloud/v1
kind: VM
metadata: {name: cq-vm1}
spec: {department: cq, vcpus: 1, memoryMiB: 256, networks: [{segment: cq-web}]}
`

// The controller places a VM on the host; the compute agent makes it (a namespace guest) with
// the controller's MAC and address on the segment bridge. A VM beyond the department's quota is
// refused by the controller with an error naming it, and the agent then makes nothing new.
// Deleting the VM through the controller removes the guest.
func TestControllerQuotaAndLifecycle(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "busybox", "ethtool")
	ctx := context.Background()
	env := apitest.New(t)
	c := env.Client("admin")
	if _, err := c.Apply(ctx, "cq.yaml", []byte(quotaConfig), clientApply()); err != nil {
		t.Fatalf("apply: %v", err)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: netdev.BridgeName(3903)}}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatalf("bridge: %v", err)
	}
	t.Cleanup(func() { netlink.LinkDel(br) })
	dir := t.TempDir()
	p, err := netns.New(netns.Config{StateDir: dir, HTTPCommand: netns.BusyboxHTTP(dir), Prefix: "gct-cq-"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Delete(ctx, "cq-vm1"); p.Delete(ctx, "cq-vm2") })
	a := &compute.Agent{Host: "cqhost", Source: c, Provider: p, Naming: naming, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}

	pass := func() compute.Report {
		t.Helper()
		st, err := c.Desired(ctx, "cqhost", 0, time.Second)
		if err != nil || st == nil {
			t.Fatalf("desired: %v %v", st, err)
		}
		r := a.Pass(ctx, st)
		if r.Error != "" {
			t.Fatalf("pass: %s", r.Error)
		}
		return r
	}
	r := pass()
	if len(r.VMs) != 1 || r.VMs[0].Name != "cq-vm1" || r.VMs[0].State != compute.Running {
		t.Fatalf("report %+v: want cq-vm1 running", r.VMs)
	}
	obj, err := c.GetRaw(ctx, "VM", "cq-vm1")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := c.Desired(ctx, "cqhost", 0, time.Second)
	ifc := st.VMs[0].Interfaces[0]
	out, err := exec.Command("ip", "-n", "gct-cq-cq-vm1", "addr", "show", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), ifc.MAC) || !strings.Contains(string(out), ifc.Prefix4.String()) {
		t.Fatalf("guest eth0: %s (%v); want the controller's MAC %s and address %s (object %s)", out, err, ifc.MAC, ifc.Prefix4, obj)
	}
	if l, err := netlink.LinkByName(agent.GuestPort("cq-vm1", "cq-web")); err != nil || l.Attrs().MasterIndex == 0 {
		t.Fatalf("host port %s: %v; want it on the segment bridge", agent.GuestPort("cq-vm1", "cq-web"), err)
	}

	// Over quota: 1 + 2 vCPUs > 2.
	before := env.Fingerprint(t)
	_, err = c.Apply(ctx, "cq2.yaml", []byte(apitest.Doc("VM", "cq-vm2", "{department: cq, vcpus: 2, memoryMiB: 256, networks: [{segment: cq-web}]}")), clientApply())
	if err == nil || !strings.Contains(err.Error(), "quota exceeded") || !strings.Contains(err.Error(), `VM "cq-vm2"`) || !strings.Contains(err.Error(), "quota is 2") {
		t.Fatalf("over-quota apply: %v; want a quota error naming VM cq-vm2 and the quota", err)
	}
	if after := env.Fingerprint(t); after != before {
		t.Fatalf("refused apply changed the controller's state:\n%s\n---\n%s", before, after)
	}
	r = pass()
	if len(r.VMs) != 1 {
		t.Fatalf("after the refused apply the agent reports %+v; want only cq-vm1", r.VMs)
	}
	if _, err := os.Stat("/run/netns/gct-cq-cq-vm2"); err == nil {
		t.Fatal("namespace of the refused VM exists")
	}
	if _, err := netlink.LinkByName(agent.GuestPort("cq-vm2", "cq-web")); err == nil {
		t.Fatal("port of the refused VM exists")
	}

	// Delete through the controller.
	if _, err := c.Delete(ctx, "VM", "cq-vm1", false); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if r = pass(); len(r.VMs) != 0 {
		t.Fatalf("after delete: %+v", r.VMs)
	}
	if l, _ := p.List(ctx); len(l) != 0 {
		t.Fatalf("provider still lists %+v", l)
	}
	if _, err := netlink.LinkByName(agent.GuestPort("cq-vm1", "cq-web")); err == nil {
		t.Fatal("port of the deleted VM exists")
	}
}
