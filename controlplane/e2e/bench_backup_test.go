package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// BenchmarkBackup is 'make bench-backup': backup and restore of the 30 departments x 4
// segments x 10 services store (bigConfig), end to end through the CLI, several rounds; then
// the time from restore start until a controller on the restored data dir answers with every
// object.
func BenchmarkBackup(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime 1x")
	}
	const rounds = 5
	dir := filepath.Join(b.TempDir(), "c1")
	c := startControllerB(b, "--data-dir", dir)
	tokb, _ := os.ReadFile(filepath.Join(dir, "admin-token"))
	tok := strings.TrimSpace(string(tokb))
	big := filepath.Join(b.TempDir(), "big.yaml")
	_ = os.WriteFile(big, []byte(bigConfig(0)), 0o600)
	if _, out := timeRun(b, c.url(), tok, "apply", "-f", big); !strings.Contains(out, "to create") {
		b.Fatalf("apply: %s", out)
	}
	fmt.Printf("\n== backup benchmark (controller with embedded etcd, fsync on; 2 cores) ==\n")
	fmt.Printf("store: 30 departments x 4 segments x 10 services = 1200 services, 120 segments, 30 pools, 2 hosts (allocations, audit, token)\n")
	bdir := filepath.Join(b.TempDir(), "backups")
	nameRE := regexp.MustCompile(`backup written: (\S+) \((\d+) bytes\)`)
	var backups, restores, ups []time.Duration
	var file, size string
	for r := 0; r < rounds; r++ {
		d, out := timeRun(b, c.url(), tok, "backup", "create", "--to", bdir)
		m := nameRE.FindStringSubmatch(out)
		if m == nil {
			b.Fatalf("backup create: %s", out)
		}
		file, size = m[1], m[2]
		backups = append(backups, d)
		target := filepath.Join(b.TempDir(), fmt.Sprintf("restored%d", r))
		d, out = timeRun(b, "", "", "restore", "--from", file, "--data-dir", target)
		if !strings.Contains(out, "restored ") {
			b.Fatalf("restore: %s", out)
		}
		restores = append(restores, d)
		if r == 0 {
			start := time.Now()
			_, _ = timeRun(b, "", "", "restore", "--from", file, "--data-dir", target+"-up")
			c2 := startControllerB(b, "--data-dir", target+"-up")
			_, out := timeRun(b, c2.url(), tok, "get", "services", "dept29-seg3-svc9", "-o", "json")
			if !strings.Contains(out, `"vip"`) {
				b.Fatalf("restored controller: %s", out)
			}
			ups = append(ups, time.Since(start))
			c2.kill()
		}
	}
	row := func(what string, d []time.Duration, goalD time.Duration) {
		line := fmt.Sprintf("%-62s rounds=%d min=%-8v median=%-8v max=%v", what, len(d), pct(d, 0).Round(time.Millisecond), pct(d, 0.5).Round(time.Millisecond), pct(d, 1).Round(time.Millisecond))
		if goalD > 0 {
			line += fmt.Sprintf("  [goal < %v: %s]", goalD, goal(pct(d, 1) < goalD))
		}
		fmt.Println(line)
	}
	fmt.Printf("backup file: %s bytes\n", size)
	row("backup create (CLI -> API -> etcd snapshot -> verified file)", backups, time.Second)
	row("restore --from FILE --data-dir DIR (verify + etcdutl restore)", restores, 5*time.Second)
	row("restore start -> restored controller answers (restore + start)", ups, 0)
}
