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
