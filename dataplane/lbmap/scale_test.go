package lbmap

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/dataplane/netnstest"
	"github.com/govcloud/govcloud/lb"
)

// BenchmarkScaleServices is part of 'make bench-agent': 1000 services (4 backends each, tables
// of 65537 slots) programmed on one host — the first Set, an unchanged Set, a Set changing one
// service — with the process's RSS and the kernel memory of the tables printed.
func BenchmarkScaleServices(b *testing.B) {
	netnstest.RequirePrivileged(b)
	dp, err := Load(Options{ConnTableSize: 1 << 16})
	if err != nil {
		b.Fatal(err)
	}
	defer dp.Close()
	svcs := func(weight uint32) []lb.Service {
		var out []lb.Service
		for i := range 1000 {
			var bes []lb.Backend
			for j := range 4 {
				bes = append(bes, be(fmt.Sprintf("198.18.%d.%d", 1+j, 1+i%250), uint16(8000+i/250), 1))
			}
			if i == 0 {
				bes[0].Weight = weight
			}
			out = append(out, svc(fmt.Sprintf("s%d", i), uint32(i%30), fmt.Sprintf("203.0.113.%d", 1+i%250), uint16(80+i/250), lb.TCP, lb.DSR, bes...))
		}
		return out
	}
	timed := func(s []lb.Service) time.Duration {
		start := time.Now()
		if err := dp.Set(s); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	first := timed(svcs(1))
	// An unchanged Set is a few ms: the median of 9, so one garbage collection does not decide.
	var sames []time.Duration
	for range 9 {
		sames = append(sames, timed(svcs(1)))
	}
	slices.Sort(sames)
	same := sames[len(sames)/2]
	one := timed(svcs(0))
	fmt.Printf("-- 1000 services x 4 backends on one host (Maglev tables of %d slots)\n", lb.DefaultTableSize)
	fmt.Printf("  first Set (build 1000 tables, fill, swap in) : %8.0f ms\n", ms(first))
	fmt.Printf("  unchanged Set                                : %8.2f ms (median of 9)\n", ms(same))
	fmt.Printf("  one service changed (drain a backend)        : %8.2f ms\n", ms(one))
	fmt.Printf("  process RSS                                  : %8.1f MiB\n", rssMiB())
	fmt.Printf("  kernel memory of the tables                  : %8.1f MiB (1000 x %d x 4 bytes)\n", float64(1000*lb.DefaultTableSize*4)/(1<<20), lb.DefaultTableSize)
}

func rssMiB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kb float64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:")), "%f", &kb)
			return kb / 1024
		}
	}
	return 0
}
