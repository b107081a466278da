// Package libvirt is the compute Provider that runs real VMs: qemu (TCG unless the host
// offers more) under libvirtd, spoken to through go-libvirt (pure Go, the RPC protocol on the
// libvirtd socket). Disks are qcow2 overlays on a base image in a storage pool (a directory pool
// by default; the pool type is configuration). Guests boot the tiny image of package guestimage
// directly (kernel, initramfs, command line with the NIC addresses). Everything it makes is named
// "gc-..." and domains carry a govcloud metadata element naming the host, so a restarted agent
// finds its own leftovers and nothing else, also when several agents share one libvirtd (the lab).
//
// When libvirtd runs in another network namespace than the agent (Config.LibvirtNetns: the lab,
// where one libvirtd serves hosts that are namespaces), each NIC gets a bridge of its own next to
// the tap in libvirtd's namespace and a veth pair from it into the agent's, whose end here is the
// guest port on the segment bridge: the network agent filters that port as it would the tap.
package libvirt

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"libvirt.org/go/libvirtxml"

	"github.com/govcloud/govcloud/compute"
	"github.com/govcloud/govcloud/compute/guestimage"
	"github.com/govcloud/govcloud/compute/imagestore"
	"github.com/govcloud/govcloud/compute/seed"
	"github.com/govcloud/govcloud/controlplane/desired"
)

const (
	prefix      = "gc-"           // every domain and volume this provider owns
	volPrefix   = "gc-vol-"       // data volumes (resources of their own)
	rootSuffix  = "-root"         // a VM's root overlay: gc-NAME-root@HOST.qcow2
	baseVolume  = "gc-base.qcow2" // the base image overlays sit on
	metadataURI = "https://govcloud.dev/compute/v1"
)

// Config configures the provider; zero values take the defaults.
type Config struct {
	Socket   string // libvirtd socket, default /run/libvirt/libvirt-sock
	Pool     string // storage pool name, default gc-pool
	PoolType string // "dir" (default); other types need PoolXML
	PoolPath string // dir pool target, default /var/lib/govcloud/compute/pool
	PoolXML  string // full pool definition when PoolType is not "dir" (e.g. rbd)
	StateDir string // images and console logs, default /var/lib/govcloud/compute
	Emulator string // default /usr/bin/qemu-system-x86_64
	// Host is written into each domain's metadata; only domains of this host are listed, used
	// for usage, or removed. Several agents (one per host) may share one libvirtd.
	Host string
	// BackupDir holds volume backups (BackupVolume writes them; a volume with RestoreFrom is
	// made from one); default StateDir/volume-backups. Meant to be shared or remote storage,
	// so a volume can be restored on another host than the one it was backed up on.
	BackupDir string
	// LibvirtNetns is the path of libvirtd's network namespace when it is not the agent's
	// (e.g. /proc/1/ns/net seen from an agent in a namespace); empty: the same.
	LibvirtNetns string
	// ImageStore is the directory of the Image objects' files (imagestore.DefaultDir when
	// empty): a VM with such an image boots a qcow2 overlay on the verified file, with a
	// NoCloud seed of its own.
	ImageStore string
	// StopTimeout is how long a VM of an image (a real OS) is given to shut down when asked
	// (ACPI) before it is powered off; default 30s. The tiny guest is powered off at once.
	StopTimeout time.Duration
	Log         *slog.Logger
}

// Provider is the libvirt compute provider.
type Provider struct {
	cfg    Config
	l      *golibvirt.Libvirt
	log    *slog.Logger
	mu     sync.Mutex
	pool   golibvirt.StoragePool
	img    guestimage.Image
	images *imagestore.Store
	base   string // path of the base volume
	// lh is a netlink handle in libvirtd's namespace (where taps are made); with LibvirtNetns
	// set, own is this process's namespace, where guest ports join the segment bridges.
	lh  *netlink.Handle
	own netns.NsHandle
}

// New connects to libvirtd, makes sure the storage pool, the base volume and the guest image
// exist, and returns the provider.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	if cfg.Socket == "" {
		cfg.Socket = "/run/libvirt/libvirt-sock"
	}
	if cfg.Pool == "" {
		cfg.Pool = "gc-pool"
	}
	if cfg.PoolType == "" {
		cfg.PoolType = "dir"
	}
	if cfg.StateDir == "" {
		cfg.StateDir = "/var/lib/govcloud/compute"
	}
	if cfg.PoolPath == "" {
		cfg.PoolPath = filepath.Join(cfg.StateDir, "pool")
	}
	if cfg.BackupDir == "" {
		cfg.BackupDir = filepath.Join(cfg.StateDir, "volume-backups")
	}
	if cfg.Emulator == "" {
		cfg.Emulator = "/usr/bin/qemu-system-x86_64"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 30 * time.Second
	}
	p := &Provider{cfg: cfg, log: cfg.Log, own: -1, images: imagestore.New(cfg.ImageStore)}
	if err := p.openNetns(); err != nil {
		return nil, err
	}
	p.l = golibvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(cfg.Socket), dialers.WithLocalTimeout(5*time.Second)))
	if err := p.l.Connect(); err != nil {
		p.closeNetns()
		return nil, fmt.Errorf("connect to libvirtd at %s: %w", cfg.Socket, err)
	}
	var err error
	if p.img, err = guestimage.Build(filepath.Join(cfg.StateDir, "images"), guestimage.Options{}); err != nil {
		p.Close()
		return nil, fmt.Errorf("guest image: %w", err)
	}
	// Traversable (qemu, running as its own user, binds the shell sockets here), not listable.
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "console"), 0o711); err != nil {
		p.Close()
		return nil, fmt.Errorf("console dir: %w", err)
	}
	if err := os.Chmod(filepath.Join(cfg.StateDir, "console"), 0o711); err != nil {
		p.Close()
		return nil, fmt.Errorf("console dir: %w", err)
	}
	if err := p.ensurePool(); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Close disconnects from libvirtd.
func (p *Provider) Close() error {
	p.closeNetns()
	return p.l.Disconnect()
}

func (p *Provider) ensurePool() error {
	pool, err := p.l.StoragePoolLookupByName(p.cfg.Pool)
	if err != nil {
		x := p.cfg.PoolXML
		if x == "" {
			if p.cfg.PoolType != "dir" {
				return fmt.Errorf("storage pool %q of type %q does not exist and no pool XML is configured", p.cfg.Pool, p.cfg.PoolType)
			}
			x = fmt.Sprintf("<pool type='dir'><name>%s</name><target><path>%s</path></target></pool>", esc(p.cfg.Pool), esc(p.cfg.PoolPath))
		}
		if pool, err = p.l.StoragePoolDefineXML(x, 0); err != nil {
			return fmt.Errorf("define storage pool %q: %w", p.cfg.Pool, err)
		}
		if p.cfg.PoolType == "dir" {
			if err := p.l.StoragePoolBuild(pool, 0); err != nil {
				return fmt.Errorf("build storage pool %q at %s: %w", p.cfg.Pool, p.cfg.PoolPath, err)
			}
		}
		_ = p.l.StoragePoolSetAutostart(pool, 1)
	}
	if state, _, _, _, err := p.l.StoragePoolGetInfo(pool); err == nil && state != uint8(golibvirt.StoragePoolRunning) {
		if p.cfg.PoolType == "dir" {
			_ = p.l.StoragePoolBuild(pool, 0) // its directory may be gone (a removed state dir)
		}
		if err := p.l.StoragePoolCreate(pool, 0); err != nil {
			return fmt.Errorf("start storage pool %q: %w", p.cfg.Pool, err)
		}
	}
	p.pool = pool
	_ = p.l.StoragePoolRefresh(pool, 0)
	vol, err := p.l.StorageVolLookupByName(pool, baseVolume)
	if err != nil {
		x := fmt.Sprintf("<volume><name>%s</name><capacity unit='MiB'>64</capacity><target><format type='qcow2'/></target></volume>", baseVolume)
		if vol, err = p.l.StorageVolCreateXML(pool, x, 0); err != nil {
			return fmt.Errorf("create base volume %q in pool %q: %w", baseVolume, p.cfg.Pool, err)
		}
	}
	if p.base, err = p.l.StorageVolGetPath(vol); err != nil {
		return fmt.Errorf("path of base volume %q: %w", baseVolume, err)
	}
	return nil
}

func domName(vm string) string { return prefix + vm }
func esc(s string) string      { return html.EscapeString(s) }

// Volume files are owned by a host: NAME@HOST.qcow2 (NAME.qcow2 for a provider without a
// host name), so agents of several hosts may share one storage pool and each deletes only
// its own. Names of VMs and volumes have no '@' (compute.ValidName).
func (p *Provider) owned(base string) string {
	if p.cfg.Host == "" {
		return base + ".qcow2"
	}
	return base + "@" + p.cfg.Host + ".qcow2"
}

// ownedBase is the NAME of a volume file of this host, ok false for another host's (or one
// not named so).
func (p *Provider) ownedBase(file string) (string, bool) {
	base, ok := strings.CutSuffix(file, ".qcow2")
	if !ok {
		return "", false
	}
	if p.cfg.Host == "" {
		return base, !strings.Contains(base, "@")
	}
	return strings.CutSuffix(base, "@"+p.cfg.Host)
}

// rootName is the file of a VM's root overlay: gc-VM-root@HOST.qcow2.
func (p *Provider) rootName(vm string) string { return p.owned(prefix + vm + rootSuffix) }

// dataName is the file of data volume v: gc-vol-V@HOST.qcow2.
func (p *Provider) dataName(v string) string { return p.owned(volPrefix + v) }

// meta is the govcloud metadata element of a domain: whose it is and what it was made from,
// for compute.Decide (Observed) and for the reports.
type meta struct {
	XMLName     xml.Name `xml:"vm"`
	Host        string   `xml:"host,attr"`
	Serves      string   `xml:"serves,attr"` // VIPs on the guest's lo, comma-separated
	Department  string   `xml:"department,attr"`
	Fingerprint string   `xml:"fingerprint,attr"` // compute.Shape of the spec
	VCPUs       int      `xml:"vcpus,attr"`
	MemoryMiB   int      `xml:"memoryMiB,attr"`
	Volumes     string   `xml:"volumes,attr"`   // data volumes, comma-separated
	Addresses   string   `xml:"addresses,attr"` // guest addresses, comma-separated
	Image       string   `xml:"image,attr"`     // compute.ImageName: the root disk's image
	ImageSHA256 string   `xml:"imageSHA256,attr"`
	Generation  int      `xml:"generation,attr"` // the spec's restartGeneration
}

func (p *Provider) meta(d golibvirt.Domain) (meta, bool) {
	s, err := p.l.DomainGetMetadata(d, int32(golibvirt.DomainMetadataElement), golibvirt.OptString{metadataURI}, golibvirt.DomainAffectCurrent)
	if err != nil {
		return meta{}, false
	}
	var m meta
	if err := xml.Unmarshal([]byte(s), &m); err != nil {
		return meta{}, false
	}
	return m, m.Host == p.cfg.Host
}

// setMeta rewrites a running domain's live metadata.
func (p *Provider) setMeta(d golibvirt.Domain, m meta) error {
	return p.l.DomainSetMetadata(d, int32(golibvirt.DomainMetadataElement), golibvirt.OptString{metaXML(m)},
		golibvirt.OptString{"gc"}, golibvirt.OptString{metadataURI}, golibvirt.DomainAffectLive)
}

func metaXML(m meta) string {
	return fmt.Sprintf("<vm host='%s' serves='%s' department='%s' fingerprint='%s' vcpus='%d' memoryMiB='%d' volumes='%s' addresses='%s' image='%s' imageSHA256='%s' generation='%d'/>",
		esc(m.Host), esc(m.Serves), esc(m.Department), esc(m.Fingerprint), m.VCPUs, m.MemoryMiB, esc(m.Volumes), esc(m.Addresses), esc(m.Image), esc(m.ImageSHA256), m.Generation)
}

// Ensure brings the VM to spec, as compute.Decide says: a missing VM is made (defined, then
// started unless spec.PowerState is stopped); one found not running is started again; a change
// of size or shape rewrites the definition and restarts it, disks kept; raising
// RestartGeneration restarts it once; only a change of image makes a new root disk. Domains
// are persistent, so a stopped VM keeps its definition and disks. A running VM whose dsr VIPs
// changed gets them through its shell, without a restart.
func (p *Provider) Ensure(ctx context.Context, s compute.VMSpec) (compute.VMStatus, error) {
	if err := compute.ValidName(s.Name); err != nil {
		return compute.VMStatus{}, err
	}
	if err := checkImages(s); err != nil {
		return compute.VMStatus{}, err
	}
	// A real image is verified (sha256) before anything is made; a mismatch is the VM's error.
	var img rootImage
	if s.ImageFile.Source != "" {
		var err error
		if img.path, err = p.images.Verify(s.ImageFile.Name, s.ImageFile.Source, s.ImageFile.SHA256); err != nil {
			return compute.VMStatus{}, fmt.Errorf("vm %q: %w", s.Name, err)
		}
		if img.size, err = imagestore.QCOW2Size(img.path); err != nil {
			return compute.VMStatus{}, fmt.Errorf("vm %q: image %q: %w", s.Name, s.ImageFile.Name, err)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	d, err := p.l.DomainLookupByName(domName(s.Name))
	exists := err == nil
	var m meta
	if exists {
		var ok bool
		if m, ok = p.meta(d); !ok && m.Host != "" {
			return compute.VMStatus{}, fmt.Errorf("vm %q: domain %s belongs to host %q, not %q", s.Name, domName(s.Name), m.Host, p.cfg.Host)
		}
	}
	obs := p.observe(d, exists, m)
	dec := compute.Decide(s, obs)
	if dec.Action != compute.None {
		p.log.Info("vm lifecycle", "vm", s.Name, "action", dec.Action, "reason", dec.Reason)
	}
	switch dec.Action {
	case compute.None:
		if want := s.ServesText(); obs.Running && m.Serves != want {
			if err := p.setServes(ctx, d, s.Name, m, want); err != nil {
				return p.status(d, s.Name, m), err
			}
			m.Serves = want
		}
		return p.status(d, s.Name, m), nil
	case compute.Recreate:
		if err := p.deleteLocked(s.Name); err != nil {
			return compute.VMStatus{}, fmt.Errorf("vm %q: recreate: %w", s.Name, err)
		}
		exists = false
	}
	if exists && obs.Running && (dec.Action == compute.Stop || dec.Action == compute.Restart) {
		if err := p.stop(ctx, d, s); err != nil {
			return p.status(d, s.Name, m), fmt.Errorf("vm %q: %s: %w", s.Name, dec.Action, err)
		}
	}
	// Every other action (re)writes the definition from the spec, disks kept.
	d, m, err = p.define(ctx, s, img, d, exists)
	if err != nil {
		return compute.VMStatus{}, err
	}
	if s.WantsRunning() && dec.Action != compute.Define {
		if err := p.start(s, d); err != nil {
			return p.status(d, s.Name, m), err
		}
	}
	return p.status(d, s.Name, m), nil
}

// rootImage is a verified image file of the store a root disk is an overlay on (zero: the
// built-in tiny guest's empty base).
type rootImage struct {
	path string
	size uint64
}

// observe reads what compute.Decide needs from a domain and its metadata.
func (p *Provider) observe(d golibvirt.Domain, exists bool, m meta) compute.Observed {
	if !exists {
		return compute.Observed{}
	}
	o := compute.Observed{Exists: true, Image: m.Image, ImageSHA256: m.ImageSHA256, Generation: m.Generation,
		VCPUs: m.VCPUs, MemoryMiB: m.MemoryMiB, Shape: m.Fingerprint}
	if active, err := p.l.DomainIsActive(d); err == nil && active == 1 {
		o.Running = true
	}
	return o
}

// stop powers the VM off: a VM of an image (a real OS) is asked to shut down (ACPI) and given
// Config.StopTimeout; the tiny guest (no ACPI handler) and one that does not stop in time are
// powered off. The definition and the disks stay.
func (p *Provider) stop(ctx context.Context, d golibvirt.Domain, s compute.VMSpec) error {
	if s.ImageFile.Source != "" {
		if err := p.l.DomainShutdown(d); err == nil {
			deadline := time.Now().Add(p.cfg.StopTimeout)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if active, err := p.l.DomainIsActive(d); err == nil && active == 0 {
					return nil
				}
				time.Sleep(200 * time.Millisecond)
			}
			p.log.Warn("vm did not shut down in time: powering it off", "vm", s.Name, "timeout", p.cfg.StopTimeout)
		}
	}
	if err := p.l.DomainDestroy(d); err != nil && !golibvirt.IsNotFound(err) {
		if active, aerr := p.l.DomainIsActive(d); aerr == nil && active == 0 {
			return nil // stopped meanwhile
		}
		return fmt.Errorf("power off domain %s: %w", d.Name, err)
	}
	return nil
}

// start starts the defined VM: its NICs' host side first (a stopped domain has no taps; with
// libvirtd in another namespace, each NIC's bridge and veth pair), then the domain.
func (p *Provider) start(s compute.VMSpec, d golibvirt.Domain) error {
	if active, err := p.l.DomainIsActive(d); err == nil && active == 1 {
		return nil
	}
	for _, n := range s.NICs {
		p.unplug(n.Port) // a leftover tap of a crashed qemu (and its plumbing)
		if err := p.plumb(n); err != nil {
			return fmt.Errorf("vm %q: segment %q: %w", s.Name, n.Segment, err)
		}
	}
	if err := p.l.DomainCreate(d); err != nil {
		return fmt.Errorf("vm %q: start domain %s: %w", s.Name, domName(s.Name), err)
	}
	// The guest's shell is a root shell: only root (and qemu, its owner) may reach its socket.
	if err := os.Chmod(p.ShellSocket(s.Name), 0o600); err != nil {
		return fmt.Errorf("vm %q: guest shell socket: %w", s.Name, err)
	}
	return nil
}

// define writes the VM's persistent definition from spec: its disks (the root overlay and the
// data volumes, each made when missing, never remade), its seed, its metadata. An existing
// domain keeps its UUID; a running one takes the new definition at its next start. A VM made
// here for the first time is removed again (disks included) when this fails.
func (p *Provider) define(ctx context.Context, s compute.VMSpec, img rootImage, old golibvirt.Domain, exists bool) (golibvirt.Domain, meta, error) {
	// Check before making anything: the segment bridges must exist.
	for _, n := range s.NICs {
		if _, err := net.InterfaceByName(n.Bridge); err != nil {
			return old, meta{}, fmt.Errorf("vm %q: bridge %q of segment %q: %w", s.Name, n.Bridge, n.Segment, err)
		}
	}
	var made []golibvirt.StorageVol
	fail := func(err error) (golibvirt.Domain, meta, error) {
		for _, v := range made {
			_ = p.l.StorageVolDelete(v, 0)
		}
		if !exists {
			_ = os.Remove(p.seedPath(s.Name))
		}
		return old, meta{}, err
	}
	rootSize, rootBacking := uint64(64<<20), p.base
	if img.path != "" {
		rootSize, rootBacking = img.size, img.path
	}
	p.adopt(prefix+s.Name+rootSuffix+".qcow2", p.rootName(s.Name))
	root, created, err := p.volume(p.rootName(s.Name), rootSize, rootBacking)
	if err != nil {
		return fail(fmt.Errorf("vm %q: %w", s.Name, err))
	}
	if created && !exists {
		made = append(made, root)
	}
	rp, err := p.l.StorageVolGetPath(root)
	if err != nil {
		return fail(fmt.Errorf("vm %q: path of %s: %w", s.Name, root.Name, err))
	}
	disks := []string{rp}
	if img.path != "" {
		if err = seed.WriteISO(p.seedPath(s.Name), seedConfig(s)); err != nil {
			return fail(fmt.Errorf("vm %q: %w", s.Name, err))
		}
	}
	for _, v := range s.Volumes {
		backing := ""
		if v.Image != "" {
			backing = p.base
		}
		var vol golibvirt.StorageVol
		var created bool
		p.adopt(volPrefix+v.Name+".qcow2", p.dataName(v.Name))
		if _, lerr := p.l.StorageVolLookupByName(p.pool, p.dataName(v.Name)); lerr != nil && v.RestoreFrom != "" {
			// A volume made from a backup; one that exists is never overwritten.
			vol, err = p.restoreVolume(ctx, p.dataName(v.Name), uint64(v.SizeGiB)<<30, v.RestoreFrom)
			created = true
		} else {
			vol, created, err = p.volume(p.dataName(v.Name), uint64(v.SizeGiB)<<30, backing)
		}
		if err != nil {
			return fail(fmt.Errorf("vm %q: volume %q: %w", s.Name, v.Name, err))
		}
		if created {
			made = append(made, vol)
		}
		vp, err := p.l.StorageVolGetPath(vol)
		if err != nil {
			return fail(fmt.Errorf("vm %q: path of volume %q: %w", s.Name, v.Name, err))
		}
		disks = append(disks, vp)
	}
	m := meta{Host: p.cfg.Host, Serves: s.ServesText(), Department: s.Department, Fingerprint: compute.Shape(s),
		VCPUs: s.VCPUs, MemoryMiB: s.MemoryMiB, Image: compute.ImageName(s), ImageSHA256: s.ImageFile.SHA256, Generation: s.RestartGeneration}
	var vols []string
	for _, v := range s.Volumes {
		vols = append(vols, v.Name)
	}
	m.Volumes = strings.Join(vols, ",")
	var addrs []string
	for _, n := range s.NICs {
		for _, a := range []netip.Prefix{n.Addr, n.Addr6} {
			if a.IsValid() {
				addrs = append(addrs, a.Addr().String())
			}
		}
	}
	m.Addresses = strings.Join(addrs, ",")
	uuid := ""
	if exists {
		uuid = uuidText(old.UUID)
	}
	dx, err := p.domainXML(s, m, disks, uuid)
	if err != nil {
		return fail(fmt.Errorf("vm %q: %w", s.Name, err))
	}
	d, err := p.l.DomainDefineXML(dx)
	if err != nil {
		return fail(fmt.Errorf("vm %q: define domain %s: %w", s.Name, domName(s.Name), err))
	}
	// A running domain takes the new definition at its next start; the metadata the next
	// pass reads must say what runs now, so the live copy changes only when it is true now:
	// the generation (recorded without a restart) and the VIPs (changed in the guest).
	if active, err := p.l.DomainIsActive(d); err == nil && active == 1 {
		if live, ok := p.meta(d); ok {
			live.Generation = s.RestartGeneration
			_ = p.setMeta(d, live)
			m = live
		}
	}
	return d, m, nil
}

// adopt renames a volume file made before files carried their host (gc-vol-NAME.qcow2,
// gc-VM-root.qcow2) to this host's name for it, when this host has none yet: the controller
// placed the VM using it here, so it is this host's. Only in a dir pool (a file rename; other
// pool types cannot rename a volume) and only for a provider with a host name.
func (p *Provider) adopt(legacy, name string) {
	if p.cfg.Host == "" || p.cfg.PoolType != "dir" || legacy == name {
		return
	}
	if _, err := p.l.StorageVolLookupByName(p.pool, name); err == nil {
		return
	}
	v, err := p.l.StorageVolLookupByName(p.pool, legacy)
	if err != nil {
		return
	}
	path, err := p.l.StorageVolGetPath(v)
	if err != nil {
		return
	}
	if err := os.Rename(path, filepath.Join(filepath.Dir(path), name)); err != nil {
		p.log.Warn("adopting a volume named without its host", "volume", legacy, "as", name, "err", err)
		return
	}
	_ = p.l.StoragePoolRefresh(p.pool, 0)
	p.log.Info("adopted a volume named without its host", "volume", legacy, "as", name)
}

func uuidText(u golibvirt.UUID) string {
	b := u[:]
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// TinyImage is the built-in image: the guestimage built on this host, booted directly (kernel,
// initramfs). Other images are files of the image store (VMSpec.ImageFile) that boot from
// their own disk.
const TinyImage = "tiny"

func checkImages(s compute.VMSpec) error {
	if s.Image != "" && s.Image != TinyImage && s.ImageFile.Source == "" {
		return fmt.Errorf("vm %q: image %q: no Image object for it reached this host (only the built-in %q needs none)", s.Name, s.Image, TinyImage)
	}
	for _, v := range s.Volumes {
		if v.Image != "" && v.Image != TinyImage {
			return fmt.Errorf("vm %q: volume %q: image %q: a data volume can start only from the built-in %q image on this host", s.Name, v.Name, v.Image, TinyImage)
		}
	}
	return nil
}

// volume returns the named volume of the pool, creating it (a qcow2 overlay on backing when
// backing is set) when absent.
func (p *Provider) volume(name string, size uint64, backing string) (golibvirt.StorageVol, bool, error) {
	if v, err := p.l.StorageVolLookupByName(p.pool, name); err == nil {
		return v, false, nil
	}
	x := fmt.Sprintf("<volume><name>%s</name><capacity unit='bytes'>%d</capacity><target><format type='qcow2'/></target>", esc(name), size)
	if backing != "" {
		x += fmt.Sprintf("<backingStore><path>%s</path><format type='qcow2'/></backingStore>", esc(backing))
	}
	x += "</volume>"
	v, err := p.l.StorageVolCreateXML(p.pool, x, 0)
	if err != nil {
		return v, false, fmt.Errorf("create volume %q in pool %q: %w", name, p.cfg.Pool, err)
	}
	return v, true, nil
}

func (p *Provider) consoleLog(vm string) string {
	return filepath.Join(p.cfg.StateDir, "console", domName(vm)+".log")
}

// ShellSocket is the unix socket of the guest's shell (its second serial port), for
// guestimage.Run.
func (p *Provider) ShellSocket(vm string) string {
	return filepath.Join(p.cfg.StateDir, "console", domName(vm)+".sock")
}

// seedPath is the VM's NoCloud seed image (VMs of the image store's images have one).
func (p *Provider) seedPath(vm string) string {
	return filepath.Join(p.cfg.StateDir, "console", domName(vm)+"-seed.iso")
}

func seedConfig(s compute.VMSpec) seed.Config {
	c := seed.Config{InstanceID: s.Name, Hostname: s.Name, SSHKeys: s.SSHKeys}
	for _, n := range s.NICs {
		c.NICs = append(c.NICs, seed.NIC{MAC: n.MAC, Addr: n.Addr, Gateway: n.Gateway, Addr6: n.Addr6, Gateway6: n.Gateway6})
	}
	return c
}

// ConsoleLog returns what the VM printed on its serial console so far.
func (p *Provider) ConsoleLog(vm string) string {
	b, _ := os.ReadFile(p.consoleLog(vm))
	return string(b)
}

// domainXML is the domain of VM s (libvirtxml): the tiny guest boots its kernel and initramfs
// directly with the NICs on the command line; a VM of the image store boots its root disk
// (disks[0], an overlay on the verified image) and reads its NoCloud seed from a read-only disk
// after the others. Every VM has its console log on ttyS0, the tiny guest's shell socket on
// ttyS1 and a QEMU guest agent channel (GuestAgentSocket).
func (p *Provider) domainXML(s compute.VMSpec, m meta, disks []string, uuid string) (string, error) {
	vcpus, mem := max(s.VCPUs, 1), max(s.MemoryMiB, 96)
	port0, port1 := uint(0), uint(1)
	d := libvirtxml.Domain{
		Type:     "qemu",
		Name:     domName(s.Name),
		UUID:     uuid,
		Metadata: &libvirtxml.DomainMetadata{XML: strings.Replace(metaXML(m), "<vm ", fmt.Sprintf("<gc:vm xmlns:gc='%s' ", metadataURI), 1)},
		Memory:   &libvirtxml.DomainMemory{Value: uint(mem), Unit: "MiB"},
		VCPU:     &libvirtxml.DomainVCPU{Value: uint(vcpus)},
		OS:       &libvirtxml.DomainOS{Type: &libvirtxml.DomainOSType{Arch: "x86_64", Machine: "pc", Type: "hvm"}},
		// A reboot inside the guest keeps its qemu; a power-off or crash leaves the domain
		// stopped (defined, disks kept), and the agent starts it again unless it is wanted
		// stopped.
		OnPoweroff: "destroy", OnReboot: "restart", OnCrash: "destroy",
		Devices: &libvirtxml.DomainDeviceList{Emulator: p.cfg.Emulator},
	}
	if s.ImageFile.Source == "" {
		var nics []guestimage.NIC
		for _, n := range s.NICs {
			nics = append(nics, guestimage.NIC{Addr: n.Addr, Gateway: n.Gateway, Addr6: n.Addr6, Gateway6: n.Gateway6})
		}
		d.OS.Kernel, d.OS.Initrd, d.OS.Cmdline = p.img.Kernel, p.img.Initrd, guestimage.Cmdline(s.Name, nics, s.Serves)
	} else {
		d.OS.BootDevices = []libvirtxml.DomainBootDevice{{Dev: "hd"}}
	}
	dev := d.Devices
	for i, path := range disks {
		dev.Disks = append(dev.Disks, libvirtxml.DomainDisk{Device: "disk",
			Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "qcow2"},
			Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: path}},
			Target: &libvirtxml.DomainDiskTarget{Dev: fmt.Sprintf("vd%c", 'a'+i), Bus: "virtio"}})
	}
	if s.ImageFile.Source != "" {
		dev.Disks = append(dev.Disks, libvirtxml.DomainDisk{Device: "disk",
			Driver:   &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "raw"},
			Source:   &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: p.seedPath(s.Name)}},
			Target:   &libvirtxml.DomainDiskTarget{Dev: fmt.Sprintf("vd%c", 'a'+len(disks)), Bus: "virtio"},
			ReadOnly: &libvirtxml.DomainDiskReadOnly{}})
	}
	for _, n := range s.NICs {
		ifc := libvirtxml.DomainInterface{
			Source: &libvirtxml.DomainInterfaceSource{Bridge: &libvirtxml.DomainInterfaceSourceBridge{Bridge: p.bridgeFor(n)}},
			Target: &libvirtxml.DomainInterfaceTarget{Dev: n.Port},
			Model:  &libvirtxml.DomainInterfaceModel{Type: "virtio"},
			// No checksum or segmentation offload: the guest's frames are complete when they
			// reach the host's XDP and TC programs (which do not finish partial checksums).
			Driver: &libvirtxml.DomainInterfaceDriver{Name: "qemu",
				Host:  &libvirtxml.DomainInterfaceDriverHost{CSum: "off", GSO: "off", TSO4: "off", TSO6: "off", ECN: "off", UFO: "off"},
				Guest: &libvirtxml.DomainInterfaceDriverGuest{CSum: "off", TSO4: "off", TSO6: "off", ECN: "off", UFO: "off"}},
		}
		if len(n.MAC) > 0 {
			ifc.MAC = &libvirtxml.DomainInterfaceMAC{Address: n.MAC.String()}
		}
		dev.Interfaces = append(dev.Interfaces, ifc)
	}
	dev.Serials = []libvirtxml.DomainSerial{
		{Source: &libvirtxml.DomainChardevSource{File: &libvirtxml.DomainChardevSourceFile{Path: p.consoleLog(s.Name)}}, Target: &libvirtxml.DomainSerialTarget{Port: &port0}},
		{Source: &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind", Path: p.ShellSocket(s.Name)}}, Target: &libvirtxml.DomainSerialTarget{Port: &port1}},
	}
	dev.Channels = []libvirtxml.DomainChannel{{
		Source: &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind", Path: p.GuestAgentSocket(s.Name)}},
		Target: &libvirtxml.DomainChannelTarget{VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: "org.qemu.guest_agent.0"}},
	}}
	dev.MemBalloon = &libvirtxml.DomainMemBalloon{Model: "none"}
	x, err := d.Marshal()
	if err != nil {
		return "", fmt.Errorf("domain XML of %s: %w", d.Name, err)
	}
	return x, nil
}

type domXML struct {
	Devices struct {
		Interfaces []struct {
			Target struct {
				Dev string `xml:"dev,attr"`
			} `xml:"target"`
		} `xml:"interface"`
	} `xml:"devices"`
}

func (p *Provider) ports(d golibvirt.Domain) []string {
	x, err := p.l.DomainGetXMLDesc(d, 0)
	if err != nil {
		return nil
	}
	var dx domXML
	if xml.Unmarshal([]byte(x), &dx) != nil {
		return nil
	}
	var out []string
	for _, i := range dx.Devices.Interfaces {
		out = append(out, i.Target.Dev)
	}
	return out
}

func (p *Provider) status(d golibvirt.Domain, vm string, m meta) compute.VMStatus {
	st := compute.VMStatus{Name: vm, Department: m.Department, State: compute.Error}
	state, _, err := p.l.DomainGetState(d, 0)
	if err != nil {
		st.Message = err.Error()
		return st
	}
	switch golibvirt.DomainState(state) {
	case golibvirt.DomainRunning, golibvirt.DomainBlocked:
		st.State = compute.Running
	case golibvirt.DomainShutoff, golibvirt.DomainShutdown:
		st.State = compute.Stopped
	case golibvirt.DomainPaused, golibvirt.DomainPmsuspended:
		st.State = compute.Stopped
		st.Message = "paused"
	case golibvirt.DomainNostate:
		st.State = compute.Creating
	default:
		st.Message = fmt.Sprintf("domain state %d", state)
	}
	st.Ports = p.ports(d)
	if m.Addresses != "" {
		st.Addresses = strings.Split(m.Addresses, ",")
	}
	if b, err := os.ReadFile(filepath.Join("/run/libvirt/qemu", domName(vm)+".pid")); err == nil {
		st.PID, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	return st
}

// Delete destroys the VM, its root overlay, its taps and its console log. Data volumes stay
// (they are resources of their own, removed by PruneVolumes).
func (p *Provider) Delete(ctx context.Context, name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.deleteLocked(name)
}

func (p *Provider) deleteLocked(name string) error {
	var errs []error
	if d, err := p.l.DomainLookupByName(domName(name)); err == nil {
		ports := p.ports(d)
		// A stopped (defined, not running) domain has nothing to destroy.
		if active, err := p.l.DomainIsActive(d); err != nil || active == 1 {
			if err := p.l.DomainDestroy(d); err != nil && !golibvirt.IsNotFound(err) {
				if active, aerr := p.l.DomainIsActive(d); aerr != nil || active == 1 {
					errs = append(errs, fmt.Errorf("destroy domain %s: %w", domName(name), err))
				}
			}
		}
		// A persistent domain (defined by someone by hand under our prefix) goes too.
		if err := p.l.DomainUndefineFlags(d, golibvirt.DomainUndefineNvram); err != nil && !golibvirt.IsNotFound(err) {
			var le golibvirt.Error
			if !errors.As(err, &le) || le.Code != uint32(golibvirt.ErrOperationInvalid) {
				errs = append(errs, fmt.Errorf("undefine domain %s: %w", domName(name), err))
			}
		}
		for _, port := range ports {
			p.unplug(port)
		}
	}
	if v, err := p.l.StorageVolLookupByName(p.pool, p.rootName(name)); err == nil {
		if err := p.l.StorageVolDelete(v, 0); err != nil {
			errs = append(errs, fmt.Errorf("delete volume %s: %w", p.rootName(name), err))
		}
	}
	_ = os.Remove(p.consoleLog(name))
	_ = os.Remove(p.ShellSocket(name))
	_ = os.Remove(p.seedPath(name))
	return errors.Join(errs...)
}

// List reports every owned VM: running domains, and root overlays without a domain (leftovers
// of a crash between creating the disk and starting the domain) in state error.
func (p *Provider) List(ctx context.Context) ([]compute.VMStatus, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	doms, _, err := p.l.ConnectListAllDomains(1, 0)
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	seen := map[string]bool{}
	var out []compute.VMStatus
	for _, d := range doms {
		if !strings.HasPrefix(d.Name, prefix) {
			continue
		}
		m, ok := p.meta(d)
		if !ok {
			continue // not ours: no govcloud metadata
		}
		vm := strings.TrimPrefix(d.Name, prefix)
		seen[vm] = true
		out = append(out, p.status(d, vm, m))
	}
	vols, err := p.ownedVolumes()
	if err != nil {
		return nil, err
	}
	for _, v := range vols {
		base, _ := p.ownedBase(v.Name)
		if vm, ok := strings.CutSuffix(strings.TrimPrefix(base, prefix), rootSuffix); ok && !strings.HasPrefix(base, volPrefix) && !seen[vm] {
			seen[vm] = true
			out = append(out, compute.VMStatus{Name: vm, State: compute.Error, Message: "root volume without a domain"})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (p *Provider) ownedVolumes() ([]golibvirt.StorageVol, error) {
	_ = p.l.StoragePoolRefresh(p.pool, 0)
	vols, _, err := p.l.StoragePoolListAllVolumes(p.pool, 1, 0)
	if err != nil {
		return nil, fmt.Errorf("list volumes of pool %q: %w", p.cfg.Pool, err)
	}
	var out []golibvirt.StorageVol
	for _, v := range vols {
		if _, mine := p.ownedBase(v.Name); mine && strings.HasPrefix(v.Name, prefix) && v.Name != baseVolume {
			out = append(out, v)
		}
	}
	return out, nil
}

// Volumes lists the names of this host's volumes (root overlays and data volumes), for leak
// checks; another host's in a shared pool are not listed.
func (p *Provider) Volumes(ctx context.Context) ([]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	vols, err := p.ownedVolumes()
	var out []string
	for _, v := range vols {
		out = append(out, v.Name)
	}
	sort.Strings(out)
	return out, err
}

// PruneVolumes deletes this host's data volumes whose names are not in keep; another host's
// volumes in a shared pool are never touched.
func (p *Provider) PruneVolumes(ctx context.Context, keep map[string]bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	vols, err := p.ownedVolumes()
	if err != nil {
		return err
	}
	var errs []error
	for _, v := range vols {
		base, _ := p.ownedBase(v.Name)
		name, ok := strings.CutPrefix(base, volPrefix)
		if !ok || keep[name] {
			continue
		}
		p.log.Info("deleting volume", "volume", v.Name)
		if err := p.l.StorageVolDelete(v, 0); err != nil {
			errs = append(errs, fmt.Errorf("delete volume %s: %w", v.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Usage reports each VM's CPU time, memory and the allocation of its volumes.
func (p *Provider) Usage(ctx context.Context) ([]compute.Usage, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	doms, _, err := p.l.ConnectListAllDomains(1, 0)
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	var out []compute.Usage
	for _, d := range doms {
		m, ok := p.meta(d)
		if !ok || !strings.HasPrefix(d.Name, prefix) {
			continue
		}
		state, _, memKiB, nrCPU, cpuNs, err := p.l.DomainGetInfo(d)
		if err != nil {
			continue // gone meanwhile
		}
		vm := strings.TrimPrefix(d.Name, prefix)
		u := compute.Usage{VM: vm, Department: m.Department}
		if golibvirt.DomainState(state) != golibvirt.DomainShutoff {
			// A stopped VM takes no vCPUs or memory; its disks it keeps.
			u.VCPUs, u.VCPUSeconds, u.MemoryBytes = int(nrCPU), float64(cpuNs)/1e9, memKiB<<10
		}
		vols := map[string]string{compute.RootVolume(vm): p.rootName(vm)} // reported name -> pool volume
		for _, v := range strings.Split(m.Volumes, ",") {
			if v != "" {
				vols[v] = p.dataName(v)
			}
		}
		for _, name := range slices.Sorted(maps.Keys(vols)) {
			if v, err := p.l.StorageVolLookupByName(p.pool, vols[name]); err == nil {
				if _, _, alloc, err := p.l.StorageVolGetInfo(v); err == nil {
					u.VolumeBytes += alloc
					u.Volumes = append(u.Volumes, compute.VolumeUsage{Name: name, AllocatedBytes: alloc})
				}
			}
		}
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VM < out[j].VM })
	return out, nil
}

// RemoveAll deletes every VM of this host with its taps and every volume of this host; then,
// unless another host's volumes are left in the pool (a shared pool), the base volume and
// the storage pool itself: for taking down a whole installation (the lab's down).
func (p *Provider) RemoveAll(ctx context.Context) error {
	vms, err := p.List(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, vm := range vms {
		errs = append(errs, p.Delete(ctx, vm.Name))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	vols, _, err := p.l.StoragePoolListAllVolumes(p.pool, 1, 0)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list volumes of pool %q: %w", p.cfg.Pool, err))...)
	}
	others := 0
	for _, v := range vols {
		if _, mine := p.ownedBase(v.Name); !strings.HasPrefix(v.Name, prefix) || v.Name == baseVolume || !mine {
			if strings.HasPrefix(v.Name, prefix) && v.Name != baseVolume {
				others++
			}
			continue
		}
		if err := p.l.StorageVolDelete(v, 0); err != nil {
			errs = append(errs, fmt.Errorf("delete volume %s: %w", v.Name, err))
		}
	}
	if others > 0 {
		return errors.Join(errs...)
	}
	if v, err := p.l.StorageVolLookupByName(p.pool, baseVolume); err == nil {
		if err := p.l.StorageVolDelete(v, 0); err != nil {
			errs = append(errs, fmt.Errorf("delete volume %s: %w", baseVolume, err))
		}
	}
	if err := p.l.StoragePoolDestroy(p.pool); err != nil && !golibvirt.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("stop storage pool %q: %w", p.cfg.Pool, err))
	}
	if err := p.l.StoragePoolUndefine(p.pool); err != nil && !golibvirt.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("undefine storage pool %q: %w", p.cfg.Pool, err))
	}
	return errors.Join(errs...)
}

// StartDaemon starts virtlogd and libvirtd (hosts and CI without systemd) unless the socket
// answers already, and waits up to 15 s for it.
func StartDaemon(ctx context.Context, socket string) error {
	if socket == "" {
		socket = "/run/libvirt/libvirt-sock"
	}
	if c, err := net.Dial("unix", socket); err == nil {
		c.Close()
		return nil
	}
	for _, d := range []string{"/var/log/libvirt", "/run/libvirt"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("libvirt dir %s: %w", d, err)
		}
	}
	for _, bin := range []string{"virtlogd", "libvirtd"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s not found (install libvirt-daemon-system): %w", bin, err)
		}
	}
	_ = exec.CommandContext(ctx, "virtlogd", "-d").Run() // already running is fine
	// Another process may be starting it right now (tests run packages in parallel): then this
	// libvirtd exits at once, and the socket still comes up.
	out, startErr := exec.CommandContext(ctx, "libvirtd", "-d").CombinedOutput()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	if startErr != nil {
		return fmt.Errorf("start libvirtd: %v: %s", startErr, out)
	}
	return fmt.Errorf("libvirtd did not open %s within 15s", socket)
}

// Sweep deletes tap devices named like guest ports that no domain uses (left when qemu died
// without libvirtd cleaning up). Veth ports (the namespace provider's) are not touched.
func (p *Provider) Sweep(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	doms, _, err := p.l.ConnectListAllDomains(1, 0)
	if err != nil {
		return fmt.Errorf("list domains: %w", err)
	}
	used := map[string]bool{}
	for _, d := range doms {
		for _, port := range p.ports(d) {
			used[port] = true
		}
	}
	links, err := p.lh.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var errs []error
	for _, l := range links {
		name := l.Attrs().Name
		if l.Type() != "tuntap" || !desired.IsGuestPort(name) || used[name] {
			continue
		}
		if l.Attrs().OperState == netlink.OperUp {
			continue // a process holds it (a domain starting right now): not a leftover
		}
		p.log.Info("deleting leftover tap", "tap", name)
		if err := p.lh.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete leftover tap %s: %w", name, err))
		}
	}
	errs = append(errs, p.sweepPlumbing(used))
	return errors.Join(errs...)
}
