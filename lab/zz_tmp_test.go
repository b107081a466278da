package lab

import (
	"path/filepath"
	"testing"

	"github.com/govcloud/govcloud/dataplane/netnstest"
)

func TestTmpIPv6(t *testing.T) {
	netnstest.RequirePrivileged(t)
	if len(labNamespaces()) > 0 {
		t.Fatalf("lab running: %v", labNamespaces())
	}
	dir := filepath.Join(t.TempDir(), "lab")
	bin, run := labCLI(t, dir)
	if _, err := run("up"); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	defer run("down")
	ipv6EndToEnd(t, bin, dir)
	if _, err := run("verify"); err != nil {
		t.Fatalf("lab verify: %v", err)
	}
}
