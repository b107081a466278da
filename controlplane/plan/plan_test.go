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
