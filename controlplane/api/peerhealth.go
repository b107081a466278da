package api

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"

	"github.com/govcloud/govcloud/controlplane/desired"
)

// FilterPeerHealth keeps, of a network agent's status report (a JSON object), only the backend
// health the reporting host can know: its "backends" map ("service/address" -> "up" |
// "down: reason") keeps entries for backends the controller placed on that host and for
// plain-address backends (no host: every host checks those itself, and agents never take a
// peer's word for them). Entries for another host's backends, or for no backend at all, are
// dropped and returned (sorted). st is the reporting host's desired state (nil: an unknown
// host, every entry dropped). A body that is not an object, or whose backends are not a map of
// strings, is an error.
func FilterPeerHealth(body []byte, st *desired.State) ([]byte, []string, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		return nil, nil, fmt.Errorf("want a JSON object: %w", err)
	}
	raw, ok := obj["backends"]
	if !ok || string(raw) == "null" {
		return body, nil, nil
	}
	var backends map[string]string
	if err := json.Unmarshal(raw, &backends); err != nil {
		return nil, nil, fmt.Errorf("backends: want an object of strings: %w", err)
	}
	mine := map[string]bool{}
	if st != nil {
		for _, svc := range st.Services {
			for _, b := range svc.Backends {
				if a, err := netip.ParseAddr(b.Address); err == nil && (b.Host == "" || b.Host == st.Host) {
					mine[svc.Name+"/"+a.String()] = true
				}
			}
		}
	}
	var dropped []string
	for k := range backends {
		if !mine[canonicalBackendKey(k)] {
			dropped = append(dropped, k)
			delete(backends, k)
		}
	}
	if len(dropped) == 0 {
		return body, nil, nil
	}
	sort.Strings(dropped)
	b, _ := json.Marshal(backends)
	obj["backends"] = b
	out, err := json.Marshal(obj)
	return out, dropped, err
}

// canonicalBackendKey writes "service/address" with the address in its canonical form.
func canonicalBackendKey(k string) string {
	for i := len(k) - 1; i > 0; i-- {
		if k[i] == '/' {
			if a, err := netip.ParseAddr(k[i+1:]); err == nil {
				return k[:i] + "/" + a.String()
			}
			return k
		}
	}
	return k
}

// MaxStatusBytes bounds one agent's status report (a host's whole report is far smaller).
const MaxStatusBytes = 256 << 10

// PeerHealth is what one agent needs of its peers' reports: for each other host, the backends
// placed on that host, of services this host serves, that the host found down
// ("service/address" -> "down: reason"). Shaped like the stored reports (host ->
// {"status": {"backends": ...}}), so an agent reads it as it read the whole reports, which the
// controller no longer fans out.
func PeerHealth(reports map[string]json.RawMessage, self *desired.State) map[string]json.RawMessage {
	wanted := map[string]string{} // "service/address" -> host it is placed on
	if self != nil {
		for _, svc := range self.Services {
			for _, b := range svc.Backends {
				if a, err := netip.ParseAddr(b.Address); err == nil && b.Host != "" && b.Host != self.Host {
					wanted[svc.Name+"/"+a.String()] = b.Host
				}
			}
		}
	}
	out := map[string]json.RawMessage{}
	for h, raw := range reports {
		var rep struct {
			Status struct {
				Backends map[string]string `json:"backends"`
			} `json:"status"`
		}
		if self == nil || h == self.Host || json.Unmarshal(raw, &rep) != nil {
			continue
		}
		down := map[string]string{}
		for k, v := range rep.Status.Backends {
			if wanted[k] == h && len(v) >= 4 && v[:4] == "down" {
				down[k] = v
			}
		}
		if len(down) > 0 {
			b, _ := json.Marshal(map[string]any{"status": map[string]any{"backends": down}})
			out[h] = b
		}
	}
	return out
}
