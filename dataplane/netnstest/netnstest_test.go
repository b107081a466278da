package netnstest

import (
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

func TestDoRunsInsideAndComesBack(t *testing.T) {
	RequirePrivileged(t)
	a, b := New(t, "gct-a"), New(t, "gct-b")
	if err := Veth(a, "va", b, "vb"); err != nil {
		t.Fatal(err)
	}
	if err := a.AddrAdd("va", "198.18.250.1/30"); err != nil {
		t.Fatal(err)
	}
	if err := b.AddrAdd("vb", "198.18.250.2/30"); err != nil {
		t.Fatal(err)
	}
	out := a.MustRun(t, "ping", "-c1", "-W2", "198.18.250.2")
	if !strings.Contains(out, "1 received") {
		t.Fatalf("ping across the veth: %s", out)
	}
	before, _ := netns.Get()
	defer before.Close()
	var inside netns.NsHandle
	if err := a.Do(func() error {
		h, err := netns.Get()
		inside = h
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer inside.Close()
	if !inside.Equal(a.Handle()) {
		t.Fatal("Do did not run inside the namespace")
	}
	after, _ := netns.Get()
	defer after.Close()
	if !after.Equal(before) {
		t.Fatal("calling thread changed namespace")
	}
}
