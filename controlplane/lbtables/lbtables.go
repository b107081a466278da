// Package lbtables is the wire contract of the shared Maglev tables (issue 19) and the one
// translation from a desired service to load-balancer backends that both the controller (which
// computes each table) and the agents (which write it) use, so they agree on every table's
// name and backend keys. It depends on the standard library, lb and desired only.
//
// Design: Maglev tables built incrementally (lb.Table: 0 collateral remaps per change) depend
// on the sequence of backend sets they were fed, and hosts see different sequences (a long
// poll coalesces changes, a restart without pins or a new host starts from nothing). So one
// place that sees every change in order — the controller — computes each table from its own
// previous one (lb.NextShared) and stores it with a generation in etcd; agents fetch what
// they miss (lb.Delta: the slots changed since the generation they hold, or the whole table
// DEFLATE-compressed), verify the SHA-256 (lb.SharedTable.Sum) and write it through
// lb.State.Plan, which translates backend indices to the host's own backend IDs and swaps
// each VIP's table atomically. A host advertises VIPs only once its tables are verified.
package lbtables

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"

	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/lb"
)

// Name is the table (and load-balancer service) name of one port of a service:
// "service/port/proto", e.g. "lands-www/443/tcp".
func Name(service string, port uint16, proto lb.Protocol) string {
	return fmt.Sprintf("%s/%d/%s", service, port, proto)
}

// Backends is the load balancer's backend list of a desired service, in first-seen order:
// one backend per tunnel endpoint for dsr (the host a VM runs on, from hostAddr; weights of
// the VMs there summed) and per address for nat. Only backends up reports true for count (nil:
// all). Backends without an address or whose host's address is unknown are left out and
// reported. Port is 0: PortBackends sets it.
func Backends(svc desired.Service, mode lb.Mode, hostAddr func(string) (netip.Addr, bool), up func(desired.Backend) bool) ([]lb.Backend, []error) {
	var errs []error
	var out []lb.Backend
	at := map[netip.Addr]int{}
	for _, b := range svc.Backends {
		addr := b.Address
		if !addr.IsValid() {
			errs = append(errs, fmt.Errorf("service %q: backend of vm %q: no address", svc.Name, b.VM))
			continue
		}
		if up != nil && !up(b) {
			continue
		}
		target := addr
		if mode == lb.DSR && b.Host != "" {
			ha, ok := hostAddr(b.Host)
			if !ok {
				errs = append(errs, fmt.Errorf("service %q: backend %s: address of host %q unknown", svc.Name, addr, b.Host))
				continue
			}
			target = ha
		}
		i, seen := at[target]
		if !seen {
			i = len(out)
			at[target] = i
			out = append(out, lb.Backend{Addr: target})
		}
		out[i].Weight += uint32(max(b.Weight, 0))
	}
	return out, errs
}

// PortBackends is bs for one port of a service: nat backends listen on the port's target port
// when it differs from the port.
func PortBackends(bs []lb.Backend, mode lb.Mode, port desired.Port) []lb.Backend {
	if len(bs) == 0 {
		return nil
	}
	out := make([]lb.Backend, len(bs))
	copy(out, bs)
	if mode == lb.NAT && port.TargetPort != 0 && port.TargetPort != port.Port {
		for i := range out {
			out[i].Port = uint16(port.TargetPort)
		}
	}
	return out
}

// Desired is every table's backend set for st: by Name, every backend counted whatever its
// health (hosts leave out the ones they hold down when writing, lb.SharedTable.Effective).
// Services and ports that do not translate are left out and reported; internal services are
// left out (no load balancer holds them).
func Desired(st *desired.State) (map[string][]lb.Backend, []error) {
	hostAddr := func(h string) (netip.Addr, bool) {
		a := st.Hosts[h]
		return a, a.IsValid()
	}
	out := map[string][]lb.Backend{}
	var errs []error
	for _, svc := range st.Services {
		if svc.Scope == "internal" { // routed by the department's tables, not load-balanced (agent)
			continue
		}
		mode, err := lb.ParseMode(svc.Mode)
		if err != nil {
			errs = append(errs, fmt.Errorf("service %q: %w", svc.Name, err))
			continue
		}
		bs, berrs := Backends(svc, mode, hostAddr, nil)
		errs = append(errs, berrs...)
		for _, p := range svc.Ports {
			proto, err := lb.ParseProtocol(strings.ToLower(p.Protocol))
			if err != nil || p.Port <= 0 || p.Port > 65535 {
				errs = append(errs, fmt.Errorf("service %q: port %d/%s: not balanced", svc.Name, p.Port, p.Protocol))
				continue
			}
			out[Name(svc.Name, uint16(p.Port), proto)] = PortBackends(bs, mode, p)
		}
	}
	return out, errs
}

// Summary is one table as the controller holds it: its generation and the hex SHA-256 of its
// content (lb.SharedTable.Sum).
type Summary struct {
	Generation uint64 `json:"generation"`
	Sum        string `json:"sum"`
}

// SummaryOf is t's Summary.
func SummaryOf(t *lb.SharedTable) Summary {
	s := t.Sum()
	return Summary{Generation: t.Generation, Sum: hex.EncodeToString(s[:])}
}

// FetchRequest asks for the tables a host misses (POST /v1/hosts/{name}/lbtables).
type FetchRequest struct {
	// MinRevision is the store revision of the host's desired state: the controller answers
	// once its tables cover it (or after WaitMs, with what it has).
	MinRevision int64 `json:"minRevision"`
	// Have maps each table the host holds to its generation; tables missing here come whole.
	Have map[string]uint64 `json:"have,omitempty"`
	// WaitMs bounds the wait for MinRevision (0: 10 s; at most 60 s).
	WaitMs int64 `json:"waitMs,omitempty"`
}

// FetchResponse is the answer: Revision is the store revision the tables were computed at,
// Size their slot count; Tables holds a delta (or the whole table) for every table whose
// generation differs from the request's Have, and Current every table's summary (tables the
// host holds that are not in Current are gone).
type FetchResponse struct {
	Revision int64               `json:"revision"`
	Size     uint32              `json:"size"`
	Tables   map[string]lb.Delta `json:"tables,omitempty"`
	Current  map[string]Summary  `json:"current"`
}

// Bytes is the size of the response's table content: every delta's compressed slots and its
// backend keys (what "bytes fetched" counts).
func (r *FetchResponse) Bytes() int {
	n := 0
	for _, d := range r.Tables {
		n += len(d.Slots) + len(d.Sum)
		for _, b := range d.Backends {
			n += len(b.Key) + 4
		}
	}
	return n
}
