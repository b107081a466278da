// Package metering turns the dataplane's counters into Prometheus metrics and usage into
// money: a Collector that reads every counter as a sum at scrape time (no counter state in
// the process, so an agent crash loses nothing), a Ledger that counts each reported delta
// exactly once, and the rating of a month's usage against a price list. It is the only
// package that imports the Prometheus client library.
//
// The package never imports the agent: the agent's command wires it through the small
// source interfaces below, each with a fake beside it for tests.
package metering

// Traffic is one department segment's counters in one direction, by name.
type Traffic struct {
	Department string
	Segment    string
	Direction  string // rx | tx
	Packets    uint64
	Bytes      uint64
}

// Drop is one drop counter; Department and Segment are "" when the frame could not be
// attributed (unknown VLAN).
type Drop struct {
	Department string
	Segment    string
	Reason     string
	Packets    uint64
}

// SegmentRef names a configured segment of a department.
type SegmentRef struct {
	Department string
	Segment    string
}

// TrafficSource reads the per-department trunk counters.
type TrafficSource interface {
	// Segments lists every configured segment: each gets series at 0 before any traffic.
	Segments() []SegmentRef
	Traffic() ([]Traffic, error)
	Drops() ([]Drop, error)
}

// ServiceCounter is one service's load-balancer counters: frames to its VIP that this host's
// load balancer balanced (bytes: whole frames as received on the uplink).
type ServiceCounter struct {
	Department  string
	Service     string
	Public      bool // a public VIP (the fabric's routing domain), not an internal one
	Bytes       uint64
	Packets     uint64
	Connections uint64
}

// BackendState is the health of one backend of a service.
type BackendState struct {
	Department string
	Service    string
	Backend    string // VM name or address
	Up         bool
}

// ServiceSource reads per-service counters and backend health.
type ServiceSource interface {
	Services() ([]ServiceCounter, error)
	Backends() ([]BackendState, error)
}

// BackendConnections is one service's active connections to one load-balancer target (the
// backend's host for dsr, the backend for nat) on this host.
type BackendConnections struct {
	Department string
	Service    string
	Target     string // address
	Active     int
}

// ConnectionSource is what a ServiceSource may also offer: the load balancer's active
// connections (govcloud_backend_active_connections).
type ConnectionSource interface {
	Connections() ([]BackendConnections, error)
}

// BGPSession is one BGP peer's state and what this host advertises to it.
type BGPSession struct {
	Peer       string
	Up         bool
	Advertised int
	// BFD is the peer's BFD session state: "" when the peer has no BFD, else up, down,
	// init or admindown.
	BFD string
}

// BGPSource reads the speaker's sessions.
type BGPSource interface {
	Sessions() ([]BGPSession, error)
}

// VMUsage is one VM's CPU time and one volume's allocation, from the compute agent.
type VMUsage struct {
	Department  string
	VM          string
	VCPUSeconds float64
}

// VolumeUsage is one volume's allocated size.
type VolumeUsage struct {
	Department     string
	Volume         string
	AllocatedBytes uint64
}

// ComputeSource reads VM and volume usage.
type ComputeSource interface {
	VMs() ([]VMUsage, error)
	Volumes() ([]VolumeUsage, error)
}

// Sources is what a Collector reads; nil members are skipped.
type Sources struct {
	Host    string
	Traffic TrafficSource
	Service ServiceSource
	BGP     BGPSource
	Compute ComputeSource
}
