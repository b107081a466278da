package e2e

import (
	"regexp"
	"strings"
	"testing"

	"github.com/govcloud/govcloud/controlplane/apitest"
)

// Issue 22: audit showed token operations with an empty CHANGES column and revision numbers
// that matched neither 'status' nor the apply. An object change now shows the state revisions
// apply and status print; a token operation shows "-" and what it did.
func TestAuditRevisionsMatchApplyAndStatus(t *testing.T) {
	env := apitest.New(t)
	admin := env.Tokens["admin"]
	r := run(t, env.URL, admin, "apply", "-f", writeFile(t, apitest.Base))
	m := regexp.MustCompile(`\(now at revision (\d+)\)`).FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil {
		t.Fatalf("apply: %+v", r)
	}
	rev := m[1]
	if r := run(t, env.URL, admin, "token", "create", "--name", "lands-ro", "--role", "department", "--department", "lands"); r.code != 0 {
		t.Fatalf("token create: %+v", r)
	}
	if r := run(t, env.URL, admin, "status"); r.code != 0 || !strings.Contains(r.stdout, "revision:   "+rev+"\n") {
		t.Fatalf("status after apply (revision %s) and a token: %+v", rev, r)
	}
	r = run(t, env.URL, admin, "audit")
	if r.code != 0 {
		t.Fatalf("audit: %+v", r)
	}
	var applyLine, tokenLine string
	for _, l := range strings.Split(r.stdout, "\n") {
		switch {
		case strings.Contains(l, " apply "):
			applyLine = l
		case strings.Contains(l, " token ") && strings.Contains(l, "name=lands-ro"):
			tokenLine = l
		}
	}
	if !regexp.MustCompile(`\s\d+->` + rev + `\s+create `).MatchString(applyLine) {
		t.Errorf("apply entry %q: want revisions ending at %s, the apply's", applyLine, rev)
	}
	if !regexp.MustCompile(`\stoken\s+-\s+department=lands id=tok_[0-9a-f]{16} name=lands-ro role=department`).MatchString(tokenLine) {
		t.Errorf("token entry %q: want no state revision and what the token is", tokenLine)
	}
}
