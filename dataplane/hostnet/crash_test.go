package hostnet_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/govcloud/govcloud/dataplane/hostnet"
	"github.com/govcloud/govcloud/dataplane/netdev"
	"github.com/govcloud/govcloud/dataplane/netnstest"
	tt "github.com/govcloud/govcloud/dataplane/trunk/trunktest"
)

const crashSegments = 60

// TestMain doubles as the "agent" that TestKilledMidReconcile kills: with
// GOVCLOUD_HOSTNET_CHILD set it applies a desired state in the named namespace and waits.
func TestMain(m *testing.M) {
	if ns := os.Getenv("GOVCLOUD_HOSTNET_CHILD"); ns != "" {
		if err := child(ns, os.Getenv("GOVCLOUD_HOSTNET_PIN"), os.Getenv("GOVCLOUD_HOSTNET_STATE")); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		select {} // wait for the kill
	}
	os.Exit(m.Run())
}

func child(nsName, pin, state string) error {
	h, err := netns.GetFromName(nsName)
	if err != nil {
		return err
	}
	hn, err := hostnet.New(hostnet.Config{NetNS: h, PinPath: pin, StateDir: state})
	if err != nil {
		return err
	}
	return hn.Set(scaleState(crashSegments))
}

// TestKilledMidReconcile kills an agent (SIGKILL) while its first Set is half done, then
// starts a new one on the same pins and state: it must converge to exactly the desired state,
// and its teardown must leave nothing.
func TestKilledMidReconcile(t *testing.T) {
	netnstest.RequirePrivileged(t)
	netnstest.RequireTool(t, "nft")
	host := netnstest.New(t, "gct-kh")
	peer := netnstest.New(t, "gct-kp")
	if err := netnstest.Veth(host, "up0", peer, "up1"); err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join(tt.BPFFS(t), "host")
	state := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GOVCLOUD_HOSTNET_CHILD="+host.Name, "GOVCLOUD_HOSTNET_PIN="+pin, "GOVCLOUD_HOSTNET_STATE="+state)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it once some, but not all, segments are attached to the trunk.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ents, _ := os.ReadDir(filepath.Join(pin, "links"))
		if len(ents) >= 5 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child made no progress: %s", stderr.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	want := expected(scaleState(crashSegments))
	half := observe(t, host, nil, nil)
	if len(half) == 0 || len(diff(half, want)) == 0 {
		t.Fatalf("the kill did not land mid-reconcile (%d objects observed)", len(half))
	}

	h, err := hostnet.New(hostnet.Config{NetNS: host.Handle(), PinPath: pin, StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Set(scaleState(crashSegments)); err != nil {
		t.Fatal(err)
	}
	if got := observe(t, host, h, nil); !slices.Equal(got, want) {
		t.Fatalf("after restart the kernel differs from desired:\n%s", diff(got, want))
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if got := observe(t, host, nil, nil); len(got) != 0 {
		t.Fatalf("left behind after teardown: %v", got)
	}
	if v := strings.TrimSpace(host.MustRun(t, "cat", "/proc/sys/net/ipv4/ip_forward")); v != "0" {
		t.Fatalf("ip_forward = %s after teardown, want the original 0", v)
	}
	links, _ := host.Netlink().LinkList()
	for _, l := range links {
		if _, ours := netdev.SegmentVLAN(l.Attrs().Name); ours {
			t.Fatalf("link %s left", l.Attrs().Name)
		}
	}
}
