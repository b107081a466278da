package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// placementReason (issue 23): a VM whose host selector matches none of the lab's hosts is
// accepted pending, and apply, 'get vms' and 'status' say why through the running controller;
// deleting it leaves the lab as it was.
func placementReason(t *testing.T, bin, dir string) {
	t.Helper()
	l, admin := openLab(t, bin, dir)
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "GOVCLOUD_API="+l.api(), "GOVCLOUD_TOKEN="+admin, "GOVCLOUD_CA="+l.caFile())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("govcloud %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	file := filepath.Join(t.TempDir(), "nowhere.yaml")
	vm := "apiVersion: govcloud/v1\nkind: VM\nmetadata: {name: lands-nowhere}\n" +
		"spec: {department: lands, vcpus: 1, memoryMiB: 64, image: tiny, networks: [{segment: lands-web}], hostSelector: {rack: nowhere}}\n"
	if err := os.WriteFile(file, []byte(vm), 0o644); err != nil {
		t.Fatal(err)
	}
	reason := `no host for VM "lands-nowhere": none of 2 hosts matches hostSelector rack=nowhere`
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"apply", "-f", file}, "placement: " + reason},
		{[]string{"get", "vms"}, "host=(pending) vcpus=1 mem=64MiB addresses=198.18."},
		{[]string{"get", "vms"}, "reason: " + reason},
		{[]string{"status"}, "vm lands-nowhere: pending: " + reason},
	} {
		if out := cli(c.args...); !strings.Contains(out, c.want) {
			t.Errorf("govcloud %s lacks %q:\n%s", strings.Join(c.args, " "), c.want, out)
		}
	}
	cli("delete", "vm", "lands-nowhere")
	if out := cli("get", "vms"); strings.Contains(out, "lands-nowhere") {
		t.Errorf("lands-nowhere still listed after delete:\n%s", out)
	}
	t.Logf("placement: pending VM reported in apply, get vms and status: %s", reason)
}
