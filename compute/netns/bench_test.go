package netns

import (
	"context"
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/govcloud/govcloud/dataplane/netnstest"
)

// cpuTime is the CPU time of this process and its waited-for children (the ip, ethtool and
// busybox commands a provider runs), user + system.
func cpuTime(tb testing.TB) time.Duration {
	var sum time.Duration
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if err := syscall.Getrusage(who, &ru); err != nil {
			tb.Fatal(err)
		}
		sum += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return sum
}

// BenchmarkGuests15 makes 15 guests on one bridge, then deletes them, and reports the wall and
// CPU time (this process and its children) per guest of each half. Privileged: run it under
// the lab lock, e.g. flock -o /work/wt/lab.lock go test -run '^$' -bench Guests15 ./compute/netns/
func BenchmarkGuests15(b *testing.B) {
	netnstest.RequirePrivileged(b)
	netnstest.RequireTool(b, "busybox")
	ctx := context.Background()
	testBridge(b, "gcbr3906")
	p := testProvider(b, "gct-bn-")
	const n = 15
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("b%02d", i)
	}
	b.Cleanup(func() {
		for _, name := range names {
			p.Delete(ctx, name)
		}
	})
	var create, del, createCPU, delCPU time.Duration
	for b.Loop() {
		t0, c0 := time.Now(), cpuTime(b)
		for i, name := range names {
			s := guest(name, fmt.Sprintf("198.18.206.%d/24", 10+i), fmt.Sprintf("02:00:00:c7:06:%02x", 10+i))
			s.NICs[0].Bridge, s.NICs[0].Port = "gcbr3906", "gvb"+name
			s.NICs[0].Gateway = netip.MustParseAddr("198.18.206.1")
			s.NICs[0].Addr6, s.NICs[0].Gateway6 = netip.MustParsePrefix(fmt.Sprintf("2001:db8:206::%x/64", 10+i)), netip.MustParseAddr("2001:db8:206::1")
			if _, err := p.Ensure(ctx, s); err != nil {
				b.Fatal(err)
			}
		}
		t1, c1 := time.Now(), cpuTime(b)
		for _, name := range names {
			if err := p.Delete(ctx, name); err != nil {
				b.Fatal(err)
			}
		}
		create, createCPU = create+t1.Sub(t0), createCPU+c1-c0
		del, delCPU = del+time.Since(t1), delCPU+cpuTime(b)-c1
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N*n) }
	b.ReportMetric(per(create), "create-ms/guest")
	b.ReportMetric(per(createCPU), "create-cpu-ms/guest")
	b.ReportMetric(per(del), "delete-ms/guest")
	b.ReportMetric(per(delCPU), "delete-cpu-ms/guest")
}
