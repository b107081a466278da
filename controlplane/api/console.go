package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/govcloud/govcloud/controlplane/config"
)

// MaxConsoleBytes is how much of a VM's serial console log the controller keeps (its end),
// and the most one upload may carry.
const MaxConsoleBytes = 64 << 10

// consoleAuditEvery is how often reads of one VM's console by one credential are audited: a
// follower polls every second, the audit log records the session, not each poll.
const consoleAuditEvery = 10 * time.Minute

// ConsoleTail is the end of one VM's serial console log, as the compute agent of its host
// sends it (PUT /v1/hosts/{host}/console/{vm}) and the API serves it (GET
// /v1/vms/{vm}/console). End is the log's length in bytes (an offset in the whole log), Data
// its last bytes (at most MaxConsoleBytes), so Data starts at offset End-len(Data).
type ConsoleTail struct {
	VM      string    `json:"vm"`
	Host    string    `json:"host"`
	End     int64     `json:"end"`
	Data    []byte    `json:"data"` // base64 in JSON: a serial log is not always UTF-8
	Updated time.Time `json:"updated"`
	// Note says why there is nothing to show (read answers only).
	Note string `json:"note,omitempty"`
}

// consoleBook remembers when each credential's reads of each VM's console were last audited
// (on this controller). The tails themselves are in the store, which every controller reads.
type consoleBook struct {
	mu      sync.Mutex
	audited map[[2]string]time.Time // {token id or name, vm} -> last audit
}

// handlePutConsole stores the tail of a VM's console log sent by the compute agent of the host
// the VM is placed on. Body: ConsoleTail (vm and host are taken from the path).
func (s *Server) handlePutConsole(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
	host, vm := r.PathValue("name"), r.PathValue("vm")
	if p.Role != RoleAdmin && !(p.Role == RoleAgent && p.Host == host) {
		return forbidden("%s may not send the console of a VM on host %q", p.who(), host)
	}
	var t ConsoleTail
	if err := json.NewDecoder(io.LimitReader(r.Body, 2*MaxConsoleBytes+4096)).Decode(&t); err != nil {
		return &apiError{Status: http.StatusBadRequest, Code: "bad_request", Message: fmt.Sprintf("console of VM %q: decode: %v", vm, err)}
	}
	if len(t.Data) > MaxConsoleBytes || t.End < int64(len(t.Data)) {
		return &apiError{Status: http.StatusBadRequest, Code: "bad_request",
			Message: fmt.Sprintf("console of VM %q: %d bytes ending at offset %d: want at most %d bytes, ending at or after their length", vm, len(t.Data), t.End, MaxConsoleBytes)}
	}
	snap, err := s.store.Snapshot(r.Context())
	if err != nil {
		return storeError(err)
	}
	o := snap.State.Get(config.KindVM, vm)
	if o == nil {
		return &apiError{Status: http.StatusNotFound, Code: "not_found", Message: fmt.Sprintf("VM %q not found", vm)}
	}
	if o.Status.Host != host {
		return forbidden("VM %q is placed on host %q, not %q: host %q may not send its console", vm, o.Status.Host, host, host)
	}
	t.VM, t.Host, t.Updated = vm, host, time.Now().UTC()
	b, err := json.Marshal(t)
	if err != nil {
		return internal(err)
	}
	if err := s.store.PutConsole(r.Context(), vm, b); err != nil {
		return storeError(err)
	}
	// Forget the consoles of VMs deleted since.
	if err := s.store.PruneConsoles(r.Context(), func(name string) bool { return snap.State.Get(config.KindVM, name) != nil }); err != nil {
		s.log.Warn("prune consoles", "err", err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// handleGetConsole serves the end of a VM's serial console log: the bytes after offset
// ?after= (all it holds when absent or older than what it holds). It needs a token (no
// anonymous reads, even where the controller allows them); a department token reads only its
// department's VMs. The first read by a credential of a VM, and one every consoleAuditEvery
// after, is audited (action "console").
func (s *Server) handleGetConsole(w http.ResponseWriter, r *http.Request, p *principal) *apiError {
	vm := r.PathValue("name")
	switch p.Role {
	case roleAnonymous:
		return &apiError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "a VM's console needs a token (set GOVCLOUD_TOKEN)"}
	case RoleAgent:
		return forbidden("%s may not read VM consoles", p.who())
	}
	after, err := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	if r.URL.Query().Get("after") == "" {
		after, err = -1, nil
	}
	if err != nil {
		return &apiError{Status: http.StatusBadRequest, Code: "bad_request", Message: fmt.Sprintf("after %q: want a byte offset", r.URL.Query().Get("after"))}
	}
	snap, err := s.store.Snapshot(r.Context())
	if err != nil {
		return storeError(err)
	}
	o := snap.State.Get(config.KindVM, vm)
	if o == nil {
		return &apiError{Status: http.StatusNotFound, Code: "not_found", Message: fmt.Sprintf("VM %q not found", vm)}
	}
	if !p.canRead(o) {
		return forbidden("%s may not read the console of VM %q of department %q", p.who(), vm, o.Department())
	}
	now := time.Now()
	id := p.ID
	if id == "" {
		id = p.Name
	}
	s.console.mu.Lock()
	if s.console.audited == nil {
		s.console.audited = map[[2]string]time.Time{}
	}
	last, seen := s.console.audited[[2]string{id, vm}]
	audit := !seen || now.Sub(last) >= consoleAuditEvery
	if audit {
		s.console.audited[[2]string{id, vm}] = now
	}
	s.console.mu.Unlock()
	if audit {
		ae := p.audit("console")
		ae.Detail = map[string]any{"vm": vm, "department": o.Department(), "host": o.Status.Host}
		if err := s.store.AppendAudit(r.Context(), ae); err != nil {
			s.console.mu.Lock()
			delete(s.console.audited, [2]string{id, vm})
			s.console.mu.Unlock()
			return storeError(fmt.Errorf("audit console read of VM %q: %w", vm, err))
		}
	}
	raw, err := s.store.Console(r.Context(), vm)
	if err != nil {
		return storeError(err)
	}
	var t ConsoleTail
	ok := raw != nil
	if ok {
		if err := json.Unmarshal(raw, &t); err != nil {
			return internal(fmt.Errorf("stored console of VM %q: %w", vm, err))
		}
	}
	switch {
	case o.Status.Host == "":
		t = ConsoleTail{VM: vm, Note: fmt.Sprintf("VM %q is not placed on a host (pending)", vm)}
	case !ok || t.Host != o.Status.Host:
		t = ConsoleTail{VM: vm, Host: o.Status.Host, Note: fmt.Sprintf("no console output from host %q yet: its compute agent sends the serial log of libvirt VMs every few seconds (netns guests have no serial console)", o.Status.Host)}
	case after >= 0:
		start := t.End - int64(len(t.Data))
		switch {
		case after == t.End:
			t.Data = nil
		case after > t.End:
			// The log is shorter than what the reader saw: the VM was made again. All of it.
		case after > start:
			t.Data = t.Data[after-start:]
		}
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}
