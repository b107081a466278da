package libvirt

import (
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"

	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/compute/guestimage"
)

// The domain of the tiny guest boots its kernel with the NICs on the command line and has no
// seed; the domain of an image boots its disk, with the seed read-only after the other disks.
// Both have the console log, the shell socket and the guest agent channel. No libvirtd needed:
// the XML is read back with libvirtxml.
func TestDomainXML(t *testing.T) {
	p := &Provider{cfg: Config{StateDir: "/s", Emulator: "/usr/bin/qemu-system-x86_64", Host: "h1"},
		img: guestimage.Image{Kernel: "/k/vmlinux", Initrd: "/k/initrd.img"}}
	tiny := spec("t1", 3900, "198.18.200.10/24", "52:54:00:c7:00:10")
	deb := spec("d1", 3900, "198.18.200.11/24", "52:54:00:c7:00:11")
	deb.Image, deb.ImageFile = "debian-12", compute.Image{Name: "debian-12", Source: "debian-12.qcow2", SHA256: strings.Repeat("a", 64), OS: "debian"}
	for _, tc := range []struct {
		s               compute.VMSpec
		kernel, cmdline string
		boot            int
		disks           []string // target dev + readonly mark
	}{
		{tiny, "/k/vmlinux", "ip=198.18.200.10::198.18.200.1:255.255.255.0::eth0:off", 0, []string{"vda:/pool/root", "vdb:/pool/data"}},
		{deb, "", "", 1, []string{"vda:/pool/root", "vdb:/pool/data", "vdc:/s/console/gc-d1-seed.iso:ro"}},
	} {
		x, err := p.domainXML(tc.s, meta{Host: "h1", Fingerprint: "f", Image: compute.ImageName(tc.s), Generation: 3}, []string{"/pool/root", "/pool/data"}, "")
		if err != nil {
			t.Fatal(err)
		}
		var d libvirtxml.Domain
		if err := d.Unmarshal(x); err != nil {
			t.Fatalf("%s: %v\n%s", tc.s.Name, err, x)
		}
		if d.Name != "gc-"+tc.s.Name || d.Type != "qemu" || d.OS.Kernel != tc.kernel || !strings.Contains(d.OS.Cmdline, tc.cmdline) || len(d.OS.BootDevices) != tc.boot {
			t.Errorf("%s: name %q type %q os %+v", tc.s.Name, d.Name, d.Type, d.OS)
		}
		for _, attr := range []string{"host='h1'", "image='" + compute.ImageName(tc.s) + "'", "generation='3'"} {
			if !strings.Contains(d.Metadata.XML, attr) && !strings.Contains(d.Metadata.XML, strings.ReplaceAll(attr, "'", `"`)) {
				t.Errorf("%s: metadata %q lacks %s", tc.s.Name, d.Metadata.XML, attr)
			}
		}
		// A reboot inside the guest keeps its qemu; a power-off leaves the domain defined.
		if d.OnReboot != "restart" || d.OnPoweroff != "destroy" {
			t.Errorf("%s: on_reboot %q on_poweroff %q, want restart, destroy", tc.s.Name, d.OnReboot, d.OnPoweroff)
		}
		var disks []string
		for _, dk := range d.Devices.Disks {
			v := dk.Target.Dev + ":" + dk.Source.File.File
			if dk.ReadOnly != nil {
				v += ":ro"
			}
			disks = append(disks, v)
		}
		if strings.Join(disks, " ") != strings.Join(tc.disks, " ") {
			t.Errorf("%s: disks %v, want %v", tc.s.Name, disks, tc.disks)
		}
		if len(d.Devices.Interfaces) != 1 || d.Devices.Interfaces[0].MAC.Address != tc.s.NICs[0].MAC.String() || d.Devices.Interfaces[0].Target.Dev != tc.s.NICs[0].Port {
			t.Errorf("%s: interfaces %+v", tc.s.Name, d.Devices.Interfaces)
		}
		if len(d.Devices.Serials) != 2 || len(d.Devices.Channels) != 1 || d.Devices.Channels[0].Target.VirtIO.Name != "org.qemu.guest_agent.0" ||
			d.Devices.Channels[0].Source.UNIX.Path != "/s/console/gc-"+tc.s.Name+".qga" {
			t.Errorf("%s: serials %d, channels %+v", tc.s.Name, len(d.Devices.Serials), d.Devices.Channels)
		}
	}
}

// Volume files carry their host: a provider owns NAME@HOST.qcow2 and nothing of another host
// (safe on a shared pool); one without a host name owns NAME.qcow2 only.
func TestVolumeOwnership(t *testing.T) {
	h1 := &Provider{cfg: Config{Host: "h1"}}
	none := &Provider{}
	if got := h1.dataName("data"); got != "gc-vol-data@h1.qcow2" {
		t.Errorf("h1 data volume file %q, want gc-vol-data@h1.qcow2", got)
	}
	if got := h1.rootName("web"); got != "gc-web-root@h1.qcow2" {
		t.Errorf("h1 root file %q, want gc-web-root@h1.qcow2", got)
	}
	for _, tc := range []struct {
		p    *Provider
		file string
		base string // "" : not owned
	}{
		{h1, "gc-vol-data@h1.qcow2", "gc-vol-data"},
		{h1, "gc-web-root@h1.qcow2", "gc-web-root"},
		{h1, "gc-vol-data@h2.qcow2", ""},
		{h1, "gc-vol-data@h10.qcow2", ""},
		{h1, "gc-vol-data.qcow2", ""},
		{h1, "gc-vol-data@h1.raw", ""},
		{none, "gc-vol-data.qcow2", "gc-vol-data"},
		{none, "gc-vol-data@h1.qcow2", ""},
	} {
		base, ok := tc.p.ownedBase(tc.file)
		if ok != (tc.base != "") || ok && base != tc.base {
			t.Errorf("host %q: ownedBase(%q) = %q, %v; want %q", tc.p.cfg.Host, tc.file, base, ok, tc.base)
		}
	}
}
