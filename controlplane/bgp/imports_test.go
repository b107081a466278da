package bgp

import (
	"os/exec"
	"strings"
	"testing"
)

// TestGoBGPStaysInItsPackage keeps GoBGP behind the Speaker interface: only
// controlplane/bgp/gobgp may import it (directly).
func TestGoBGPStaysInItsPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped by -short (make test-unit): runs go list over the whole module")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("missing tool: go (not on PATH)")
	}
	out, err := exec.Command(goTool, "list", "-e", "-f", `{{.ImportPath}} {{join .Imports " "}} {{join .TestImports " "}}`, "github.com/govcloud/govcloud/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] == "github.com/govcloud/govcloud/controlplane/bgp/gobgp" {
			continue
		}
		for _, imp := range f[1:] {
			if strings.HasPrefix(imp, "github.com/osrg/gobgp") {
				t.Errorf("%s imports %s: GoBGP belongs in controlplane/bgp/gobgp only", f[0], imp)
			}
		}
	}
}
