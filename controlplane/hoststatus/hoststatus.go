// Package hoststatus is what a network agent reports about its host, as the controller stores
// and serves it: readiness per object, the load balancer's attachment, the health of the
// backends the host checks and its BGP sessions. The agent writes it, the controller keeps of
// it only the backend health the host may know and serves each agent its peers' share, and the
// CLI and the lab read it. It depends on the standard library and controlplane/bgp only.
package hoststatus

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/govcloud/govcloud/controlplane/bgp"
)

// Status is one network agent's report: per object "ready" or "not ready: reason".
type Status struct {
	Host string `json:"host"`
	// Version is the agent's build, "VERSION (COMMIT)" (internal/buildinfo.Info.Short).
	Version  string            `json:"version,omitempty"`
	Revision int64             `json:"revision"`
	Ready    bool              `json:"ready"`
	Error    string            `json:"error,omitempty"`
	Uplink   string            `json:"uplink,omitempty"`
	XDP      string            `json:"xdp"`
	Segments map[string]string `json:"segments"`
	Services map[string]string `json:"services"`
	// Guests are the VMs placed on this host, by name: "ready" once each of its ports joined
	// its segment bridge, else "not ready: reason" (a broken guest is its own fault, not its
	// segments').
	Guests map[string]string `json:"guests,omitempty"`
	// Backends are the health of the backends this host checks; other agents read them (through
	// the controller's peer health) to stop sending to backends that are down.
	Backends Backends `json:"backends,omitempty"`
	// Advertise lists the public VIPs with at least one healthy backend.
	Advertise []string `json:"advertise,omitempty"`
	// BGP is the state of each peer session.
	BGP []bgp.PeerStatus `json:"bgp,omitempty"`
	// Departments are the departments of the desired state the agent holds (every department
	// that exists at Revision), sorted: with Segments and Services, what a restored controller's
	// store can be compared with (objects the hosts hold that a restore lost).
	Departments []string `json:"departments,omitempty"`
	// Writes counts the dataplane writes the agent made since it started, by part: "hostnet"
	// (links, rules, routes, nftables, trunk maps), "lb" (load-balancer maps), "routes" (VIP
	// routes). A pass over a state the host already holds adds 0.
	Writes map[string]uint64 `json:"writes,omitempty"`
	// Tables are the shared Maglev tables this host holds, by load-balancer service name
	// ("service/port/proto"); TablesMode is "shared" (the controller's tables) or "local"
	// (each host's own history, kept for comparison).
	Tables     map[string]LBTable `json:"tables,omitempty"`
	TablesMode string             `json:"tablesMode,omitempty"`
	// Connections are this host's load balancer's active connections per service and target
	// when the report was made (connection-table entries used within ActiveWindow); targets
	// with none are left out. What "govcloud status" shows for a draining backend.
	Connections []Connections `json:"connections"` // null: the agent does not count (not omitted: [] is "none")
}

// LBTable is one shared Maglev table as a host holds it: the generation and hex SHA-256 of
// the controller's table it holds (lb.SharedTable.Sum), Mismatch when that differs from the
// controller's last summary or the table written differs from it (the host's view of
// backend health aside), and why it could not be written (Error).
type LBTable struct {
	Generation uint64 `json:"generation"`
	Sum        string `json:"sum"`
	Mismatch   bool   `json:"mismatch,omitempty"`
	Error      string `json:"error,omitempty"`
}

// ActiveWindow is how recently a connection-table entry must have been used to count as an
// active connection.
const ActiveWindow = time.Minute

// Connections is one service's active connections to one target on one load balancer: the
// address it sends to, the backend's host (dsr) or the backend itself (nat).
type Connections struct {
	Service string     `json:"service"`
	Target  netip.Addr `json:"target"`
	Active  int        `json:"active"`
}

// Report is one stored report as the controller returns it (GET /v1/status, "hosts"): the
// host, when the controller stored it, and the agent's status.
type Report struct {
	Host   string    `json:"host"`
	Time   time.Time `json:"time"`
	Status Status    `json:"status"`
}

// BackendKey names one backend of one service.
type BackendKey struct {
	Service string
	Addr    netip.Addr
}

// String is "service/address", for logs and audit entries.
func (k BackendKey) String() string { return k.Service + "/" + k.Addr.String() }

// Health is one backend's health check outcome; Reason says why it is down ("" when up).
type Health struct {
	Up     bool
	Reason string
}

// Backends is backend health by backend. Its JSON form is a list sorted by service, then
// address: [{"service": "lands-www", "address": "198.18.20.2", "up": false, "reason":
// "connection refused"}, ...]. Decoding fails on an entry without a service, with an address
// that is not an IP address, or repeating an earlier entry's backend, naming the entry.
type Backends map[BackendKey]Health

type backendJSON struct {
	Service string `json:"service"`
	Address string `json:"address"`
	Up      bool   `json:"up"`
	Reason  string `json:"reason,omitempty"`
}

// Keys returns the backends' keys sorted by service, then address.
func (b Backends) Keys() []BackendKey {
	keys := make([]BackendKey, 0, len(b))
	for k := range b {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y BackendKey) int {
		return cmp.Or(cmp.Compare(x.Service, y.Service), x.Addr.Compare(y.Addr))
	})
	return keys
}

// Down returns the backends that are down (nil if none).
func (b Backends) Down() Backends {
	var out Backends
	for k, h := range b {
		if !h.Up {
			if out == nil {
				out = Backends{}
			}
			out[k] = h
		}
	}
	return out
}

// MarshalJSON writes the sorted list; a nil map is null.
func (b Backends) MarshalJSON() ([]byte, error) {
	if b == nil {
		return []byte("null"), nil
	}
	list := make([]backendJSON, 0, len(b))
	for _, k := range b.Keys() {
		h := b[k]
		list = append(list, backendJSON{Service: k.Service, Address: k.Addr.String(), Up: h.Up, Reason: h.Reason})
	}
	return json.Marshal(list)
}

// UnmarshalJSON reads the list MarshalJSON writes; null leaves a nil map.
func (b *Backends) UnmarshalJSON(data []byte) error {
	var list []backendJSON
	if err := json.Unmarshal(data, &list); err != nil {
		return fmt.Errorf("want a list of {service, address, up, reason}: %w", err)
	}
	if list == nil {
		*b = nil
		return nil
	}
	out := make(Backends, len(list))
	for i, e := range list {
		if e.Service == "" {
			return fmt.Errorf("backends[%d].service: empty", i)
		}
		addr, err := netip.ParseAddr(e.Address)
		if err != nil {
			return fmt.Errorf("backends[%d].address of service %q: %w", i, e.Service, err)
		}
		k := BackendKey{Service: e.Service, Addr: addr}
		if _, dup := out[k]; dup {
			return fmt.Errorf("backends[%d]: %s repeated", i, k)
		}
		out[k] = Health{Up: e.Up, Reason: e.Reason}
	}
	*b = out
	return nil
}
