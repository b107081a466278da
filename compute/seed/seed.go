// Package seed writes a VM's NoCloud seed: an ISO 9660 image (Rock Ridge names, volume label
// "cidata") holding meta-data (instance id, hostname), user-data (#cloud-config with root's SSH
// authorized keys) and network-config (version 2: per NIC its MAC, IPv4 and IPv6 addresses with
// their prefix lengths, and default routes through the segment's gateways). cloud-init reads it,
// and so does the govcloud-seed unit of the Debian image (scripts/debian-image), which parses
// exactly the subset written here: keep the two in step.
package seed

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
)

// Label is the volume label NoCloud looks for.
const Label = "cidata"

// NIC is one guest interface: MAC, and its addresses with the segment's prefix length
// (198.18.20.10/24, 2001:db8:20::a/64; either may be zero) and gateways (zero: no route).
type NIC struct {
	MAC      net.HardwareAddr
	Addr     netip.Prefix
	Gateway  netip.Addr
	Addr6    netip.Prefix
	Gateway6 netip.Addr
}

// Config is what the seed sets in the guest.
type Config struct {
	InstanceID string // changes when the seed should be applied anew; the VM name is enough
	Hostname   string
	SSHKeys    []string // OpenSSH public key lines
	NICs       []NIC
}

// Files returns the seed's files by name: meta-data, user-data, network-config.
func Files(c Config) map[string]string {
	var md, ud, nc strings.Builder
	fmt.Fprintf(&md, "instance-id: %s\nlocal-hostname: %s\n", c.InstanceID, c.Hostname)
	fmt.Fprintf(&ud, "#cloud-config\nhostname: %s\n", c.Hostname)
	if len(c.SSHKeys) > 0 {
		ud.WriteString("ssh_authorized_keys:\n")
		for _, k := range c.SSHKeys {
			fmt.Fprintf(&ud, "  - %q\n", k)
		}
	}
	nc.WriteString("version: 2\nethernets:\n")
	for i, n := range c.NICs {
		fmt.Fprintf(&nc, "  eth%d:\n", i)
		if len(n.MAC) > 0 {
			fmt.Fprintf(&nc, "    match:\n      macaddress: %q\n    set-name: eth%d\n", n.MAC.String(), i)
		}
		var addrs, gws []string
		for _, a := range []struct {
			p  netip.Prefix
			gw netip.Addr
		}{{n.Addr, n.Gateway}, {n.Addr6, n.Gateway6}} {
			if a.p.IsValid() {
				addrs = append(addrs, a.p.String())
				if a.gw.IsValid() {
					gws = append(gws, a.gw.String())
				}
			}
		}
		if len(addrs) > 0 {
			nc.WriteString("    addresses:\n")
			for _, a := range addrs {
				fmt.Fprintf(&nc, "      - %q\n", a)
			}
		}
		if len(gws) > 0 {
			nc.WriteString("    routes:\n")
			for _, g := range gws {
				fmt.Fprintf(&nc, "      - to: default\n        via: %q\n", g)
			}
		}
	}
	return map[string]string{"meta-data": md.String(), "user-data": ud.String(), "network-config": nc.String()}
}

// WriteISO writes the seed of c as an ISO 9660 image at path (replacing what is there,
// atomically: a VM never sees half a seed).
func WriteISO(path string, c Config) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	if err := writeISO(tmp, c); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("seed %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("seed %s: %w", path, err)
	}
	return nil
}

func writeISO(path string, c Config) error {
	b, err := file.CreateFromPath(path, 1<<20)
	if err != nil {
		return err
	}
	defer b.Close()
	ws, err := os.MkdirTemp(filepath.Dir(path), ".seed-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(ws)
	fs, err := iso9660.Create(b, 0, 0, 2048, ws)
	if err != nil {
		return err
	}
	for name, content := range Files(c) {
		f, err := fs.OpenFile("/"+name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if _, err := f.Write([]byte(content)); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if err := fs.Finalize(iso9660.FinalizeOptions{RockRidge: true, VolumeIdentifier: Label}); err != nil {
		return fmt.Errorf("finalize: %w", err)
	}
	return nil
}
