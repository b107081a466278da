package plan

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/govcloud/govcloud/controlplane/alloc"
	"github.com/govcloud/govcloud/controlplane/config"
)

type noRaw struct{}

func (noRaw) Raw(config.Key) []byte { return nil }

// commit applies a file to cur as the API would: plan, then keep the result with no sources
// (what the store gives back).
func commit(t *testing.T, cur *config.State, file string, y []byte) *config.State {
	t.Helper()
	objs, err := config.Parse(file, y)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Compute(cur, noRaw{}, Request{Objects: objs}, alloc.DefaultConfig())
	if err != nil {
		t.Fatalf("apply %s: %v", file, err)
	}
	for _, o := range res.Next.Objects {
		o.Source = nil
	}
	return res.Next
}

// Issue 22: the lab's own file re-planned after a department was added through an edit of its
// pool used to blame Service "finance-www", an object not in the file, with no file:line. The
// error names the pool document of the file that strands it.
func TestReplanBlamesThePoolThatStrandsAService(t *testing.T) {
	labFile := "../../deploy/examples/lab/lab.yaml"
	lab, err := os.ReadFile(labFile)
	if err != nil {
		t.Fatal(err)
	}
	// An older lab file whose pool names its departments (the lab's now serves "*").
	old := strings.Replace(string(lab), `departments: ["*"]`, `departments: [lands, health]`, 1)
	if old == string(lab) {
		t.Fatalf("%s: no pool with departments: [\"*\"]", labFile)
	}
	cur := commit(t, config.NewState(), "lab.yaml", []byte(old))
	finance := `apiVersion: govcloud/v1
kind: Department
metadata: {name: finance}
spec: {displayName: Department of Finance}
---
apiVersion: govcloud/v1
kind: AddressPool
metadata: {name: public-vips}
spec: {cidrs: [198.19.255.0/27], departments: [lands, health, finance], scope: public}
---
apiVersion: govcloud/v1
kind: Service
metadata: {name: finance-www}
spec: {department: finance, ports: [{port: 80}]}
`
	cur = commit(t, cur, "finance.yaml", []byte(finance))
	objs, err := config.Parse("lab.yaml", []byte(old))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Compute(cur, noRaw{}, Request{Objects: objs}, alloc.DefaultConfig())
	if err == nil {
		t.Fatal("re-plan stranding finance-www accepted")
	}
	line := 0
	for i, l := range strings.Split(old, "\n") {
		if strings.Contains(l, "departments: [lands, health]") {
			line = i + 1
		}
	}
	want := `lab.yaml:` + strconv.Itoa(line) + `: document 3: AddressPool "public-vips": spec.departments: strands Service "finance-www" (stored, not in this input): spec.vip: no free IPv4 VIP for department "finance": no address pool serves this department`
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error\n%v\nwant it to contain\n%s", err, want)
	}
	// With the lab's file as it is (a pool for every department) the same re-plan passes.
	objs, err = config.Parse("lab.yaml", lab)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Compute(cur, noRaw{}, Request{Objects: objs}, alloc.DefaultConfig()); err != nil {
		t.Fatalf("re-plan of the lab's file after adding a department: %v", err)
	}
}

// Issue 23: a VM no host has room for is accepted pending, the apply says why, and it is
// placed by the apply that frees room (here the delete of another VM); a host whose capacity
// shrinks under its VMs keeps them and each says so.
func TestPendingVMSaysWhyAndIsPlacedWhenRoomFrees(t *testing.T) {
	doc := func(kind, name, spec string) string {
		return "---\napiVersion: govcloud/v1\nkind: " + kind + "\nmetadata: {name: " + name + "}\nspec: " + spec + "\n"
	}
	base := doc("Department", "a", "{}") + doc("Segment", "s1", "{department: a, ipv4: 198.18.1.0/24}")
	host := func(vcpus string) string {
		return doc("Host", "h1", "{uplink: eth0, address: 198.18.0.11, capacity: {vcpus: "+vcpus+", memoryMiB: 4096}}")
	}
	vm := func(name, vcpus string) string {
		return doc("VM", name, "{department: a, vcpus: "+vcpus+", memoryMiB: 512, networks: [{segment: s1}]}")
	}
	plan := func(cur *config.State, y string, del ...config.Key) (*Result, *config.State) {
		t.Helper()
		res, err := applyStep(t, cur, y, del...)
		if err != nil {
			t.Fatal(err)
		}
		return res, res.Next
	}
	reasonOf := func(res *Result, name string) string {
		for _, c := range res.Changes {
			if c.Kind == config.KindVM && c.Name == name {
				return c.Reason
			}
		}
		t.Fatalf("no change for VM %s in %+v", name, res.Changes)
		return ""
	}
	res, cur := plan(config.NewState(), base+host("4")+vm("a1", "2")+vm("b2", "4"))
	want := `no host with 4 free vCPUs for VM "b2" among 1 host (h1: 2 vCPUs free)`
	if got := reasonOf(res, "b2"); got != want || cur.Get(config.KindVM, "b2").Status.Host != "" {
		t.Fatalf("b2 reason %q on %q, want pending with %q", got, cur.Get(config.KindVM, "b2").Status.Host, want)
	}
	if got := reasonOf(res, "a1"); got != "" {
		t.Errorf("a1 placed within capacity has reason %q", got)
	}
	res, cur = plan(cur, "", config.Key{Kind: config.KindVM, Name: "a1"})
	if b := cur.Get(config.KindVM, "b2").Status; b.Host != "h1" || b.Reason != "" || reasonOf(res, "b2") != "" {
		t.Fatalf("after deleting a1, b2 is %+v, want on h1 without a reason", b)
	}
	res, cur = plan(cur, host("2"))
	want = "host h1 over capacity: its VMs take 4 vCPUs of 2 (capacity × overcommit); kept there, not moved"
	if b := cur.Get(config.KindVM, "b2").Status; b.Host != "h1" || b.Reason != want || reasonOf(res, "b2") != want {
		t.Fatalf("after shrinking h1, b2 is %+v, want kept on h1 with %q", b, want)
	}
}

// applyStep plans YAML y (and the deletes del) on cur as the controller's apply does: the
// result's next state has the deleted objects removed and no sources (as stored).
func applyStep(t *testing.T, cur *config.State, y string, del ...config.Key) (*Result, error) {
	t.Helper()
	objs, err := config.Parse("t.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Compute(cur, noRaw{}, Request{Objects: objs, Deletes: del}, alloc.DefaultConfig())
	if err != nil {
		return nil, err
	}
	for _, k := range del {
		delete(res.Next.Objects, k)
	}
	for _, o := range res.Next.Objects {
		o.Source = nil
	}
	return res, nil
}
