package config

import (
	"encoding/base64"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// VLAN limits (802.1Q: 0 and 4095 are reserved).
const (
	MinVLAN = 1
	MaxVLAN = 4094
)

// ValidateObject checks one object on its own, one function per kind (MetalLB's config.For is
// the model); Validate checks objects against each other.
func ValidateObject(o *Object) Errors {
	c := &objectCheck{o: o}
	switch s := o.Spec.(type) {
	case *DepartmentSpec:
		c.department(s)
	case *SegmentSpec:
		c.segment(s)
	case *AddressPool:
		c.addressPool(s)
	case *ServiceSpec:
		c.service(s)
	case *HostSpec:
		c.host(s)
	case *VMSpec:
		c.vm(s)
	case *VolumeSpec:
		c.volume(s)
	case *ImageSpec:
		c.image(s)
	case *PriceListSpec:
		c.priceList(s)
	case *SecurityPolicySpec:
		c.securityPolicy(s)
	}
	return c.es
}

// objectCheck collects the errors of one object.
type objectCheck struct {
	o  *Object
	es Errors
}

func (c *objectCheck) bad(field, value, format string, args ...any) {
	c.es = c.es.Add(errAt(c.o, field, value, format, args...))
}

// need reports a missing required field; it returns whether the field is set.
func (c *objectCheck) need(field, value string) bool {
	if value == "" {
		c.bad(field, "", "required")
		return false
	}
	return true
}

func (c *objectCheck) nonNeg(field string, p *int) {
	if p != nil && *p < 0 {
		c.bad(field, strconv.Itoa(*p), "must not be negative")
	}
}

func (c *objectCheck) department(s *DepartmentSpec) {
	c.nonNeg("spec.quotas.vcpus", s.Quotas.VCPUs)
	c.nonNeg("spec.quotas.memoryGiB", s.Quotas.MemoryGiB)
	c.nonNeg("spec.quotas.storageGiB", s.Quotas.StorageGiB)
	c.nonNeg("spec.quotas.bandwidthMbps", s.Quotas.BandwidthMbps)
}

func (c *objectCheck) segment(s *SegmentSpec) {
	c.need("spec.department", s.Department)
	if s.Fabric != "" && !nameRE.MatchString(s.Fabric) {
		c.bad("spec.fabric", s.Fabric, "must be a lower-case name")
	}
	if s.VLAN != nil && (*s.VLAN < MinVLAN || *s.VLAN > MaxVLAN) {
		c.bad("spec.vlan", strconv.Itoa(*s.VLAN), "VLAN ID must be from %d to %d (0 and 4095 are reserved); omit it to have one allocated", MinVLAN, MaxVLAN)
	}
	if c.need("spec.ipv4", s.IPv4) {
		if p, ok := prefix(c.bad, "spec.ipv4", s.IPv4, false); ok {
			if p.Bits() > 30 {
				c.bad("spec.ipv4", s.IPv4, "prefix too small for hosts (want /30 or larger)")
			} else if s.Gateway != "" {
				gatewayIn(c.bad, "spec.gateway", s.Gateway, p)
			}
		}
	}
	if s.IPv6 != "" {
		if p, ok := prefix(c.bad, "spec.ipv6", s.IPv6, true); ok {
			if p.Bits() > 126 { // room for the gateway and a guest besides the subnet-router anycast address
				c.bad("spec.ipv6", s.IPv6, "prefix too small for hosts (want /126 or larger; /64 is usual)")
			} else if s.Gateway6 != "" {
				gatewayIn(c.bad, "spec.gateway6", s.Gateway6, p)
			}
		}
	} else if s.Gateway6 != "" {
		c.bad("spec.gateway6", s.Gateway6, "given without spec.ipv6")
	}
}

func (c *objectCheck) addressPool(s *AddressPool) {
	if len(s.CIDRs) == 0 {
		c.bad("spec.cidrs", "", "at least one CIDR required")
	}
	ps := make([]netip.Prefix, len(s.CIDRs)) // invalid ones stay zero
	for i, cidr := range s.CIDRs {
		if p, ok := prefix(c.bad, fmt.Sprintf("spec.cidrs[%d]", i), cidr, cidr != "" && strings.Contains(cidr, ":")); ok {
			ps[i] = p
		}
	}
	for _, pair := range overlapping(ps) {
		i, j := pair[0], pair[1]
		c.bad(fmt.Sprintf("spec.cidrs[%d]", i), s.CIDRs[i], "overlaps %s in the same pool", ps[j])
	}
	if len(s.Departments) == 0 {
		c.bad("spec.departments", "", "list the departments that may draw from this pool, or [\"*\"] for every department")
	}
	for i, d := range s.Departments {
		if d == AllDepartments && len(s.Departments) > 1 {
			c.bad(fmt.Sprintf("spec.departments[%d]", i), d, "\"*\" already means every department: give it alone")
		}
	}
	if s.Scope != "" && s.Scope != "public" && s.Scope != "internal" {
		c.bad("spec.scope", s.Scope, "want public or internal")
	}
}

func (c *objectCheck) service(s *ServiceSpec) {
	c.need("spec.department", s.Department)
	if s.IPFamily != "" && s.IPFamily != "ipv4" && s.IPFamily != "ipv6" {
		c.bad("spec.ipFamily", s.IPFamily, "want ipv4 or ipv6")
	}
	if s.VIP != "" {
		a, err := netip.ParseAddr(s.VIP)
		if err != nil || a.Zone() != "" {
			c.bad("spec.vip", s.VIP, "not an IP address")
		} else if (s.IPFamily == "ipv4" && !a.Is4()) || (s.IPFamily == "ipv6" && !a.Is6()) {
			c.bad("spec.vip", s.VIP, "does not match ipFamily %s", s.IPFamily)
		}
	}
	if len(s.Ports) == 0 {
		c.bad("spec.ports", "", "at least one port required")
	}
	seen := map[string]int{}
	for i, p := range s.Ports {
		f := fmt.Sprintf("spec.ports[%d]", i)
		if p.Port < 1 || p.Port > 65535 {
			c.bad(f+".port", strconv.Itoa(p.Port), "must be from 1 to 65535")
		}
		if p.TargetPort < 0 || p.TargetPort > 65535 {
			c.bad(f+".targetPort", strconv.Itoa(p.TargetPort), "must be from 1 to 65535")
		}
		proto := p.Protocol
		if proto == "" {
			proto = "tcp"
		}
		if proto != "tcp" && proto != "udp" {
			c.bad(f+".protocol", p.Protocol, "want tcp or udp")
		}
		k := fmt.Sprintf("%d/%s", p.Port, proto)
		if j, dup := seen[k]; dup {
			c.bad(f, k, "same port as spec.ports[%d]", j)
		}
		seen[k] = i
	}
	for i, b := range s.Backends {
		f := fmt.Sprintf("spec.backends[%d]", i)
		switch {
		case (b.VM == "") == (b.Address == ""):
			c.bad(f, "", "give exactly one of vm or address")
		case b.Address != "":
			if a, err := netip.ParseAddr(b.Address); err != nil || a.Zone() != "" {
				c.bad(f+".address", b.Address, "not an IP address")
			}
		}
		if b.Weight != nil && (*b.Weight < 0 || *b.Weight > 65535) {
			c.bad(f+".weight", strconv.Itoa(*b.Weight), "must be from 0 to 65535")
		}
	}
	if s.HealthCheck != nil {
		c.healthCheck(s.HealthCheck)
	}
	if s.Mode != "" && s.Mode != "nat" && s.Mode != "dsr" {
		c.bad("spec.mode", s.Mode, "want nat or dsr")
	}
}

// Bounds on sizes and times: whatever one object asks for stays within what a host, the
// agent and the store can take.
const (
	MaxVMMemoryMiB      = 4 << 20  // 4 TiB
	MaxVolumeGiB        = 64 << 10 // 64 TiB
	MaxHealthInterval   = time.Hour
	MaxHealthThreshold  = 100
	MaxHealthPathLength = 1024
)

// healthCheck: the probe goes to the backend's own address and port, so the path must be a
// plain absolute path (no scheme, host, query smuggling or control characters), and times and
// thresholds are bounded.
func (c *objectCheck) healthCheck(h *HealthCheck) {
	if h.Type != "tcp" && h.Type != "http" {
		c.bad("spec.healthCheck.type", h.Type, "want tcp or http")
	}
	if h.Path != "" {
		switch {
		case h.Type != "http":
			c.bad("spec.healthCheck.path", h.Path, "only for type http")
		case len(h.Path) > MaxHealthPathLength:
			c.bad("spec.healthCheck.path", h.Path[:32]+"...", "longer than %d bytes", MaxHealthPathLength)
		case !strings.HasPrefix(h.Path, "/") || strings.HasPrefix(h.Path, "//"):
			c.bad("spec.healthCheck.path", h.Path, "want an absolute path such as /healthz (the probe goes to the backend itself)")
		case strings.ContainsFunc(h.Path, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '#' }):
			c.bad("spec.healthCheck.path", h.Path, "must not contain spaces, control characters or '#'")
		}
	}
	if h.Port < 0 || h.Port > 65535 {
		c.bad("spec.healthCheck.port", strconv.Itoa(h.Port), "must be from 1 to 65535")
	}
	var interval, timeout time.Duration
	for _, d := range []struct {
		field, value string
		to           *time.Duration
	}{{"spec.healthCheck.interval", h.Interval, &interval}, {"spec.healthCheck.timeout", h.Timeout, &timeout}} {
		if d.value == "" {
			continue
		}
		v, err := time.ParseDuration(d.value)
		switch {
		case err != nil || v <= 0:
			c.bad(d.field, d.value, "want a positive duration such as 5s")
		case v < 100*time.Millisecond || v > MaxHealthInterval:
			c.bad(d.field, d.value, "must be from 100ms to %s", MaxHealthInterval)
		default:
			*d.to = v
		}
	}
	if interval > 0 && timeout > interval {
		c.bad("spec.healthCheck.timeout", h.Timeout, "longer than the interval %s", h.Interval)
	}
	for _, t := range []struct {
		field string
		v     int
	}{{"spec.healthCheck.healthyThreshold", h.HealthyThreshold}, {"spec.healthCheck.unhealthyThreshold", h.UnhealthyThreshold}} {
		if t.v < 0 || t.v > MaxHealthThreshold {
			c.bad(t.field, strconv.Itoa(t.v), "must be from 0 (default) to %d", MaxHealthThreshold)
		}
	}
}

func (c *objectCheck) host(s *HostSpec) {
	if cp := s.Capacity; cp != nil {
		if cp.VCPUs < 0 || cp.VCPUs > 1<<16 {
			c.bad("spec.capacity.vcpus", strconv.Itoa(cp.VCPUs), "must be from 0 (no limit) to %d", 1<<16)
		}
		if cp.MemoryMiB < 0 || cp.MemoryMiB > 1<<30 {
			c.bad("spec.capacity.memoryMiB", strconv.Itoa(cp.MemoryMiB), "must be from 0 (no limit) to %d", 1<<30)
		}
		if cp.DiskGiB < 0 || cp.DiskGiB > 1<<30 {
			c.bad("spec.capacity.diskGiB", strconv.Itoa(cp.DiskGiB), "must be from 0 (no limit) to %d", 1<<30)
		}
		if o := cp.Overcommit; o != nil {
			for _, r := range []struct {
				field string
				v     float64
			}{{"vcpus", o.VCPUs}, {"memory", o.Memory}, {"disk", o.Disk}} {
				if r.v != 0 && !(r.v >= 1 && r.v <= 64) {
					c.bad("spec.capacity.overcommit."+r.field, strconv.FormatFloat(r.v, 'g', -1, 64), "must be 0 (meaning 1) or from 1 to 64")
				}
			}
		}
	}
	c.need("spec.uplink", s.Uplink)
	if c.need("spec.address", s.Address) {
		if _, err := netip.ParseAddr(s.Address); err != nil {
			c.bad("spec.address", s.Address, "not an IP address")
		}
	}
	if s.RouterID != "" {
		if a, err := netip.ParseAddr(s.RouterID); err != nil || !a.Is4() {
			c.bad("spec.routerID", s.RouterID, "want an IPv4 address")
		}
	}
	for i, p := range s.BGPPeers {
		f := fmt.Sprintf("spec.bgpPeers[%d]", i)
		if _, err := netip.ParseAddr(p.Address); err != nil {
			c.bad(f+".address", p.Address, "not an IP address")
		}
		switch p.ASN {
		case 0:
			c.bad(f+".asn", "0", "required (1-4294967294)")
		case 23456:
			c.bad(f+".asn", "23456", "AS_TRANS (RFC 6793) is no peer's ASN")
		case 4294967295:
			c.bad(f+".asn", "4294967295", "reserved (RFC 7300)")
		}
		if b := p.BFD; b != nil {
			for _, v := range []struct {
				name string
				ms   int
			}{{"minTxMs", b.MinTxMs}, {"minRxMs", b.MinRxMs}} {
				if v.ms != 0 && (v.ms < 10 || v.ms > 60000) {
					c.bad(f+".bfd."+v.name, strconv.Itoa(v.ms), "must be 0 (default 300) or from 10 to 60000 ms")
				}
			}
			if b.Multiplier < 0 || b.Multiplier > 255 {
				c.bad(f+".bfd.multiplier", strconv.Itoa(b.Multiplier), "must be 0 (default 3) or from 1 to 255")
			}
			if p.Multihop > 1 {
				c.bad(f+".bfd", "", "BFD is single hop (RFC 5881): not with multihop %d", p.Multihop)
			}
		}
		if p.PasswordFile != "" && p.PasswordEnv != "" {
			c.bad(f, "", "give passwordFile or passwordEnv, not both")
		}
		if p.Multihop < 0 || p.Multihop > 255 {
			c.bad(f+".multihop", strconv.Itoa(p.Multihop), "must be from 0 to 255")
		}
		if p.HoldTime != 0 && (p.HoldTime < 3 || p.HoldTime > 65535) {
			c.bad(f+".holdTime", strconv.Itoa(p.HoldTime), "must be 0 (default) or from 3 to 65535 seconds")
		}
		if p.Keepalive < 0 || (p.HoldTime != 0 && p.Keepalive*3 > p.HoldTime) {
			c.bad(f+".keepalive", strconv.Itoa(p.Keepalive), "must not be negative nor more than a third of holdTime")
		}
	}
	if h := s.BGPHoldDown; h != nil {
		for _, v := range []struct {
			name string
			ms   int
		}{{"initialMs", h.InitialMs}, {"maxMs", h.MaxMs}} {
			if v.ms != 0 && (v.ms < 100 || v.ms > 3600000) {
				c.bad("spec.bgpHoldDown."+v.name, strconv.Itoa(v.ms), "must be 0 (default) or from 100 to 3600000 ms")
			}
		}
		if h.InitialMs != 0 && h.MaxMs != 0 && h.InitialMs > h.MaxMs {
			c.bad("spec.bgpHoldDown.initialMs", strconv.Itoa(h.InitialMs), "above maxMs %d", h.MaxMs)
		}
	}
	if s.ASN == 23456 || s.ASN == 4294967295 {
		c.bad("spec.asn", strconv.FormatUint(uint64(s.ASN), 10), "reserved (RFC 6793 AS_TRANS, RFC 7300)")
	}
	if len(s.BGPPeers) > 0 && s.ASN == 0 {
		c.bad("spec.asn", "", "required when bgpPeers are given")
	}
}

func (c *objectCheck) vm(s *VMSpec) {
	c.need("spec.department", s.Department)
	// 0 is also what an omitted field decodes to: said as required.
	switch {
	case s.VCPUs == 0:
		c.bad("spec.vcpus", "", "required: from 1 to 1024")
	case s.VCPUs < 1 || s.VCPUs > 1024:
		c.bad("spec.vcpus", strconv.Itoa(s.VCPUs), "must be from 1 to 1024")
	}
	switch {
	case s.MemoryMiB == 0:
		c.bad("spec.memoryMiB", "", "required: from 16 to %d (4 TiB)", MaxVMMemoryMiB)
	case s.MemoryMiB < 16 || s.MemoryMiB > MaxVMMemoryMiB:
		c.bad("spec.memoryMiB", strconv.Itoa(s.MemoryMiB), "must be from 16 to %d (4 TiB)", MaxVMMemoryMiB)
	}
	if len(s.Networks) == 0 {
		c.bad("spec.networks", "", "at least one network (segment) required")
	}
	if s.PowerState != "" && s.PowerState != PowerRunning && s.PowerState != PowerStopped {
		c.bad("spec.powerState", s.PowerState, "must be %q or %q (omitted: %q)", PowerRunning, PowerStopped, PowerRunning)
	}
	if s.RestartGeneration < 0 {
		c.bad("spec.restartGeneration", strconv.Itoa(s.RestartGeneration), "must be 0 or more (raise it by one to reboot the VM)")
	}
	for i, k := range s.SSHKeys {
		if err := sshKey(k); err != nil {
			c.bad(fmt.Sprintf("spec.sshKeys[%d]", i), k, "%v", err)
		}
	}
	for i, n := range s.Networks {
		f := fmt.Sprintf("spec.networks[%d]", i)
		c.need(f+".segment", n.Segment)
		if n.IPv4 != "" {
			if a, err := netip.ParseAddr(n.IPv4); err != nil || !a.Is4() {
				c.bad(f+".ipv4", n.IPv4, "want an IPv4 address")
			}
		}
		if n.IPv6 != "" {
			if a, err := netip.ParseAddr(n.IPv6); err != nil || !a.Is6() {
				c.bad(f+".ipv6", n.IPv6, "want an IPv6 address")
			}
		}
	}
}

func (c *objectCheck) volume(s *VolumeSpec) {
	c.need("spec.department", s.Department)
	if s.SizeGiB < 1 || s.SizeGiB > MaxVolumeGiB {
		c.bad("spec.sizeGiB", strconv.Itoa(s.SizeGiB), "must be from 1 to %d (64 TiB)", MaxVolumeGiB)
	}
	if s.RestoreFrom != "" && !validBackupID(s.RestoreFrom) {
		c.bad("spec.restoreFrom", s.RestoreFrom, "want a volume backup id (1-128 characters of a-z A-Z 0-9 - . _, not starting with '.')")
	}
	if s.RestoreFrom != "" && s.Image != "" {
		c.bad("spec.restoreFrom", s.RestoreFrom, "a volume is made from a backup or from image %q, not both", s.Image)
	}
}

func (c *objectCheck) image(s *ImageSpec) {
	if c.o.Metadata.Name == TinyImage {
		c.bad("metadata.name", TinyImage, "the built-in image; it needs no Image object (choose another name)")
	}
	if c.need("spec.source", s.Source) {
		if err := imageSource(s.Source); err != nil {
			c.bad("spec.source", s.Source, "%v", err)
		}
	}
	if c.need("spec.sha256", s.SHA256) {
		if len(s.SHA256) != 64 {
			c.bad("spec.sha256", s.SHA256, "want 64 hex digits (sha256sum's output), got %d characters", len(s.SHA256))
		} else if strings.Trim(s.SHA256, "0123456789abcdef") != "" {
			c.bad("spec.sha256", s.SHA256, "want lower-case hex digits (0-9 a-f)")
		}
	}
	if c.need("spec.os", s.OS) && !slices.Contains(ImageOS, s.OS) {
		c.bad("spec.os", s.OS, "unknown OS (want one of %s)", strings.Join(ImageOS, ", "))
	}
}

// imageSource checks an image's path in the hosts' image store: relative, clean, inside the
// store (no ".." element), made of 1-255 characters of a-z A-Z 0-9 - . _ /.
func imageSource(p string) error {
	switch {
	case len(p) > 255:
		return fmt.Errorf("longer than 255 characters")
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("want a path relative to the image store, not an absolute one")
	}
	for _, c := range p {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '/') {
			return fmt.Errorf("character %q not allowed (a-z A-Z 0-9 - . _ /)", c)
		}
	}
	for _, e := range strings.Split(p, "/") {
		switch e {
		case "..":
			return fmt.Errorf("leaves the image store (\"..\")")
		case "", ".":
			return fmt.Errorf("not a clean path (empty or \".\" element)")
		}
	}
	return nil
}

// sshKey checks one OpenSSH public key line: a known key type, a base64 body that names the
// same type, an optional comment, one line.
func sshKey(k string) error {
	if strings.ContainsAny(k, "\r\n") {
		return fmt.Errorf("more than one line")
	}
	f := strings.Fields(k)
	if len(f) < 2 {
		return fmt.Errorf("want \"TYPE BASE64 [comment]\"")
	}
	known := []string{"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com"}
	if !slices.Contains(known, f[0]) {
		return fmt.Errorf("unknown key type %q", f[0])
	}
	b, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil || len(b) < 4+len(f[0]) || string(b[4:4+len(f[0])]) != f[0] {
		return fmt.Errorf("key body is not a base64 %s key", f[0])
	}
	return nil
}

// validBackupID reports whether id can name a volume backup: a file name in the compute
// agents' backup directory, never a path.
func validBackupID(id string) bool {
	if id == "" || len(id) > 128 || id[0] == '.' {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

func prefix(bad func(string, string, string, ...any), field, s string, v6 bool) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		bad(field, s, "not a CIDR prefix")
	case p.Addr().Is6() != v6 || p.Addr().Is4In6():
		if v6 {
			bad(field, s, "want an IPv6 prefix")
		} else {
			bad(field, s, "want an IPv4 prefix")
		}
	case p.Masked() != p:
		bad(field, s, "host bits set (did you mean %s?)", p.Masked())
	default:
		return p, true
	}
	return netip.Prefix{}, false
}

func gatewayIn(bad func(string, string, string, ...any), field, s string, p netip.Prefix) {
	g, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		bad(field, s, "not an IP address")
	case !p.Contains(g):
		bad(field, s, "gateway is outside the segment %s", p)
	case g == p.Addr():
		bad(field, s, "gateway is the network address of %s", p)
	case g.Is4() && g == lastAddr(p):
		bad(field, s, "gateway is the broadcast address of %s", p)
	}
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range a {
		for b := 0; b < 8; b++ {
			if i*8+b >= bits {
				a[i] |= 0x80 >> b
			}
		}
	}
	r, _ := netip.AddrFromSlice(a)
	return r
}

// LastAddr is the highest address of p (the IPv4 broadcast address).
func LastAddr(p netip.Prefix) netip.Addr { return lastAddr(p) }

// Prefix4 returns a segment's IPv4 prefix (valid after validation).
func (s *SegmentSpec) Prefix4() netip.Prefix { p, _ := netip.ParsePrefix(s.IPv4); return p }

// Prefix6 returns a segment's IPv6 prefix (zero when none).
func (s *SegmentSpec) Prefix6() netip.Prefix { p, _ := netip.ParsePrefix(s.IPv6); return p }

// Gateway4 returns the IPv4 gateway: the one given or the first host address.
func (s *SegmentSpec) Gateway4() netip.Addr {
	if g, err := netip.ParseAddr(s.Gateway); err == nil {
		return g
	}
	return s.Prefix4().Addr().Next()
}

// Gateway6Addr returns the IPv6 gateway: the one given or the first address after the prefix's.
func (s *SegmentSpec) Gateway6Addr() netip.Addr {
	if g, err := netip.ParseAddr(s.Gateway6); err == nil {
		return g
	}
	p := s.Prefix6()
	if !p.IsValid() {
		return netip.Addr{}
	}
	return p.Addr().Next()
}

// FabricName returns the segment's fabric ("default" when omitted).
func (s *SegmentSpec) FabricName() string {
	if s.Fabric == "" {
		return "default"
	}
	return s.Fabric
}

// Prefixes returns a pool's prefixes.
func (p *AddressPool) Prefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, c := range p.CIDRs {
		if q, err := netip.ParsePrefix(c); err == nil {
			out = append(out, q)
		}
	}
	return out
}

// ServicePool is the address pool a service's VIP is in: the one it was allocated from
// (status), else the one it names, else, for a static VIP, the first pool holding it; nil
// when none is known.
func ServicePool(st *State, o *Object) *Object {
	s := o.Spec.(*ServiceSpec)
	for _, name := range []string{o.Status.Pool, s.Pool} {
		if p := st.Get(KindAddressPool, name); name != "" && p != nil {
			return p
		}
	}
	vip, err := netip.ParseAddr(s.VIP)
	if err != nil {
		return nil
	}
	for _, p := range st.List(KindAddressPool) {
		if slices.ContainsFunc(p.Spec.(*AddressPool).CIDRs, func(c string) bool {
			pf, err := netip.ParsePrefix(c)
			return err == nil && pf.Contains(vip)
		}) {
			return p
		}
	}
	return nil
}

// ScopeName returns public or internal.
func (p *AddressPool) ScopeName() string {
	if p.Scope == "" {
		return "public"
	}
	return p.Scope
}

// AllDepartments in a pool's departments lets every department draw from it, present and
// future: adding a department then needs no edit of the pool.
const AllDepartments = "*"

// Allows says whether department may draw from the pool: listed by name, or the pool serves
// every department ("*").
func (p *AddressPool) Allows(department string) bool {
	return slices.Contains(p.Departments, department) || p.ServesAll()
}

// ServesAll says whether the pool serves every department (departments: ["*"]).
func (p *AddressPool) ServesAll() bool { return slices.Contains(p.Departments, AllDepartments) }

// EffectiveVLAN is the VLAN a segment uses: given or allocated (0 when pending).
func EffectiveVLAN(o *Object) int {
	if s := o.Spec.(*SegmentSpec); s.VLAN != nil {
		return *s.VLAN
	}
	return o.Status.VLAN
}

// EffectiveVIP is the VIP a service uses: given or allocated (invalid when pending).
func EffectiveVIP(o *Object) netip.Addr {
	s := o.Spec.(*ServiceSpec)
	v := s.VIP
	if v == "" {
		v = o.Status.VIP
	}
	a, _ := netip.ParseAddr(v)
	return a
}

// blame picks which of two clashing objects an error is reported on: the one from the input.
func blame(a, b *Object) (*Object, *Object) {
	if a.Source == nil && b.Source != nil {
		return b, a
	}
	if a.Source != nil && b.Source != nil && b.Source.Doc > a.Source.Doc {
		return b, a
	}
	return a, b
}

// Validate checks the objects of a whole state together: references, overlaps inside a
// department, duplicate VLANs per fabric, VIPs inside the department's pools, backends inside
// the department, static addresses and quotas. Allocation is not its job, but values already
// allocated (status) take part in the duplicate checks. One function per kind below; errors
// come out segments first, then pools, volumes, hosts, VMs, services and quotas.
func Validate(st *State) Errors {
	c := &stateCheck{st: st, depts: map[string]*Object{}, vms: map[string]*Object{}, hosts: map[string]*Object{}}
	for _, o := range st.List(KindDepartment) {
		c.depts[o.Metadata.Name] = o
	}
	for _, o := range st.List(KindVM) {
		c.vms[o.Metadata.Name] = o
	}
	c.segs, c.pools, c.vols = st.List(KindSegment), st.List(KindAddressPool), st.List(KindVolume)
	for _, o := range c.segs {
		c.segIdx.add(o.Spec.(*SegmentSpec).Prefix4(), o)
		c.segIdx.add(o.Spec.(*SegmentSpec).Prefix6(), o)
	}
	c.segments()
	c.addressPools()
	for _, o := range c.vols {
		c.refDept(o, o.Spec.(*VolumeSpec).Department)
		c.refImage(o, "spec.image", o.Spec.(*VolumeSpec).Image)
	}
	c.hostList()
	c.vmList()
	c.services()
	c.publicPools()
	c.quotas()
	c.priceLists()
	c.securityPolicies()
	return c.es
}

// stateCheck collects the errors of a whole state, with the indexes the checks share.
type stateCheck struct {
	st                *State
	es                Errors
	depts, vms, hosts map[string]*Object
	segs, pools, vols []*Object
	segIdx, poolIdx   prefixIndex[*Object] // segments and pools by prefix
	inputFor          map[string]*Object   // inputOf's answers by kind/department
}

func (c *stateCheck) add(o *Object, field, value, format string, args ...any) {
	c.es = c.es.Add(errAt(o, field, value, format, args...))
}

// inputOf returns the first object of list from the input that serves department (a segment
// of it, a pool it may draw from): the likely cause of a stored object's problem when no
// better one is known. Results are kept per list and department, so many stranded objects
// cost one pass.
func (c *stateCheck) inputOf(list []*Object, department string) *Object {
	if len(list) == 0 {
		return nil
	}
	k := list[0].Kind + "/" + department
	if o, ok := c.inputFor[k]; ok {
		return o
	}
	var found *Object
	for _, o := range list {
		if o.Source == nil {
			continue
		}
		if p, ok := o.Spec.(*AddressPool); (ok && p.Allows(department)) || o.Department() == department {
			found = o
			break
		}
	}
	if c.inputFor == nil {
		c.inputFor = map[string]*Object{}
	}
	c.inputFor[k] = found
	return found
}

// addCaused reports a problem of o that input object cause (field causeField) brings about: on
// cause when o is stored and cause is from the input (ErrStranded), on o otherwise.
func (c *stateCheck) addCaused(o, cause *Object, causeField, field, value, format string, args ...any) {
	c.es = c.es.Add(ErrStranded(o, cause, causeField, field, value, format, args...))
}

func (c *stateCheck) refDept(o *Object, d string) {
	if d != "" && c.depts[d] == nil {
		c.add(o, "spec.department", d, "unknown department")
	}
}

// segments: department references, overlaps inside a department, VLANs unique per fabric.
func (c *stateCheck) segments() {
	segsOf := map[string][]*Object{}
	vlans := map[string]*Object{}
	for _, o := range c.segs {
		s := o.Spec.(*SegmentSpec)
		c.refDept(o, s.Department)
		segsOf[s.Department] = append(segsOf[s.Department], o)
	}
	for _, d := range slices.Sorted(maps.Keys(segsOf)) {
		segs := segsOf[d]
		v4, v6 := make([]netip.Prefix, len(segs)), make([]netip.Prefix, len(segs))
		for i, o := range segs {
			v4[i], v6[i] = o.Spec.(*SegmentSpec).Prefix4(), o.Spec.(*SegmentSpec).Prefix6()
		}
		for _, pair := range overlapping(v4) {
			x, y := blame(segs[pair[0]], segs[pair[1]])
			c.add(x, "spec.ipv4", x.Spec.(*SegmentSpec).IPv4, "overlaps %s of segment %q in the same department %q (overlap is allowed only across departments)", y.Spec.(*SegmentSpec).IPv4, y.Metadata.Name, d)
		}
		for _, pair := range overlapping(v6) {
			x, y := blame(segs[pair[0]], segs[pair[1]])
			c.add(x, "spec.ipv6", x.Spec.(*SegmentSpec).IPv6, "overlaps %s of segment %q in the same department %q", y.Spec.(*SegmentSpec).IPv6, y.Metadata.Name, d)
		}
	}
	for _, o := range c.segs {
		s := o.Spec.(*SegmentSpec)
		if v := EffectiveVLAN(o); v != 0 {
			k := s.FabricName() + "/" + strconv.Itoa(v)
			if other := vlans[k]; other != nil {
				x, y := blame(o, other)
				c.add(x, "spec.vlan", strconv.Itoa(v), "duplicate VLAN: already used by segment %q on fabric %q", y.Metadata.Name, s.FabricName())
			} else {
				vlans[k] = o
			}
		}
	}
}

// addressPools: department references and overlaps between pools (overlaps inside one pool
// are ValidateObject's).
func (c *stateCheck) addressPools() {
	var all []netip.Prefix
	var owner []int // index into c.pools of each prefix in all
	for i, o := range c.pools {
		p := o.Spec.(*AddressPool)
		for j, d := range p.Departments {
			if d != AllDepartments && c.depts[d] == nil {
				c.add(o, fmt.Sprintf("spec.departments[%d]", j), d, "unknown department")
			}
		}
		for _, q := range p.Prefixes() {
			all, owner = append(all, q), append(owner, i)
			c.poolIdx.add(q, o)
		}
	}
	for _, pair := range overlapping(all) {
		a, b := pair[0], pair[1]
		if owner[a] == owner[b] {
			continue
		}
		x, y := blame(c.pools[owner[a]], c.pools[owner[b]])
		px, py := all[a], all[b]
		if x != c.pools[owner[a]] {
			px, py = py, px
		}
		c.add(x, "spec.cidrs", px.String(), "overlaps %s of address pool %q", py, y.Metadata.Name)
	}
	// A VIP inside a segment of a department the pool serves would be a gateway's or a guest's
	// address there: pools and those segments never overlap.
	segs := c.st.List(KindSegment)
	for _, o := range c.pools {
		p := o.Spec.(*AddressPool)
		for _, seg := range segs {
			ss := seg.Spec.(*SegmentSpec)
			if !p.Allows(ss.Department) {
				continue
			}
			for _, q := range p.Prefixes() {
				for _, sp := range []netip.Prefix{ss.Prefix4(), ss.Prefix6()} {
					if sp.IsValid() && q.Overlaps(sp) {
						if x, _ := blame(o, seg); x == o {
							c.add(o, "spec.cidrs", q.String(), "overlaps %s of segment %q of department %q, which the pool serves", sp, seg.Metadata.Name, ss.Department)
						} else {
							field := "spec.ipv4"
							if sp.Addr().Is6() {
								field = "spec.ipv6"
							}
							c.add(seg, field, sp.String(), "overlaps %s of address pool %q, which serves department %q", q, o.Metadata.Name, ss.Department)
						}
					}
				}
			}
		}
	}
}

// refImage refuses a reference to an image that is neither built in (tiny) nor an Image object:
// no host could boot it.
func (c *stateCheck) refImage(o *Object, field, name string) {
	if name != "" && name != TinyImage && c.st.Get(KindImage, name) == nil {
		c.add(o, field, name, "unknown image (declare an Image object; %q is built in)", TinyImage)
	}
}

// hostList indexes the hosts and refuses two hosts with one address.
func (c *stateCheck) hostList() {
	byAddr := map[string]*Object{}
	for _, o := range c.st.List(KindHost) {
		c.hosts[o.Metadata.Name] = o
		a := o.Spec.(*HostSpec).Address
		if other := byAddr[a]; other != nil {
			x, y := blame(o, other)
			c.add(x, "spec.address", a, "address already used by host %q", y.Metadata.Name)
		} else {
			byAddr[a] = o
		}
	}
}

// vmList: references to department, host, volumes (one VM each, same department) and segments,
// and static addresses inside their segment and unique.
func (c *stateCheck) vmList() {
	volOwner := map[string]string{}
	staticIPs := map[netip.Addr]string{}
	for _, o := range c.st.List(KindVM) {
		s := o.Spec.(*VMSpec)
		c.refDept(o, s.Department)
		c.refImage(o, "spec.image", s.Image)
		if s.Host != "" && c.hosts[s.Host] == nil {
			c.add(o, "spec.host", s.Host, "unknown host")
		}
		if h := c.hosts[s.Host]; h != nil && len(s.HostSelector) > 0 {
			labels := h.Spec.(*HostSpec).Labels
			var sel, miss []string
			for _, k := range slices.Sorted(maps.Keys(s.HostSelector)) {
				sel = append(sel, k+"="+s.HostSelector[k])
				if v, ok := labels[k]; !ok || v != s.HostSelector[k] {
					miss = append(miss, k+"="+s.HostSelector[k])
				}
			}
			if len(miss) > 0 {
				c.addCaused(o, h, "spec.labels", "spec.hostSelector", strings.Join(sel, ","), "the VM is pinned to host %q (spec.host), which does not match %s", s.Host, strings.Join(miss, ","))
			}
		}
		for i, vn := range s.Volumes {
			f := fmt.Sprintf("spec.volumes[%d]", i)
			v := c.st.Get(KindVolume, vn)
			switch {
			case v == nil:
				c.add(o, f, vn, "unknown volume")
			case v.Spec.(*VolumeSpec).Department != s.Department:
				c.addCaused(o, v, "spec.department", f, vn, "volume belongs to department %q, not %q", v.Spec.(*VolumeSpec).Department, s.Department)
			case volOwner[vn] != "":
				c.addCaused(o, c.vms[volOwner[vn]], "spec.volumes", f, vn, "volume already attached to VM %q", volOwner[vn])
			default:
				volOwner[vn] = o.Metadata.Name
			}
		}
		for i, n := range s.Networks {
			f := fmt.Sprintf("spec.networks[%d]", i)
			seg := c.st.Get(KindSegment, n.Segment)
			if seg == nil {
				c.add(o, f+".segment", n.Segment, "unknown segment")
				continue
			}
			ss := seg.Spec.(*SegmentSpec)
			if ss.Department != s.Department {
				c.addCaused(o, seg, "spec.department", f+".segment", n.Segment, "segment belongs to department %q, not %q", ss.Department, s.Department)
				continue
			}
			if n.IPv4 != "" {
				a, _ := netip.ParseAddr(n.IPv4)
				switch {
				case !ss.Prefix4().Contains(a):
					c.addCaused(o, seg, "spec.ipv4", f+".ipv4", n.IPv4, "outside segment %q (%s)", n.Segment, ss.IPv4)
				case a == ss.Gateway4() || a == ss.Prefix4().Addr() || a == lastAddr(ss.Prefix4()):
					c.addCaused(o, seg, "spec.gateway", f+".ipv4", n.IPv4, "is the gateway, network or broadcast address of segment %q", n.Segment)
				case staticIPs[a] != "":
					c.addCaused(o, c.vms[staticIPs[a]], "spec.networks", f+".ipv4", n.IPv4, "already used by VM %q", staticIPs[a])
				default:
					staticIPs[a] = o.Metadata.Name
				}
			}
			if n.IPv6 != "" {
				a, _ := netip.ParseAddr(n.IPv6)
				switch {
				case !ss.Prefix6().IsValid() || !ss.Prefix6().Contains(a):
					c.addCaused(o, seg, "spec.ipv6", f+".ipv6", n.IPv6, "outside segment %q (%s)", n.Segment, ss.IPv6)
				case a == ss.Gateway6Addr() || a == ss.Prefix6().Addr():
					c.addCaused(o, seg, "spec.gateway6", f+".ipv6", n.IPv6, "is the gateway or subnet-router address of segment %q", n.Segment)
				case staticIPs[a] != "":
					c.addCaused(o, c.vms[staticIPs[a]], "spec.networks", f+".ipv6", n.IPv6, "already used by VM %q", staticIPs[a])
				default:
					staticIPs[a] = o.Metadata.Name
				}
			}
		}
	}
}

// services: department and pool references, VIPs inside a pool that serves the department and
// unique, backends in the service's department.
func (c *stateCheck) services() {
	vips := map[netip.Addr]*Object{}
	// Public addresses a department holds for egress or a VM as its floating IP: never a VIP.
	held := map[netip.Addr]string{}
	for _, o := range c.st.List(KindDepartment) {
		for h, a := range o.Status.Egress {
			if ip, err := netip.ParseAddr(a); err == nil {
				held[ip] = fmt.Sprintf("department %q's egress address on host %q", o.Metadata.Name, h)
			}
		}
	}
	for _, o := range c.st.List(KindVM) {
		if ip, err := netip.ParseAddr(o.Status.FloatingIP); err == nil {
			held[ip] = fmt.Sprintf("VM %q's floating IP", o.Metadata.Name)
		}
	}
	for _, o := range c.st.List(KindService) {
		s := o.Spec.(*ServiceSpec)
		c.refDept(o, s.Department)
		if s.Pool != "" {
			p := c.st.Get(KindAddressPool, s.Pool)
			if p == nil {
				c.add(o, "spec.pool", s.Pool, "unknown address pool")
			} else if !p.Spec.(*AddressPool).Allows(s.Department) {
				c.addCaused(o, p, "spec.departments", "spec.pool", s.Pool, "pool does not serve department %q (it serves %s)", s.Department, strings.Join(p.Spec.(*AddressPool).Departments, ", "))
			}
		}
		if s.VIP != "" {
			c.vipInPools(o, s)
			if ip, err := netip.ParseAddr(s.VIP); err == nil && held[ip] != "" {
				c.add(o, "spec.vip", s.VIP, "address is %s; choose another", held[ip])
			}
		}
		if p := ServicePool(c.st, o); p != nil && p.Spec.(*AddressPool).ScopeName() == "internal" && s.Mode == "nat" {
			c.add(o, "spec.mode", s.Mode, "pool %q is internal: its VIPs are dsr only (the department's gateways route them to a backend, which answers from the VIP); leave mode out or set dsr", p.Metadata.Name)
		}
		if vip := EffectiveVIP(o); vip.IsValid() {
			if other := vips[vip]; other != nil {
				x, y := blame(o, other)
				c.add(x, "spec.vip", vip.String(), "VIP already used by service %q", y.Metadata.Name)
			} else {
				vips[vip] = o
			}
		}
		for i, b := range s.Backends {
			c.backend(o, s, fmt.Sprintf("spec.backends[%d]", i), b)
		}
	}
}

// publicPools checks the pools departments draw their egress (SNAT) addresses from and VMs
// their floating IPs from: each must exist, be public (advertised to the fabric) and serve the
// department.
func (c *stateCheck) publicPools() {
	check := func(o *Object, field, pool, dept string) {
		if pool == "" {
			return
		}
		p := c.st.Get(KindAddressPool, pool)
		switch {
		case p == nil:
			c.add(o, field, pool, "unknown address pool")
		case p.Spec.(*AddressPool).ScopeName() != "public":
			c.addCaused(o, p, "spec.scope", field, pool, "pool is %s; egress and floating IPs need a public pool (advertised to the fabric)", p.Spec.(*AddressPool).ScopeName())
		case !p.Spec.(*AddressPool).Allows(dept):
			c.addCaused(o, p, "spec.departments", field, pool, "pool does not serve department %q (it serves %s)", dept, strings.Join(p.Spec.(*AddressPool).Departments, ", "))
		}
	}
	for _, o := range c.st.List(KindDepartment) {
		check(o, "spec.egress", o.Spec.(*DepartmentSpec).Egress, o.Metadata.Name)
	}
	for _, o := range c.st.List(KindVM) {
		s := o.Spec.(*VMSpec)
		check(o, "spec.floatingIP", s.FloatingIP, s.Department)
	}
}

// vipInPools refuses a static VIP outside every pool, or in pools that do not serve the
// service's department.
func (c *stateCheck) vipInPools(o *Object, s *ServiceSpec) {
	vip, _ := netip.ParseAddr(s.VIP)
	var in, allowed []string
	for _, p := range c.poolIdx.containing(vip) {
		in = append(in, p.Metadata.Name)
		if p.Spec.(*AddressPool).Allows(s.Department) && (s.Pool == "" || s.Pool == p.Metadata.Name) {
			allowed = append(allowed, p.Metadata.Name)
		}
	}
	switch {
	case len(in) == 0:
		// The pool it was allocated from, else an input pool of its department, shrank.
		cause := c.st.Get(KindAddressPool, o.Status.Pool)
		if cause == nil && o.Source == nil {
			cause = c.inputOf(c.pools, s.Department)
		}
		c.addCaused(o, cause, "spec.cidrs", "spec.vip", s.VIP, "VIP is outside every address pool")
	case len(allowed) == 0:
		c.addCaused(o, c.st.Get(KindAddressPool, in[0]), "spec.departments", "spec.vip", s.VIP, "VIP is in address pool %q, which does not serve department %q", in[0], s.Department)
	}
}

// backend refuses a backend VM or address outside the service's department.
func (c *stateCheck) backend(o *Object, s *ServiceSpec, f string, b Backend) {
	if b.VM != "" {
		vm := c.vms[b.VM]
		switch {
		case vm == nil:
			c.add(o, f+".vm", b.VM, "unknown VM")
		case vm.Spec.(*VMSpec).Department != s.Department:
			c.addCaused(o, vm, "spec.department", f+".vm", b.VM, "backend VM belongs to department %q, not %q", vm.Spec.(*VMSpec).Department, s.Department)
		}
		return
	}
	a, err := netip.ParseAddr(b.Address)
	if err != nil {
		return // ValidateObject reports it
	}
	var mine bool
	var others []string
	var cause *Object // an input segment that moved the address out of the department
	causeField := "spec.department"
	for _, seg := range c.segIdx.containing(a) {
		ss := seg.Spec.(*SegmentSpec)
		if ss.Department == s.Department {
			mine = true
		} else {
			others = append(others, fmt.Sprintf("segment %q of department %q", seg.Metadata.Name, ss.Department))
			if cause == nil && seg.Source != nil {
				cause = seg
			}
		}
	}
	if !mine {
		if cause == nil && o.Source == nil {
			cause, causeField = c.inputOf(c.segs, s.Department), "spec.ipv4"
		}
		msg := fmt.Sprintf("backend address is not in any segment of department %q", s.Department)
		if len(others) > 0 {
			msg += " (it is in " + strings.Join(others, ", ") + ")"
		}
		c.addCaused(o, cause, causeField, f+".address", b.Address, "%s", msg)
	}
}

// quotas: each department's VMs and volumes within its quotas; the error is reported on the
// department's last VM or volume from the input.
func (c *stateCheck) quotas() {
	type use struct{ vcpus, memMiB, storage int }
	uses := map[string]*use{}
	get := func(d string) *use {
		if uses[d] == nil {
			uses[d] = &use{}
		}
		return uses[d]
	}
	lastVM := map[string]*Object{}
	for _, o := range c.st.List(KindVM) {
		s := o.Spec.(*VMSpec)
		u := get(s.Department)
		u.vcpus += s.VCPUs
		u.memMiB += s.MemoryMiB
		if lastVM[s.Department] == nil || o.Source != nil {
			lastVM[s.Department] = o
		}
	}
	lastVol := map[string]*Object{}
	for _, o := range c.vols {
		s := o.Spec.(*VolumeSpec)
		get(s.Department).storage += s.SizeGiB
		if lastVol[s.Department] == nil || o.Source != nil {
			lastVol[s.Department] = o
		}
	}
	names := make([]string, 0, len(uses))
	for d := range uses {
		names = append(names, d)
	}
	sort.Strings(names)
	for _, d := range names {
		dep := c.depts[d]
		if dep == nil {
			continue
		}
		q, u := dep.Spec.(*DepartmentSpec).Quotas, uses[d]
		if q.VCPUs != nil && u.vcpus > *q.VCPUs {
			c.addCaused(lastVM[d], dep, "spec.quotas.vcpus", "spec.vcpus", strconv.Itoa(lastVM[d].Spec.(*VMSpec).VCPUs), "quota exceeded: department %q would use %d vCPUs, quota is %d", d, u.vcpus, *q.VCPUs)
		}
		if q.MemoryGiB != nil && u.memMiB > *q.MemoryGiB*1024 {
			c.addCaused(lastVM[d], dep, "spec.quotas.memoryGiB", "spec.memoryMiB", strconv.Itoa(lastVM[d].Spec.(*VMSpec).MemoryMiB), "quota exceeded: department %q would use %d MiB of memory, quota is %d GiB", d, u.memMiB, *q.MemoryGiB)
		}
		if q.StorageGiB != nil && u.storage > *q.StorageGiB {
			c.addCaused(lastVol[d], dep, "spec.quotas.storageGiB", "spec.sizeGiB", strconv.Itoa(lastVol[d].Spec.(*VolumeSpec).SizeGiB), "quota exceeded: department %q would use %d GiB of storage, quota is %d GiB", d, u.storage, *q.StorageGiB)
		}
	}
}

// Dependents lists the objects that refer to o (what blocks deleting it).
func Dependents(st *State, o *Object) []Key {
	var out []Key
	name := o.Metadata.Name
	for _, x := range st.List("") {
		if x.Key() == o.Key() {
			continue
		}
		refers := false
		switch o.Kind {
		case KindDepartment:
			refers = x.Department() == name && x.Kind != KindDepartment
			if p, ok := x.Spec.(*AddressPool); ok && slices.Contains(p.Departments, name) { // "*" names no one
				refers = true
			}
		case KindSegment:
			if vm, ok := x.Spec.(*VMSpec); ok {
				for _, n := range vm.Networks {
					refers = refers || n.Segment == name
				}
			}
			if sp, ok := x.Spec.(*SecurityPolicySpec); ok {
				for _, r := range sp.Allow {
					for _, f := range r.From {
						refers = refers || f.Segment == name
					}
				}
			}
		case KindVolume:
			if vm, ok := x.Spec.(*VMSpec); ok {
				refers = slices.Contains(vm.Volumes, name)
			}
		case KindImage:
			if vm, ok := x.Spec.(*VMSpec); ok {
				refers = vm.Image == name
			}
			if v, ok := x.Spec.(*VolumeSpec); ok {
				refers = v.Image == name
			}
		case KindVM:
			if svc, ok := x.Spec.(*ServiceSpec); ok {
				for _, b := range svc.Backends {
					refers = refers || b.VM == name
				}
			}
		case KindAddressPool:
			if svc, ok := x.Spec.(*ServiceSpec); ok {
				refers = svc.Pool == name || (svc.VIP == "" && x.Status.Pool == name)
			}
			if d, ok := x.Spec.(*DepartmentSpec); ok {
				refers = d.Egress == name
			}
			if vm, ok := x.Spec.(*VMSpec); ok {
				refers = vm.FloatingIP == name
			}
		case KindHost:
			if vm, ok := x.Spec.(*VMSpec); ok {
				refers = vm.Host == name
			}
		}
		if refers {
			out = append(out, x.Key())
		}
	}
	return out
}
