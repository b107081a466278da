package config

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Inputs whose checks used to be quadratic, or whose errors were unbounded (issue 14 §4):
// each must stay within MaxErrors and grow about linearly (n log n) with its size.
func TestValidationIsBounded(t *testing.T) {
	doc := func(kind, name, spec string) string {
		return "---\napiVersion: govcloud/v1\nkind: " + kind + "\nmetadata: {name: " + name + "}\nspec: " + spec + "\n"
	}
	v4 := func(i int) string { // 198.18.0.0/15 carved into /30s
		a := netip.MustParseAddr("198.18.0.0").As4()
		n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) + uint32(i)*4
		return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}).String()
	}
	for _, tc := range []struct {
		name  string
		input func(n int) string
		// wantAll: every one of these errors is found (counted, even past MaxErrors).
		wantAll func(n int) int
	}{
		{"one pool of n identical CIDRs", func(n int) string {
			return base + doc("AddressPool", "p", "{departments: [lands], cidrs: ["+strings.Repeat("203.0.113.0/24, ", n-1)+"203.0.113.0/24]}")
		}, func(n int) int { return n - 1 }},
		{"one pool listing n unknown departments", func(n int) string {
			ds := make([]string, n)
			for i := range ds {
				ds[i] = fmt.Sprintf("nosuch%d", i)
			}
			return base + doc("AddressPool", "p", "{cidrs: [203.0.113.0/24], departments: ["+strings.Join(ds, ", ")+"]}")
		}, func(n int) int { return n }},
		{"n pools of one overlapping CIDR each", func(n int) string {
			var b strings.Builder
			b.WriteString(base)
			for i := range n {
				b.WriteString(doc("AddressPool", fmt.Sprintf("p%d", i), "{cidrs: [203.0.113.0/24], departments: [lands]}"))
			}
			return b.String()
		}, func(n int) int { return n - 1 }},
		{"n segments of one department, all inside 198.18.0.0/15's first /30 chain", func(n int) string {
			var b strings.Builder
			b.WriteString(base)
			for i := range n {
				b.WriteString(doc("Segment", fmt.Sprintf("s%d", i), "{department: health, vlan: "+fmt.Sprint(200+i%3000)+", ipv4: "+v4(i)+"/30}"))
			}
			return b.String()
		}, func(n int) int { return 0 }},
		{"n services with an address backend each, n segments", func(n int) string {
			var b strings.Builder
			b.WriteString(base)
			for i := range n {
				b.WriteString(doc("Segment", fmt.Sprintf("s%d", i), "{department: health, ipv4: "+v4(i)+"/30}"))
				b.WriteString(doc("Service", fmt.Sprintf("svc%d", i), "{department: lands, ports: [{port: 80}], backends: [{address: "+v4(i)+"}]}"))
			}
			return b.String()
		}, func(n int) int { return 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run := func(n int) (time.Duration, Errors) {
				in := tc.input(n)
				t0 := time.Now()
				err := parseValidate(t, in)
				return time.Since(t0), AsErrors(err)
			}
			const small = 500
			run(small) // warm up
			d1, _ := run(small)
			d4, es := run(4 * small)
			if len(es) > MaxErrors+1 {
				t.Errorf("%d errors kept, want at most %d and a count", len(es), MaxErrors+1)
			}
			if want := tc.wantAll(4 * small); want > 0 && es.Count() < want {
				t.Errorf("errors count %d, want at least %d", es.Count(), want)
			}
			if len(es) > MaxErrors && !strings.Contains(es[len(es)-1].Msg, "more errors") {
				t.Errorf("last error %q does not say how many were left out", es[len(es)-1].Msg)
			}
			// 4x the input: a quadratic check takes about 16x; allow n log n with noise.
			if d4 > 10*d1 && d4 > 200*time.Millisecond {
				t.Errorf("4x the input took %v against %v: grows faster than n log n", d4, d1)
			}
		})
	}
}

// TestErrorsAdd: past MaxErrors errors are counted in one last entry.
func TestErrorsAdd(t *testing.T) {
	var es Errors
	for i := range MaxErrors + 42 {
		es = es.Add(&Error{Msg: fmt.Sprint(i)})
	}
	if len(es) != MaxErrors+1 || es.Count() != MaxErrors+42 || es[MaxErrors].Msg != "and 42 more errors" {
		t.Fatalf("%d entries, count %d, last %q", len(es), es.Count(), es[len(es)-1].Msg)
	}
	es = es.Add(Errors{{More: 8, Msg: "and 8 more errors"}}...)
	if es.Count() != MaxErrors+50 || es[len(es)-1].Msg != "and 50 more errors" {
		t.Fatalf("merging a count: count %d, last %q", es.Count(), es[len(es)-1].Msg)
	}
	if err := es.Err(); AsErrors(err)[MaxErrors].More != 50 {
		t.Fatal("Err sorted the count away from the end")
	}
}

// TestOverlapping: the sweep finds exactly the prefixes contained in another, v4 and v6.
func TestOverlapping(t *testing.T) {
	p := func(ss ...string) []netip.Prefix {
		out := make([]netip.Prefix, len(ss))
		for i, s := range ss {
			if s != "" {
				out[i] = netip.MustParsePrefix(s)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name string
		in   []netip.Prefix
		want string
	}{
		{"disjoint", p("198.18.0.0/24", "198.18.1.0/24", "2001:db8::/64"), "[]"},
		{"identical", p("198.18.0.0/24", "198.18.0.0/24"), "[[1 0]]"},
		{"later inside earlier", p("198.18.0.0/16", "198.18.5.0/24"), "[[1 0]]"},
		{"earlier inside later", p("198.18.5.0/24", "198.18.0.0/16"), "[[1 0]]"},
		{"adjacent, not overlapping", p("198.18.0.0/25", "198.18.0.128/25"), "[]"},
		{"v4 and v6 never overlap", p("0.0.0.0/0", "::/0"), "[]"},
		{"v6 nested: each inner one reported against the outermost", p("2001:db8::/32", "2001:db8:1::/48", "2001:db8:1:2::/64"), "[[1 0] [2 0]]"},
		{"invalid ignored", p("198.18.0.0/24", "", "198.18.0.0/24"), "[[2 0]]"},
		{"long after short ends", p("198.18.0.0/24", "198.18.0.0/16", "198.18.200.0/24"), "[[1 0] [2 1]]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fmt.Sprint(overlapping(tc.in)); got != tc.want {
				t.Errorf("overlapping = %s, want %s", got, tc.want)
			}
		})
	}
}
