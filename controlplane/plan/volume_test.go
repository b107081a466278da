package plan

import (
	"slices"
	"strings"
	"testing"

	"github.com/govcloud/govcloud/controlplane/config"
	"github.com/govcloud/govcloud/controlplane/reconcile"
)

// Issue 23: a volume belongs to the host whose VM first used it (status.host) until the
// Volume is deleted. Detaching it and deleting its VM keep it on that host (in the host's
// desired volumes, so its compute agent keeps the file); a new VM using it is placed there; a
// VM on (or pinned to) another host is refused, naming the volume and both hosts.
func TestVolumeStaysOnItsHost(t *testing.T) {
	doc := func(kind, name, spec string) string {
		return "---\napiVersion: govcloud/v1\nkind: " + kind + "\nmetadata: {name: " + name + "}\nspec: " + spec + "\n"
	}
	base := doc("Department", "a", "{}") + doc("Segment", "s1", "{department: a, ipv4: 198.18.1.0/24}") +
		doc("Host", "h1", "{uplink: eth0, address: 198.18.0.11}") + doc("Host", "h2", "{uplink: eth0, address: 198.18.0.12}") +
		doc("Volume", "data", "{department: a, sizeGiB: 1}")
	vm := func(name, extra string) string {
		return doc("VM", name, "{department: a, vcpus: 1, memoryMiB: 64, networks: [{segment: s1}]"+extra+"}")
	}
	plan := func(cur *config.State, y string, del ...config.Key) (*config.State, error) {
		t.Helper()
		res, err := applyStep(t, cur, y, del...)
		if err != nil {
			return nil, err
		}
		return res.Next, nil
	}
	must := func(st *config.State, err error) *config.State {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	volsOf := func(st *config.State, host string) []string {
		var out []string
		for _, v := range reconcile.ForHost(st, host, 1).Volumes {
			out = append(out, v.Name)
		}
		return out
	}
	volHost := func(st *config.State) string { return st.Get(config.KindVolume, "data").Status.Host }

	// Not used yet: on no host.
	cur := must(plan(config.NewState(), base))
	if volHost(cur) != "" || len(volsOf(cur, "h1")) != 0 || len(volsOf(cur, "h2")) != 0 {
		t.Fatalf("unused volume on host %q, h1 %v, h2 %v: want nowhere", volHost(cur), volsOf(cur, "h1"), volsOf(cur, "h2"))
	}
	// Its first VM, pinned to h2, takes it there.
	cur = must(plan(cur, base+vm("v1", ", volumes: [data], host: h2")))
	if volHost(cur) != "h2" || !slices.Equal(volsOf(cur, "h2"), []string{"data"}) || len(volsOf(cur, "h1")) != 0 {
		t.Fatalf("volume on %q, h1 %v, h2 %v: want h2 only", volHost(cur), volsOf(cur, "h1"), volsOf(cur, "h2"))
	}
	// Detached: still h2's.
	cur = must(plan(cur, base+vm("v1", ", host: h2")))
	if volHost(cur) != "h2" || !slices.Equal(volsOf(cur, "h2"), []string{"data"}) {
		t.Fatalf("detached volume on %q, h2 %v: want kept on h2", volHost(cur), volsOf(cur, "h2"))
	}
	// Its VM deleted: still h2's.
	cur = must(plan(cur, base, config.Key{Kind: config.KindVM, Name: "v1"}))
	if cur.Get(config.KindVM, "v1") != nil || volHost(cur) != "h2" || !slices.Equal(volsOf(cur, "h2"), []string{"data"}) {
		t.Fatalf("after the VM's delete: volume on %q, h2 %v: want kept on h2", volHost(cur), volsOf(cur, "h2"))
	}
	// A VM pinned to h1 may not take it: refused with the volume and both hosts.
	_, err := plan(cur, base+vm("v2", ", volumes: [data], host: h1"))
	for _, w := range []string{`VM "v2"`, `spec.host "h1"`, `volume "data" is on host "h2"`, `VM "v2" on host "h1"`, "restoreFrom"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("VM pinned to h1 with the h2 volume: error %v, want it to name %q", err, w)
		}
	}
	// A VM placed on h1 already may not attach it either.
	cur = must(plan(cur, base+vm("v3", ", host: h1")))
	_, err = plan(cur, base+vm("v3", ", volumes: [data]"))
	for _, w := range []string{`VM "v3"`, `spec.volumes "data"`, `volume "data" is on host "h2"`, `on host "h1"`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("VM on h1 attaching the h2 volume: error %v, want it to name %q", err, w)
		}
	}
	// A new VM free to go anywhere is placed where its volume is (h2), not on the emptier h1.
	cur = must(plan(cur, base+vm("v3", ", host: h1")+vm("v4", ", volumes: [data]")))
	if h := cur.Get(config.KindVM, "v4").Status.Host; h != "h2" {
		t.Fatalf("new VM with the volume placed on %q, want h2 (the volume's host)", h)
	}
	// A selector excluding the volume's host: pending, saying why.
	cur = must(plan(cur, base+vm("v3", ", host: h1")+vm("v4", ", volumes: [data], hostSelector: {rack: r9}")))
	if o := cur.Get(config.KindVM, "v4"); o.Status.Host != "" || !strings.Contains(o.Status.Reason, `volume "data" is on host "h2"`) {
		t.Fatalf("v4 with a selector excluding h2: host %q reason %q, want pending naming the volume's host", o.Status.Host, o.Status.Reason)
	}
}
