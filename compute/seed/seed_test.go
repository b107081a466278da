package seed

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func testConfig() Config {
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	return Config{InstanceID: "web-1", Hostname: "web-1", SSHKeys: []string{"ssh-ed25519 AAAAC3Nza k@x"},
		NICs: []NIC{{MAC: mac, Addr: netip.MustParsePrefix("198.18.20.10/24"), Gateway: netip.MustParseAddr("198.18.20.1"),
			Addr6: netip.MustParsePrefix("2001:db8:20::a/64"), Gateway6: netip.MustParseAddr("2001:db8:20::1")}}}
}

func TestFiles(t *testing.T) {
	f := Files(testConfig())
	want := map[string]string{
		"meta-data": "instance-id: web-1\nlocal-hostname: web-1\n",
		"user-data": "#cloud-config\nhostname: web-1\nssh_authorized_keys:\n  - \"ssh-ed25519 AAAAC3Nza k@x\"\n",
		"network-config": `version: 2
ethernets:
  eth0:
    match:
      macaddress: "52:54:00:12:34:56"
    set-name: eth0
    addresses:
      - "198.18.20.10/24"
      - "2001:db8:20::a/64"
    routes:
      - to: default
        via: "198.18.20.1"
      - to: default
        via: "2001:db8:20::1"
`,
	}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("%s:\n%s\nwant\n%s", k, f[k], v)
		}
	}
}

// The image's seed unit turns the seed into systemd-networkd files: run its parser (awk) on the
// network-config written here, so the two cannot drift apart.
func TestSeedUnitParsesNetworkConfig(t *testing.T) {
	if _, err := exec.LookPath("awk"); err != nil {
		t.Skip("awk not found")
	}
	script, err := os.ReadFile("../../scripts/debian-image/govcloud-seed")
	if err != nil {
		t.Fatal(err)
	}
	// Cut the awk program out of the script and point it at a temporary directory.
	s := string(script)
	i := strings.Index(s, "awk '\n")
	j := strings.Index(s, "' $m/network-config")
	if i < 0 || j < 0 {
		t.Fatal("awk program not found in govcloud-seed")
	}
	dir := t.TempDir()
	prog := strings.ReplaceAll(s[i+len("awk '\n"):j], "/run/systemd/network", dir)
	nc := filepath.Join(dir, "network-config")
	c := testConfig()
	// A second NIC without a MAC (matched by name), IPv4 only, without a gateway.
	c.NICs = append(c.NICs, NIC{Addr: netip.MustParsePrefix("198.18.21.10/24")})
	if err := os.WriteFile(nc, []byte(Files(c)["network-config"]), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("awk", prog, nc).CombinedOutput(); err != nil {
		t.Fatalf("awk: %v: %s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(dir, "10-govcloud-0.network"))
	if err != nil {
		t.Fatal(err)
	}
	want := "[Match]\nMACAddress=52:54:00:12:34:56\n\n[Network]\nIPv6AcceptRA=no\nLinkLocalAddressing=ipv6\n" +
		"Address=198.18.20.10/24\nAddress=2001:db8:20::a/64\nGateway=198.18.20.1\nGateway=2001:db8:20::1\n"
	if string(got) != want {
		t.Errorf("networkd file:\n%s\nwant\n%s", got, want)
	}
	got, err = os.ReadFile(filepath.Join(dir, "10-govcloud-1.network"))
	if err != nil {
		t.Fatal(err)
	}
	want = "[Match]\nName=eth1\n\n[Network]\nIPv6AcceptRA=no\nLinkLocalAddressing=ipv6\nAddress=198.18.21.10/24\n"
	if string(got) != want {
		t.Errorf("networkd file of the second NIC:\n%s\nwant\n%s", got, want)
	}
}

// The ISO carries the label and the three files under their NoCloud names (Rock Ridge).
func TestWriteISO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "seed.iso")
	if err := WriteISO(p, testConfig()); err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("isoinfo"); err == nil {
		out, err := exec.Command("isoinfo", "-R", "-f", "-i", p).CombinedOutput()
		if err != nil {
			t.Fatalf("isoinfo: %v: %s", err, out)
		}
		for _, f := range []string{"/meta-data", "/user-data", "/network-config"} {
			if !strings.Contains(string(out), f) {
				t.Errorf("ISO lists %q, want %s", out, f)
			}
		}
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	// The primary volume descriptor (sector 16) holds the volume identifier at offset 40.
	if len(b) < 16*2048+72 || !strings.EqualFold(strings.Trim(string(b[16*2048+40:16*2048+72]), " \x00"), Label) {
		t.Fatalf("volume identifier %q, want %q", b[16*2048+40:16*2048+72], Label)
	}
	if !strings.Contains(string(b), "local-hostname: web-1") {
		t.Error("meta-data not in the image")
	}
}
