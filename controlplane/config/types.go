// Package config is the resource model of govcloud (Department, Segment, AddressPool, Service,
// Host, Image, VM, Volume, PriceList, SecurityPolicy) and its one entry point from YAML: Parse turns a multi-document file into
// objects, rejecting unknown kinds and fields; Validate checks each object and then the whole
// set (references, overlaps, duplicates, quotas). Every error is an *Error naming the file,
// line, document, kind, object, field and bad value.
package config

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// APIVersion is the only apiVersion accepted in documents.
const APIVersion = "govcloud/v1"

// The kinds, in the order their objects are shown and created.
const (
	KindDepartment  = "Department"
	KindAddressPool = "AddressPool"
	KindSegment     = "Segment"
	KindHost        = "Host"
	KindImage       = "Image"
	KindVolume      = "Volume"
	KindVM          = "VM"
	KindService     = "Service"
	KindPriceList   = "PriceList"
	// KindSecurityPolicy restricts traffic between a department's tiers (SecurityPolicySpec).
	KindSecurityPolicy = "SecurityPolicy"
)

// Kinds lists every kind in dependency order.
var Kinds = []string{KindDepartment, KindAddressPool, KindSegment, KindHost, KindImage, KindVolume, KindVM, KindService, KindPriceList, KindSecurityPolicy}

// KindOrder returns the position of kind in Kinds (len(Kinds) when unknown).
func KindOrder(kind string) int {
	for i, k := range Kinds {
		if k == kind {
			return i
		}
	}
	return len(Kinds)
}

// NormalizeKind maps what a user types ("segments", "svc", "vm") to a kind, or "" when unknown.
func NormalizeKind(s string) string {
	l := strings.ToLower(s)
	aliases := map[string]string{
		"department": KindDepartment, "departments": KindDepartment, "dept": KindDepartment, "depts": KindDepartment,
		"addresspool": KindAddressPool, "addresspools": KindAddressPool, "pool": KindAddressPool, "pools": KindAddressPool,
		"segment": KindSegment, "segments": KindSegment, "seg": KindSegment,
		"host": KindHost, "hosts": KindHost,
		"image": KindImage, "images": KindImage, "img": KindImage,
		"volume": KindVolume, "volumes": KindVolume, "vol": KindVolume,
		"vm": KindVM, "vms": KindVM,
		"service": KindService, "services": KindService, "svc": KindService,
		"pricelist": KindPriceList, "pricelists": KindPriceList, "prices": KindPriceList,
		"securitypolicy": KindSecurityPolicy, "securitypolicies": KindSecurityPolicy, "policy": KindSecurityPolicy, "policies": KindSecurityPolicy, "secpol": KindSecurityPolicy,
	}
	return aliases[l]
}

// Plural is the URL path element of a kind: "segments", "vms".
func Plural(kind string) string {
	if l, ok := strings.CutSuffix(strings.ToLower(kind), "y"); ok {
		return l + "ies"
	}
	return strings.ToLower(kind) + "s"
}

// Key identifies an object.
type Key struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

func (k Key) String() string { return fmt.Sprintf("%s %q", k.Kind, k.Name) }

// Metadata is the user-visible identity of an object.
type Metadata struct {
	Name   string            `yaml:"name" json:"name"`
	Labels map[string]string `yaml:"labels" json:"labels,omitempty"`
}

// Source says where an object came from, for error messages.
type Source struct {
	File  string
	Doc   int            // 1-based document index in File
	Line  int            // line of the document's first key
	Lines map[string]int // field path ("spec.vlan") -> line
}

func (s *Source) lineOf(field string) int {
	if s == nil {
		return 0
	}
	for f := field; f != ""; {
		if l, ok := s.Lines[f]; ok {
			return l
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			break
		}
		f = f[:i]
	}
	return s.Line
}

// Object is one resource: what the user wrote (Spec) and what the controller decided (Status).
type Object struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   Metadata `json:"metadata"`
	Spec       Spec     `json:"spec"`
	Status     Status   `json:"status"`
	Source     *Source  `json:"-"`
}

// Key returns the object's identity.
func (o *Object) Key() Key { return Key{o.Kind, o.Metadata.Name} }

// Department returns the department an object belongs to ("" for pools and hosts; the name for a
// Department).
func (o *Object) Department() string {
	switch s := o.Spec.(type) {
	case *DepartmentSpec:
		return o.Metadata.Name
	case *SegmentSpec:
		return s.Department
	case *ServiceSpec:
		return s.Department
	case *VMSpec:
		return s.Department
	case *VolumeSpec:
		return s.Department
	case *SecurityPolicySpec:
		return s.Department
	}
	return ""
}

// Spec is implemented by every kind's spec type.
type Spec interface{ kind() string }

// Status is written by the controller (allocations, placement), never by users. One struct
// serves every kind; fields that do not apply stay empty.
type Status struct {
	VLAN     int         `json:"vlan,omitempty"`     // Segment: effective VLAN ID
	Fabric   string      `json:"fabric,omitempty"`   // Segment: fabric the VLAN belongs to
	VIP      string      `json:"vip,omitempty"`      // Service: effective VIP
	Pool     string      `json:"pool,omitempty"`     // Service: pool the VIP came from
	TableID  int         `json:"tableId,omitempty"`  // Department: routing table (VRF-lite)
	Host     string      `json:"host,omitempty"`     // VM: host it is placed on ("" = pending)
	Networks []VMAddress `json:"networks,omitempty"` // VM: addresses per segment
	// Egress maps a host's name to the department's SNAT address on that host (Department
	// with spec.egress).
	Egress     map[string]string `json:"egress,omitempty"`
	FloatingIP string            `json:"floatingIP,omitempty"` // VM: its floating IP (spec.floatingIP)
	// Reason is why a VM is pending (no host matches its selector, or none has room), or why
	// its placement is over its host's capacity (kept, never moved); "" when it fits.
	Reason string `json:"reason,omitempty"`
}

// VMAddress is one VM interface on a segment.
type VMAddress struct {
	Segment string `json:"segment"`
	IPv4    string `json:"ipv4,omitempty"`
	IPv6    string `json:"ipv6,omitempty"`
	MAC     string `json:"mac"`
}

// Quotas limit what a department may use; a nil field means no limit.
type Quotas struct {
	VCPUs         *int `yaml:"vcpus" json:"vcpus,omitempty"`
	MemoryGiB     *int `yaml:"memoryGiB" json:"memoryGiB,omitempty"`
	StorageGiB    *int `yaml:"storageGiB" json:"storageGiB,omitempty"`
	BandwidthMbps *int `yaml:"bandwidthMbps" json:"bandwidthMbps,omitempty"`
}

// DepartmentSpec is a tenant: its segments share one VRF (routing table).
type DepartmentSpec struct {
	DisplayName string `yaml:"displayName" json:"displayName,omitempty"`
	CostCentre  string `yaml:"costCentre" json:"costCentre,omitempty"`
	Quotas      Quotas `yaml:"quotas" json:"quotas"`
	// Egress names a public address pool the department's SNAT addresses come from: one per
	// department per host (Status.Egress), so return traffic reaches the host holding the
	// connection. Unset: the department's VMs cannot open connections beyond it.
	Egress string `yaml:"egress" json:"egress,omitempty"`
}

// SegmentSpec is an L2 segment with its subnets; VLAN is allocated when omitted.
type SegmentSpec struct {
	Department string `yaml:"department" json:"department"`
	Fabric     string `yaml:"fabric" json:"fabric,omitempty"`
	VLAN       *int   `yaml:"vlan" json:"vlan,omitempty"`
	IPv4       string `yaml:"ipv4" json:"ipv4"`
	IPv6       string `yaml:"ipv6" json:"ipv6,omitempty"`
	Gateway    string `yaml:"gateway" json:"gateway,omitempty"`
	Gateway6   string `yaml:"gateway6" json:"gateway6,omitempty"`
}

// AddressPool is where service VIPs come from.
type AddressPool struct {
	CIDRs       []string `yaml:"cidrs" json:"cidrs"`
	Departments []string `yaml:"departments" json:"departments"`
	Scope       string   `yaml:"scope" json:"scope,omitempty"` // public (default) | internal
}

// ServicePort is one listening port of a service.
type ServicePort struct {
	Port       int    `yaml:"port" json:"port"`
	Protocol   string `yaml:"protocol" json:"protocol,omitempty"` // tcp (default) | udp
	TargetPort int    `yaml:"targetPort" json:"targetPort,omitempty"`
}

// Backend is a VM of the department or an address inside one of its segments.
type Backend struct {
	VM      string `yaml:"vm" json:"vm,omitempty"`
	Address string `yaml:"address" json:"address,omitempty"`
	Weight  *int   `yaml:"weight" json:"weight,omitempty"`
}

// HealthCheck probes backends.
type HealthCheck struct {
	Type               string `yaml:"type" json:"type"` // tcp | http
	Port               int    `yaml:"port" json:"port,omitempty"`
	Path               string `yaml:"path" json:"path,omitempty"`
	Interval           string `yaml:"interval" json:"interval,omitempty"`
	Timeout            string `yaml:"timeout" json:"timeout,omitempty"`
	HealthyThreshold   int    `yaml:"healthyThreshold" json:"healthyThreshold,omitempty"`
	UnhealthyThreshold int    `yaml:"unhealthyThreshold" json:"unhealthyThreshold,omitempty"`
}

// ServiceSpec is a load-balanced VIP.
type ServiceSpec struct {
	Department  string        `yaml:"department" json:"department"`
	VIP         string        `yaml:"vip" json:"vip,omitempty"`
	Pool        string        `yaml:"pool" json:"pool,omitempty"`
	IPFamily    string        `yaml:"ipFamily" json:"ipFamily,omitempty"` // ipv4 (default) | ipv6, for allocation
	Ports       []ServicePort `yaml:"ports" json:"ports"`
	Backends    []Backend     `yaml:"backends" json:"backends"`
	HealthCheck *HealthCheck  `yaml:"healthCheck" json:"healthCheck,omitempty"`
	Mode        string        `yaml:"mode" json:"mode,omitempty"` // nat (default) | dsr
	BGP         *ServiceBGP   `yaml:"bgp" json:"bgp,omitempty"`
}

// BGPPeer is a BGP neighbour of a host.
type BGPPeer struct {
	Address         string `yaml:"address" json:"address"`
	ASN             uint32 `yaml:"asn" json:"asn"`
	PasswordFile    string `yaml:"passwordFile" json:"passwordFile,omitempty"`
	PasswordEnv     string `yaml:"passwordEnv" json:"passwordEnv,omitempty"`
	GracefulRestart bool   `yaml:"gracefulRestart" json:"gracefulRestart,omitempty"`
	Multihop        int    `yaml:"multihop" json:"multihop,omitempty"`
	HoldTime        int    `yaml:"holdTime" json:"holdTime,omitempty"`   // seconds (0: speaker default)
	Keepalive       int    `yaml:"keepalive" json:"keepalive,omitempty"` // seconds (0: speaker default)
	// BFD turns on single-hop BFD (RFC 5880/5881) with the peer.
	BFD *BGPPeerBFD `yaml:"bfd" json:"bfd,omitempty"`
}

// BGPPeerBFD is a peer's BFD timers; 0 takes the default (300 ms, 300 ms, 3).
type BGPPeerBFD struct {
	MinTxMs    int `yaml:"minTxMs" json:"minTxMs,omitempty"`       // desired minimum transmit interval, ms (10-60000)
	MinRxMs    int `yaml:"minRxMs" json:"minRxMs,omitempty"`       // required minimum receive interval, ms (10-60000)
	Multiplier int `yaml:"multiplier" json:"multiplier,omitempty"` // detect multiplier (1-255)
}

// BGPHoldDown is the hysteresis on re-announcing a withdrawn VIP (a flapping one).
type BGPHoldDown struct {
	Off       bool `yaml:"off" json:"off,omitempty"`
	InitialMs int  `yaml:"initialMs" json:"initialMs,omitempty"` // first delay, ms (0: 2000; 100-3600000)
	MaxMs     int  `yaml:"maxMs" json:"maxMs,omitempty"`         // bound of the doubling delay, ms (0: 60000)
}

// ServiceBGP tunes how a service's VIP is advertised.
type ServiceBGP struct {
	LocalPref *uint32 `yaml:"localPref" json:"localPref,omitempty"`
	MED       *uint32 `yaml:"med" json:"med,omitempty"`
}

// HostSpec is a server running the agents.
type HostSpec struct {
	Uplink   string            `yaml:"uplink" json:"uplink"`
	Address  string            `yaml:"address" json:"address"`
	Labels   map[string]string `yaml:"labels" json:"labels,omitempty"`
	ASN      uint32            `yaml:"asn" json:"asn,omitempty"`
	RouterID string            `yaml:"routerID" json:"routerID,omitempty"`
	BGPPeers []BGPPeer         `yaml:"bgpPeers" json:"bgpPeers,omitempty"`
	// BGPHoldDown tunes the flap hysteresis of the host's VIP announcements.
	BGPHoldDown *BGPHoldDown `yaml:"bgpHoldDown" json:"bgpHoldDown,omitempty"`
	// Capacity bounds what placement puts on the host; omitted or 0: no limit.
	Capacity *HostCapacity `yaml:"capacity" json:"capacity,omitempty"`
}

// HostCapacity is what a host offers its VMs. A VM takes its vcpus, its memoryMiB, and as
// disk the sizeGiB of each volume it names plus its 64 MiB root overlay. Placement puts at most
// capacity × overcommit of each resource on a host.
type HostCapacity struct {
	VCPUs     int `yaml:"vcpus" json:"vcpus,omitempty"`
	MemoryMiB int `yaml:"memoryMiB" json:"memoryMiB,omitempty"`
	DiskGiB   int `yaml:"diskGiB" json:"diskGiB,omitempty"`
	// Overcommit multiplies each capacity; omitted or 0: 1 (no overcommit).
	Overcommit *Overcommit `yaml:"overcommit" json:"overcommit,omitempty"`
}

// Overcommit is the ratio of what placement may put on a host to its capacity, per resource,
// from 1 to 64 (e.g. vcpus: 4 places up to 4 vCPUs per physical one); 0 means 1.
type Overcommit struct {
	VCPUs  float64 `yaml:"vcpus" json:"vcpus,omitempty"`
	Memory float64 `yaml:"memory" json:"memory,omitempty"`
	Disk   float64 `yaml:"disk" json:"disk,omitempty"`
}

// VMNetwork attaches a VM to a segment, optionally with fixed addresses.
type VMNetwork struct {
	Segment string `yaml:"segment" json:"segment"`
	IPv4    string `yaml:"ipv4" json:"ipv4,omitempty"`
	IPv6    string `yaml:"ipv6" json:"ipv6,omitempty"`
}

// VMSpec is a virtual machine.
type VMSpec struct {
	Department   string            `yaml:"department" json:"department"`
	VCPUs        int               `yaml:"vcpus" json:"vcpus"`
	MemoryMiB    int               `yaml:"memoryMiB" json:"memoryMiB"`
	Image        string            `yaml:"image" json:"image,omitempty"`
	Volumes      []string          `yaml:"volumes" json:"volumes,omitempty"`
	Networks     []VMNetwork       `yaml:"networks" json:"networks"`
	HostSelector map[string]string `yaml:"hostSelector" json:"hostSelector,omitempty"`
	Host         string            `yaml:"host" json:"host,omitempty"`
	// FloatingIP names a public address pool: a public address (Status.FloatingIP) is mapped
	// 1:1 to the VM's first IPv4 address, inbound (DNAT) and outbound (SNAT).
	FloatingIP string `yaml:"floatingIP" json:"floatingIP,omitempty"`
	// SSHKeys are OpenSSH public keys ("ssh-ed25519 AAAA... comment") the guest's root account
	// accepts; an image other than tiny gets them through its NoCloud seed.
	SSHKeys []string `yaml:"sshKeys" json:"sshKeys,omitempty"`
	// PowerState is PowerRunning (the default, when omitted) or PowerStopped: a stopped VM
	// keeps its definition, root disk and volumes, and starts again when set back to running.
	PowerState string `yaml:"powerState" json:"powerState,omitempty"`
	// RestartGeneration reboots the VM once each time it is raised (the compute agent stops
	// and starts it, disks kept); 0 or more. Lowering it only records the value.
	RestartGeneration int `yaml:"restartGeneration" json:"restartGeneration,omitempty"`
}

// The values of VMSpec.PowerState.
const (
	PowerRunning = "running"
	PowerStopped = "stopped"
)

// TinyImage is the built-in guest image (a kernel and a busybox initramfs made on each host);
// it needs no Image object, and no Image may take its name. A VM without an image boots it.
const TinyImage = "tiny"

// ImageOS lists the values of ImageSpec.OS: the guest families whose images boot from their
// own disk and take a NoCloud seed (hostname, SSH keys, addresses).
var ImageOS = []string{"debian", "ubuntu", "linux"}

// ImageSpec is a guest image in the hosts' image store (the compute agent's --image-store
// directory, /var/cache/govcloud/images by default). Source is the image file's path relative
// to the store (a bootable qcow2 disk: "debian-12.qcow2"), SHA256 the lower-case hex sha256 of
// that file (64 characters; the compute agent checks it before booting the image and refuses a
// mismatch), OS one of ImageOS.
type ImageSpec struct {
	Source string `yaml:"source" json:"source"`
	SHA256 string `yaml:"sha256" json:"sha256"`
	OS     string `yaml:"os" json:"os"`
}

// VolumeSpec is a block volume.
type VolumeSpec struct {
	Department string `yaml:"department" json:"department"`
	SizeGiB    int    `yaml:"sizeGiB" json:"sizeGiB"`
	Image      string `yaml:"image" json:"image,omitempty"`
	// RestoreFrom names a volume backup ('govcloud volume backup': its id, e.g.
	// lands-data-20261205T101500Z) in the compute agents' backup directory: the volume is
	// made from it when its host first makes it (verified against the backup's sha256 first).
	// It only seeds: a volume that exists is never overwritten.
	RestoreFrom string `yaml:"restoreFrom" json:"restoreFrom,omitempty"`
}

func (*DepartmentSpec) kind() string { return KindDepartment }
func (*SegmentSpec) kind() string    { return KindSegment }
func (*AddressPool) kind() string    { return KindAddressPool }
func (*ServiceSpec) kind() string    { return KindService }
func (*HostSpec) kind() string       { return KindHost }
func (*VMSpec) kind() string         { return KindVM }
func (*VolumeSpec) kind() string     { return KindVolume }
func (*ImageSpec) kind() string      { return KindImage }

// NewSpec returns an empty spec for kind, or nil when the kind is unknown.
func NewSpec(kind string) Spec {
	switch kind {
	case KindDepartment:
		return &DepartmentSpec{}
	case KindSegment:
		return &SegmentSpec{}
	case KindAddressPool:
		return &AddressPool{}
	case KindService:
		return &ServiceSpec{}
	case KindHost:
		return &HostSpec{}
	case KindVM:
		return &VMSpec{}
	case KindVolume:
		return &VolumeSpec{}
	case KindImage:
		return &ImageSpec{}
	case KindPriceList:
		return &PriceListSpec{}
	case KindSecurityPolicy:
		return &SecurityPolicySpec{}
	}
	return nil
}

// UnmarshalJSON decodes an object, choosing the spec type from its kind.
func (o *Object) UnmarshalJSON(b []byte) error {
	var raw struct {
		APIVersion string          `json:"apiVersion"`
		Kind       string          `json:"kind"`
		Metadata   Metadata        `json:"metadata"`
		Spec       json.RawMessage `json:"spec"`
		Status     Status          `json:"status"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	spec := NewSpec(raw.Kind)
	if spec == nil {
		return fmt.Errorf("object %q: unknown kind %q", raw.Metadata.Name, raw.Kind)
	}
	if len(raw.Spec) > 0 && string(raw.Spec) != "null" {
		if err := json.Unmarshal(raw.Spec, spec); err != nil {
			return fmt.Errorf("%s %q: spec: %w", raw.Kind, raw.Metadata.Name, err)
		}
	}
	*o = Object{APIVersion: raw.APIVersion, Kind: raw.Kind, Metadata: raw.Metadata, Spec: spec, Status: raw.Status}
	return nil
}

// Clone returns a deep copy (through JSON; objects are small).
func (o *Object) Clone() *Object {
	b, err := json.Marshal(o)
	if err != nil {
		panic(err)
	}
	var c Object
	if err := json.Unmarshal(b, &c); err != nil {
		panic(err)
	}
	c.Source = o.Source
	return &c
}

// State is a whole set of objects: what the store holds, or what it would hold after an apply.
type State struct {
	Objects map[Key]*Object
}

// NewState returns an empty state.
func NewState() *State { return &State{Objects: map[Key]*Object{}} }

// Get returns the object or nil.
func (s *State) Get(kind, name string) *Object { return s.Objects[Key{kind, name}] }

// List returns the objects of kind ("" = all) sorted by kind order then name.
func (s *State) List(kind string) []*Object {
	var out []*Object
	for k, o := range s.Objects {
		if kind == "" || k.Kind == kind {
			out = append(out, o)
		}
	}
	SortObjects(out)
	return out
}

// SortObjects orders objects by kind (dependency order) then name.
func SortObjects(objs []*Object) {
	sort.Slice(objs, func(i, j int) bool {
		a, b := objs[i], objs[j]
		if a.Kind != b.Kind {
			return KindOrder(a.Kind) < KindOrder(b.Kind)
		}
		return a.Metadata.Name < b.Metadata.Name
	})
}

// Copy returns a shallow copy of the map (objects shared).
func (s *State) Copy() *State {
	c := NewState()
	for k, o := range s.Objects {
		c.Objects[k] = o
	}
	return c
}
