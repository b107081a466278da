package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"sync"

	"github.com/govcloud/govcloud/controlplane/desired"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
)

// FilterPeerHealth keeps, of a network agent's status report (a JSON object), only the backend
// health the reporting host can know: its "backends" (hoststatus.Backends) keep entries for
// backends the controller placed on that host and for plain-address backends (no host: every
// host checks those itself, and agents never take a peer's word for them). Entries for another
// host's backends, or for no backend at all, are dropped and returned ("service/address",
// sorted). st is the reporting host's desired state (nil: an unknown host, every entry
// dropped). Other members are kept as sent. A body that is not an object, or whose backends do
// not decode as hoststatus.Backends, is an error.
func FilterPeerHealth(body []byte, st *desired.State) ([]byte, []string, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		return nil, nil, fmt.Errorf("want a JSON object: %w", err)
	}
	raw, ok := obj["backends"]
	if !ok || string(raw) == "null" {
		return body, nil, nil
	}
	var backends hoststatus.Backends
	if err := json.Unmarshal(raw, &backends); err != nil {
		return nil, nil, fmt.Errorf("backends: %w", err)
	}
	mine := map[hoststatus.BackendKey]bool{}
	if st != nil {
		for k, h := range placedBackends(st) {
			if h == "" || h == st.Host {
				mine[k] = true
			}
		}
	}
	var dropped []string
	for k := range backends {
		if !mine[k] {
			dropped = append(dropped, k.String())
			delete(backends, k)
		}
	}
	if len(dropped) == 0 {
		return body, nil, nil
	}
	sort.Strings(dropped)
	b, err := json.Marshal(backends)
	if err != nil {
		return nil, nil, fmt.Errorf("backends: %w", err)
	}
	obj["backends"] = b
	out, err := json.Marshal(obj)
	return out, dropped, err
}

// placedBackends maps every backend of st's services with an IP address to the host it is
// placed on ("" for a plain-address backend).
func placedBackends(st *desired.State) map[hoststatus.BackendKey]string {
	out := map[hoststatus.BackendKey]string{}
	for _, svc := range st.Services {
		for _, b := range svc.Backends {
			if b.Address.IsValid() {
				out[hoststatus.BackendKey{Service: svc.Name, Addr: b.Address}] = b.Host
			}
		}
	}
	return out
}

// MaxStatusBytes bounds one agent's status report. A host serving 1200 VIPs (30 departments x
// 4 segments x 10 services, the scale lab's) reports about 300 KiB, mostly its per-service
// state and Maglev table sums; this leaves room for about three times that.
const MaxStatusBytes = 1 << 20

// PeerHealth is what one agent needs of its peers' reports (reports: host -> stored
// hoststatus.Report): for each other host, the backends placed on that host, of services this
// host serves, that the host found down. Hosts with none are left out; a report that does not
// decode counts as none.
func PeerHealth(reports map[string]json.RawMessage, self *desired.State) map[string]hoststatus.Backends {
	return peerHealth(reports, self, func(_ string, raw json.RawMessage) hoststatus.Backends { return reportedDown(raw) })
}

// reportedDown is the backends a stored report says are down (nil when it does not decode).
func reportedDown(raw json.RawMessage) hoststatus.Backends {
	var rep struct {
		Status struct {
			Backends hoststatus.Backends `json:"backends"`
		} `json:"status"`
	}
	if json.Unmarshal(raw, &rep) != nil {
		return nil
	}
	return rep.Status.Backends.Down()
}

func peerHealth(reports map[string]json.RawMessage, self *desired.State, downOf func(host string, raw json.RawMessage) hoststatus.Backends) map[string]hoststatus.Backends {
	out := map[string]hoststatus.Backends{}
	if self == nil {
		return out
	}
	placed := placedBackends(self)
	for h, raw := range reports {
		if h == self.Host {
			continue
		}
		var down hoststatus.Backends
		for k, health := range downOf(h, raw) {
			if placed[k] == h {
				if down == nil {
					down = hoststatus.Backends{}
				}
				down[k] = health
			}
		}
		if down != nil {
			out[h] = down
		}
	}
	return out
}

// downCache keeps, per host, the down backends of its last stored report, with the report.
// Every agent reads its peers' health every second; decoding every peer's whole report (about
// 300 KiB at 1200 VIPs) on every read was a third of the controller's CPU in the 8-host scale
// lab, while a report changes only when its host's state does.
type downCache struct {
	mu sync.Mutex
	m  map[string]cachedDown
}

type cachedDown struct {
	raw  []byte              // the report the down backends came from
	down hoststatus.Backends // not modified once cached
}

// PeerHealth is the package's PeerHealth, each report decoded once while it stays the same.
func (c *downCache) PeerHealth(reports map[string]json.RawMessage, self *desired.State) map[string]hoststatus.Backends {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]cachedDown{}
	}
	for h := range c.m {
		if _, ok := reports[h]; !ok {
			delete(c.m, h)
		}
	}
	return peerHealth(reports, self, func(h string, raw json.RawMessage) hoststatus.Backends {
		if e, ok := c.m[h]; ok && bytes.Equal(e.raw, raw) {
			return e.down
		}
		down := reportedDown(raw)
		c.m[h] = cachedDown{raw: bytes.Clone(raw), down: down}
		return down
	})
}
