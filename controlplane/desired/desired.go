// Package desired is the plain description of what one host must realize, as the controller
// sends it to the agents: segments, department VRFs, services with resolved backends, BGP peers
// and the VMs/volumes placed on the host. It depends on the standard library only, so agents can
// import it without pulling in etcd. Addresses are netip.Addr and prefixes netip.Prefix; their
// JSON form is their text form ("198.18.20.10", "198.18.20.0/24"), and an unset optional one is
// left out. Decode reads a State and names the field of a malformed address.
package desired

import (
	"fmt"
	"net/netip"
	"slices"
)

// State is everything one host must realize. Revision is the store revision it was computed
// at; agents pass it back to wait for the next change.
type State struct {
	Host        string       `json:"host"`
	Revision    int64        `json:"revision"`
	Uplink      string       `json:"uplink,omitempty"`
	Address     netip.Addr   `json:"address,omitzero"` // fabric address
	Departments []Department `json:"departments"`
	Segments    []Segment    `json:"segments"`
	Services    []Service    `json:"services"`
	BGP         *BGP         `json:"bgp,omitempty"`
	VMs         []VM         `json:"vms"`
	Volumes     []Volume     `json:"volumes"`
	// Images are the Image objects this host's VMs and volumes name (the built-in tiny needs
	// none), sorted by name.
	Images []Image `json:"images,omitempty"`
	// Hosts maps every host's name to its fabric address: the dsr tunnel endpoint of the
	// backends running there.
	Hosts map[string]netip.Addr `json:"hosts,omitempty"`
	// RemoteGuests are the VM interfaces on other hosts: the local distributed gateway needs
	// their MAC and address to route to them without ARP crossing the trunk.
	RemoteGuests []RemoteGuest `json:"remoteGuests,omitempty"`
	// Guards are the security policies of the VMs on this host, resolved by the controller:
	// hosts get addresses, never labels.
	Guards []Guard `json:"guards,omitempty"`
}

// Guard is what the security policies selecting VM allow to it (config.SecurityPolicySpec):
// traffic from the department's segments to the VM's own addresses passes only when a rule
// allows it, or belongs to an allowed connection.
type Guard struct {
	VM       string      `json:"vm"`
	Policies []string    `json:"policies"` // the policies that select the VM, by name
	Rules    []GuardRule `json:"rules"`
}

// GuardRule allows Protocol (tcp, udp, icmp or any) to Ports (none: every port) from
// Sources. A rule without sources (its VM labels matched no VM with an address) allows nothing.
type GuardRule struct {
	Policy   string         `json:"policy"`
	Sources  []netip.Prefix `json:"sources"`
	Protocol string         `json:"protocol"`
	Ports    []PortRange    `json:"ports,omitempty"`
}

// PortRange is the destination ports First to Last, inclusive.
type PortRange struct {
	First int `json:"first"`
	Last  int `json:"last"`
}

// RemoteGuest is one VM interface placed on another host.
type RemoteGuest struct {
	VM      string     `json:"vm"`
	Host    string     `json:"host"`
	Segment string     `json:"segment"`
	MAC     string     `json:"mac"`
	Addr4   netip.Addr `json:"addr4"`
	Addr6   netip.Addr `json:"addr6,omitzero"`
}

// Department is a tenant's VRF-lite: its routing table.
type Department struct {
	Name          string `json:"name"`
	TableID       int    `json:"tableId"`
	BandwidthMbps int    `json:"bandwidthMbps,omitempty"`
	// Egress is the department's SNAT address on this host (from its spec.egress pool):
	// its segments' traffic leaving through the uplink takes it as source; unset, none does.
	Egress netip.Addr `json:"egress,omitzero"`
}

// Segment is one department L2 segment carried on the host's trunk.
type Segment struct {
	Name       string       `json:"name"`
	Department string       `json:"department"`
	Fabric     string       `json:"fabric"`
	VLAN       int          `json:"vlan"`
	Prefix4    netip.Prefix `json:"prefix4"` // the segment's network, e.g. 198.18.20.0/24
	Gateway4   netip.Addr   `json:"gateway4"`
	Prefix6    netip.Prefix `json:"prefix6,omitzero"`
	Gateway6   netip.Addr   `json:"gateway6,omitzero"`
	TableID    int          `json:"tableId"`
}

// Port is one listening port of a service.
type Port struct {
	Port       int    `json:"port"`
	Protocol   string `json:"protocol"`
	TargetPort int    `json:"targetPort"`
}

// Backend is one real server.
type Backend struct {
	Address netip.Addr `json:"address"`
	Weight  int        `json:"weight"`
	VM      string     `json:"vm,omitempty"`
	Host    string     `json:"host,omitempty"` // host the VM runs on, when a VM
	Segment string     `json:"segment,omitempty"`
}

// HealthCheck probes backends; durations in milliseconds.
type HealthCheck struct {
	Type               string `json:"type"`
	Port               int    `json:"port,omitempty"`
	Path               string `json:"path,omitempty"`
	IntervalMs         int64  `json:"intervalMs"`
	TimeoutMs          int64  `json:"timeoutMs"`
	HealthyThreshold   int    `json:"healthyThreshold"`
	UnhealthyThreshold int    `json:"unhealthyThreshold"`
}

// Service is a VIP to load-balance.
type Service struct {
	Name        string       `json:"name"`
	Department  string       `json:"department"`
	VIP         netip.Addr   `json:"vip"`
	Scope       string       `json:"scope"` // public (advertise) | internal
	Mode        string       `json:"mode"`  // nat | dsr
	Ports       []Port       `json:"ports"`
	Backends    []Backend    `json:"backends"`
	HealthCheck *HealthCheck `json:"healthCheck,omitempty"`
	TableID     int          `json:"tableId"`
	LocalPref   *uint32      `json:"localPref,omitempty"` // BGP, when set on the service
	MED         *uint32      `json:"med,omitempty"`
}

// BGP is the host's speaker configuration.
type BGP struct {
	ASN      uint32     `json:"asn"`
	RouterID netip.Addr `json:"routerID,omitzero"` // IPv4; unset: the speaker picks
	Peers    []Peer     `json:"peers"`
	// HoldDown is the flap hysteresis on re-announcing withdrawn VIPs (nil: defaults).
	HoldDown *HoldDown `json:"holdDown,omitempty"`
}

// HoldDown delays re-announcing a withdrawn VIP: InitialMs, doubling per withdrawal up to
// MaxMs (0: 2000 and 60000); Off announces at once.
type HoldDown struct {
	Off       bool `json:"off,omitempty"`
	InitialMs int  `json:"initialMs,omitempty"`
	MaxMs     int  `json:"maxMs,omitempty"`
}

// BFD is a peer's single-hop BFD timers (0: 300 ms, 300 ms, 3).
type BFD struct {
	MinTxMs    int `json:"minTxMs,omitempty"`
	MinRxMs    int `json:"minRxMs,omitempty"`
	Multiplier int `json:"multiplier,omitempty"`
}

// Peer is one BGP neighbour; the password is read by the agent from the file or variable.
type Peer struct {
	Address         netip.Addr `json:"address"`
	ASN             uint32     `json:"asn"`
	PasswordFile    string     `json:"passwordFile,omitempty"`
	PasswordEnv     string     `json:"passwordEnv,omitempty"`
	GracefulRestart bool       `json:"gracefulRestart,omitempty"`
	Multihop        int        `json:"multihop,omitempty"`
	HoldTime        int        `json:"holdTime,omitempty"`  // seconds; 0: speaker default
	Keepalive       int        `json:"keepalive,omitempty"` // seconds; 0: speaker default
	BFD             *BFD       `json:"bfd,omitempty"`       // nil: no BFD
}

// VM is a virtual machine placed on this host.
type VM struct {
	Name       string      `json:"name"`
	Department string      `json:"department"`
	VCPUs      int         `json:"vcpus"`
	MemoryMiB  int         `json:"memoryMiB"`
	Image      string      `json:"image,omitempty"`
	Volumes    []string    `json:"volumes,omitempty"`
	Interfaces []Interface `json:"interfaces"`
	// FloatingIP is a public address mapped 1:1 to the first IPv4 address of Interfaces:
	// inbound to it is translated to the VM (DNAT), the VM's outbound takes it as source.
	FloatingIP netip.Addr `json:"floatingIP,omitzero"`
	// SSHKeys are the OpenSSH public keys the guest's root accepts (its NoCloud seed).
	SSHKeys []string `json:"sshKeys,omitempty"`
	// PowerState is "running" (also when empty) or PowerStopped (config.VMSpec.PowerState).
	PowerState string `json:"powerState,omitempty"`
	// RestartGeneration restarts the VM each time it is raised (config.VMSpec).
	RestartGeneration int `json:"restartGeneration,omitempty"`
}

// PowerStopped is VM.PowerState of a VM asked to be stopped: its guest port is absent by design.
const PowerStopped = "stopped"

// Image is a guest image in the host's image store: Source is the file's path relative to the
// store, SHA256 its lower-case hex sha256 (checked before use), OS its family (config.ImageOS).
type Image struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	SHA256 string `json:"sha256"`
	OS     string `json:"os"`
}

// Interface is a VM NIC on a segment.
type Interface struct {
	Segment string `json:"segment"`
	VLAN    int    `json:"vlan"`
	MAC     string `json:"mac"`
	// Prefix4 and Prefix6 are the NIC's address with its segment's prefix length, not masked:
	// 198.18.20.10/24.
	Prefix4  netip.Prefix `json:"prefix4,omitzero"`
	Prefix6  netip.Prefix `json:"prefix6,omitzero"`
	Gateway4 netip.Addr   `json:"gateway4,omitzero"`
	// Gateway6 is the segment's IPv6 gateway, set when Prefix6 is (the guest's IPv6 default
	// route).
	Gateway6 netip.Addr `json:"gateway6,omitzero"`
}

// Volume is a block volume of this host: used by a VM placed here, or kept here (its
// status.host) with no VM using it. The compute agent keeps exactly these of its volumes.
type Volume struct {
	Name       string `json:"name"`
	Department string `json:"department"`
	SizeGiB    int    `json:"sizeGiB"`
	Image      string `json:"image,omitempty"`
	// RestoreFrom is the volume backup the volume is made from when its host first makes it.
	RestoreFrom string `json:"restoreFrom,omitempty"`
}

// DSRVIPs maps each VM to the VIPs of the dsr services it backs, without repeats: the
// addresses it answers from (on its lo), and may send from.
func (st *State) DSRVIPs() map[string][]netip.Addr {
	out := map[string][]netip.Addr{}
	for _, svc := range st.Services {
		vip := svc.VIP
		if !vip.IsValid() || svc.Mode != "dsr" {
			continue
		}
		for _, b := range svc.Backends {
			if b.VM != "" && !slices.Contains(out[b.VM], vip) {
				out[b.VM] = append(out[b.VM], vip)
			}
		}
	}
	return out
}

// GuestPortPrefix begins every guest port name (GuestPort).
const GuestPortPrefix = "gv"

// GuestPort is the host-side interface name of a VM's NIC on a segment, shared by the network
// agent (anti-spoofing, VIP routes) and the compute agent (which creates it): GuestPortPrefix
// and the 32-bit FNV-1a hash of "vm/segment" in hex, 10 bytes (an interface name has at most 15).
func GuestPort(vm, segment string) string {
	h := uint32(2166136261)
	for _, c := range []byte(vm + "/" + segment) {
		h = (h ^ uint32(c)) * 16777619
	}
	return fmt.Sprintf("%s%08x", GuestPortPrefix, h)
}

// IsGuestPort reports whether name has GuestPort's form.
func IsGuestPort(name string) bool {
	if len(name) != len(GuestPortPrefix)+8 || name[:len(GuestPortPrefix)] != GuestPortPrefix {
		return false
	}
	for _, c := range name[len(GuestPortPrefix):] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
