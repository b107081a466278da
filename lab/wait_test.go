package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// applyWaitDeleteFile is the real path of issue 23's CLI pieces on the running lab: 'apply -f
// DIR --wait' returns once both hosts' network agents report the new department's segment
// ready at the applied revision; '--wait' on a VM no host matches fails at once with the
// controller's reason; 'delete -f DIR' removes the objects of the directory (segment before
// department); 'console VM --tail' needs a token and says a netns guest has no serial log.
func applyWaitDeleteFile(t *testing.T, bin, dir string) {
	t.Helper()
	l, admin := openLab(t, bin, dir)
	cli := func(token string, args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "GOVCLOUD_API="+l.api(), "GOVCLOUD_TOKEN="+token, "GOVCLOUD_CA="+l.caFile())
		out, err := cmd.CombinedOutput()
		t.Logf("govcloud %s: %v\n%s", strings.Join(args, " "), err, out)
		return string(out), err
	}
	files := t.TempDir()
	for name, text := range map[string]string{
		"1-department.yaml": "apiVersion: govcloud/v1\nkind: Department\nmetadata: {name: waitdept}\nspec: {displayName: Wait}\n",
		"2-segment.yml":     "apiVersion: govcloud/v1\nkind: Segment\nmetadata: {name: waitdept-web}\nspec: {department: waitdept, vlan: 190, ipv4: 198.18.90.0/24, gateway: 198.18.90.1}\n",
		"pending.txt":       "apiVersion: govcloud/v1\nkind: VM\nmetadata: {name: waitdept-nowhere}\nspec: {department: waitdept, vcpus: 1, memoryMiB: 64, image: tiny, networks: [{segment: waitdept-web}], hostSelector: {rack: nowhere}}\n",
	} {
		if err := os.WriteFile(filepath.Join(files, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now()
	out, err := cli(admin, "apply", "-f", files, "--wait", "--timeout", "60s")
	if err != nil || !strings.Contains(out, "+ create Segment waitdept-web") || !strings.Contains(out, "Realized: every object at revision") {
		t.Fatalf("apply -f DIR --wait: %v\n%s", err, out)
	}
	took := time.Since(t0)
	if out, err := cli(admin, "status"); err != nil || strings.Contains(out, "waitdept-web: not ready") {
		t.Errorf("status after a realized wait: %v\n%s", err, out)
	}

	pending := filepath.Join(files, "pending.txt")
	out, err = cli(admin, "apply", "-f", pending, "--wait", "--timeout", "60s")
	if err == nil || !strings.Contains(out, `vm waitdept-nowhere pending: no host for VM "waitdept-nowhere": none of 2 hosts matches hostSelector rack=nowhere`) {
		t.Errorf("apply --wait of an unplaceable VM: %v, want a failure with the placement reason\n%s", err, out)
	}

	// The console needs a token even where the lab reads without one; the lab's guests are
	// network namespaces, without a serial console.
	if out, err := cli("", "console", "waitdept-nowhere", "--tail", "--follow=false"); err == nil || !strings.Contains(out, "console needs a token") {
		t.Errorf("console without a token: %v\n%s", err, out)
	}
	if out, err := cli(admin, "console", "waitdept-nowhere", "--tail", "--follow=false"); err != nil || !strings.Contains(out, "not placed on a host") {
		t.Errorf("console of a pending VM: %v\n%s", err, out)
	}

	if out, err := cli(admin, "delete", "-f", pending); err != nil || !strings.Contains(out, "- delete VM waitdept-nowhere") {
		t.Errorf("delete -f FILE: %v\n%s", err, out)
	}
	out, err = cli(admin, "delete", "-f", files)
	if err != nil || !strings.Contains(out, "- delete Segment waitdept-web\n- delete Department waitdept\n") {
		t.Fatalf("delete -f DIR: %v, want the segment deleted before its department\n%s", err, out)
	}
	if out, err := cli(admin, "delete", "-f", files); err == nil || !strings.Contains(out, `Segment "waitdept-web": not found`) {
		t.Errorf("delete -f of what is gone: %v, want not found\n%s", err, out)
	}
	t.Logf("apply -f DIR --wait: realized on both hosts in %s; unplaceable VM failed with its reason; delete -f DIR", took.Round(100*time.Millisecond))
}
