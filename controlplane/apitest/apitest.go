// Package apitest runs the controller's API in-process against a real embedded etcd, for tests
// of the API, the client and the CLI. One etcd serves a whole test binary; every Env keeps its
// keys under its own prefix so tests do not see each other.
package apitest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/govcloud/govcloud/controlplane/api"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/config/configtest"
	"github.com/govcloud/govcloud/controlplane/store"
)

var (
	etcdOnce sync.Once
	etcdErr  error
	shared   *store.Store
	embedded *store.Embedded
	etcdDir  string
	envSeq   atomic.Int64
)

// Log is a quiet logger for tests.
var Log = slog.New(slog.NewTextHandler(io.Discard, nil))

// Store returns the shared store of this test binary, starting etcd on first use.
func Store(t testing.TB) *store.Store {
	etcdOnce.Do(func() {
		etcdDir, etcdErr = os.MkdirTemp("", "govcloud-etcd-")
		if etcdErr != nil {
			return
		}
		embedded, etcdErr = store.StartEmbedded(etcdDir, Log, store.EmbeddedOptions{NoFsync: true})
		if etcdErr != nil {
			return
		}
		shared, etcdErr = store.Connect([]string{embedded.Endpoint}, Log)
	})
	if etcdErr != nil {
		t.Fatalf("embedded etcd: %v", etcdErr)
	}
	return shared
}

// Endpoint is the shared etcd's client URL (after Store).
func Endpoint() string { return embedded.Endpoint }

// Shutdown stops the shared etcd; call it from TestMain after m.Run.
func Shutdown() {
	if shared != nil {
		shared.Close()
	}
	if embedded != nil {
		embedded.Close()
	}
	if etcdDir != "" {
		os.RemoveAll(etcdDir)
	}
}

// Env is one API server with its own key prefix and a token per role.
type Env struct {
	URL    string
	Store  *store.Store
	Server *api.Server
	Tokens map[string]string // admin, network, lands (department), health (department), agent-host1
}

// New starts an API server on a fresh prefix of the shared etcd.
func New(t testing.TB) *Env {
	prefix := fmt.Sprintf("/test/%d/%s/", envSeq.Add(1), strings.ReplaceAll(t.Name(), "/", "_"))
	return NewOnPrefix(t, prefix)
}

// NewOnPrefix starts an API server on prefix (two servers on one prefix act as two controllers).
func NewOnPrefix(t testing.TB, prefix string) *Env {
	st := Store(t).WithPrefix(prefix)
	srv := api.New(st, Log, api.Options{ID: "test"})
	ctx, cancel := context.WithCancel(context.Background())
	go srv.Run(ctx)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); cancel() })
	e := &Env{URL: hs.URL, Store: st, Server: srv, Tokens: map[string]string{}}
	tok, err := api.Bootstrap(ctx, st)
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	if tok == "" { // second server on a shared prefix: find the admin token made by the first
		return e
	}
	e.Tokens["admin"] = tok
	c := client.New(hs.URL, tok)
	for name, req := range map[string]client.TokenRequest{
		"network":     {Name: "neteng", Role: api.RoleNetwork},
		"lands":       {Name: "lands-viewer", Role: api.RoleDepartment, Department: "lands"},
		"health":      {Name: "health-viewer", Role: api.RoleDepartment, Department: "health"},
		"agent-host1": {Name: "agent-host1", Role: api.RoleAgent, Host: "host1"},
	} {
		tk, err := c.CreateToken(ctx, req)
		if err != nil {
			t.Fatalf("create %s token: %v", name, err)
		}
		e.Tokens[name] = tk
	}
	return e
}

// Client returns a client using role's token ("" = no token).
func (e *Env) Client(role string) *client.Client { return client.New(e.URL, e.Tokens[role]) }

// Fingerprint is everything a failed write must leave unchanged: the state revision, every
// stored object and the number of audit entries of writes done (refused ones are audited too).
func (e *Env) Fingerprint(t testing.TB) string {
	ctx := context.Background()
	snap, err := e.Store.Snapshot(ctx)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	audit, err := e.Store.Audit(ctx, 100000)
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	done := 0 // refused writes are audited too, and change nothing else
	for _, a := range audit {
		if a.Result == "" {
			done++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "rev=%d audit=%d\n", snap.Revision, done)
	for _, o := range snap.State.List("") {
		fmt.Fprintf(&b, "%s %s\n", o.Key(), snap.Raw(o.Key()))
	}
	return b.String()
}

// Base is a small valid configuration most tests start from: configtest.LandsHealth plus a host,
// a VM and two services.
const Base = configtest.LandsHealth + `---
apiVersion: govcloud/v1
kind: Host
metadata: {name: host1}
spec: {uplink: eth0, address: 198.18.0.11, asn: 65001, bgpPeers: [{address: 198.18.0.1, asn: 65000}]}
---
apiVersion: govcloud/v1
kind: VM
metadata: {name: lands-vm1}
spec: {department: lands, vcpus: 2, memoryMiB: 1024, networks: [{segment: lands-web}]}
---
apiVersion: govcloud/v1
kind: Service
metadata: {name: lands-www}
spec: {department: lands, ports: [{port: 80}], backends: [{vm: lands-vm1}, {address: 198.18.20.50, weight: 2}]}
---
apiVersion: govcloud/v1
kind: Service
metadata: {name: health-www}
spec: {department: health, vip: 198.19.1.10, ports: [{port: 443}], backends: [{address: 198.18.30.5}]}
`

// Host2 adds to Base a second host, host2, with a health VM (health-vm2) placed on it.
const Host2 = `---
apiVersion: govcloud/v1
kind: Host
metadata: {name: host2}
spec: {uplink: eth0, address: 198.18.0.12}
---
apiVersion: govcloud/v1
kind: VM
metadata: {name: health-vm2}
spec: {department: health, vcpus: 1, memoryMiB: 512, host: host2, networks: [{segment: health-web}]}
`

// Doc returns one YAML document.
func Doc(kind, name, spec string) string {
	return "---\napiVersion: govcloud/v1\nkind: " + kind + "\nmetadata: {name: " + name + "}\nspec: " + spec + "\n"
}

// BadCase is one row of the bad-input table: a request that must fail with a clear error and
// change nothing. Tests run it through the HTTP API and through the CLI.
type BadCase struct {
	Desc       string
	Role       string // token: admin, network, lands, health, agent-host1; "" none; "bogus" a wrong one
	Op         string // apply | delete | get
	YAML       string // apply
	Kind, Name string // delete, get
	Status     int    // HTTP status
	Want       []string
}

// ValidSegment is a document that would succeed on its own; rows put it before the bad
// document to show that one bad document stops the whole file.
var ValidSegment = Doc("Segment", "lands-db", "{department: lands, ipv4: 198.18.21.0/24}")

// BadCases is the bad-input table (against Base).
var BadCases = []BadCase{
	{Desc: "invalid YAML", Role: "admin", Op: "apply", YAML: ValidSegment + "---\nkind: [unclosed\n", Status: 422, Want: []string{"document 2", "invalid YAML"}},
	{Desc: "unknown kind", Role: "admin", Op: "apply", YAML: ValidSegment + Doc("Router", "r1", "{}"), Status: 422, Want: []string{"document 2", `"Router"`, "unknown kind"}},
	{Desc: "unknown field", Role: "admin", Op: "apply", YAML: ValidSegment + Doc("Segment", "s1", "{department: lands, ipv4: 198.18.22.0/24, colour: red}"), Status: 422, Want: []string{":10:", `Segment "s1"`, "spec.colour", "unknown field"}},
	{Desc: "VLAN 0", Role: "admin", Op: "apply", YAML: ValidSegment + Doc("Segment", "s1", "{department: lands, vlan: 0, ipv4: 198.18.22.0/24}"), Status: 422, Want: []string{`Segment "s1"`, `spec.vlan "0"`}},
	{Desc: "VLAN 4095", Role: "admin", Op: "apply", YAML: ValidSegment + Doc("Segment", "s1", "{department: lands, vlan: 4095, ipv4: 198.18.22.0/24}"), Status: 422, Want: []string{`Segment "s1"`, `spec.vlan "4095"`}},
	{Desc: "duplicate VLAN", Role: "admin", Op: "apply", YAML: ValidSegment + Doc("Segment", "s1", "{department: health, vlan: 120, ipv4: 198.18.22.0/24}"), Status: 422, Want: []string{`Segment "s1"`, `spec.vlan "120"`, "duplicate VLAN", `"lands-web"`}},
	{Desc: "CIDR overlap inside one department", Role: "admin", Op: "apply", YAML: ValidSegment + Doc("Segment", "s1", "{department: lands, ipv4: 198.18.20.128/25}"), Status: 422, Want: []string{`Segment "s1"`, `spec.ipv4 "198.18.20.128/25"`, "overlaps", `"lands-web"`}},
	{Desc: "gateway outside the segment", Role: "admin", Op: "apply", YAML: ValidSegment + Doc("Segment", "s1", "{department: lands, ipv4: 198.18.22.0/24, gateway: 198.18.23.1}"), Status: 422, Want: []string{`Segment "s1"`, `spec.gateway "198.18.23.1"`, "outside the segment"}},
	{Desc: "VIP outside every pool", Role: "admin", Op: "apply", YAML: ValidSegment + Doc("Service", "web", "{department: lands, vip: 203.0.113.10, ports: [{port: 80}]}"), Status: 422, Want: []string{`Service "web"`, `spec.vip "203.0.113.10"`, "outside every address pool"}},
	{Desc: "VIP in another department's pool", Role: "admin", Op: "apply", YAML: ValidSegment + Doc("Service", "web", "{department: lands, vip: 198.19.1.20, ports: [{port: 80}]}"), Status: 422, Want: []string{`Service "web"`, `spec.vip "198.19.1.20"`, `"health-public"`}},
	{Desc: "backend address in another department", Role: "admin", Op: "apply", YAML: ValidSegment + Doc("Service", "web", "{department: lands, ports: [{port: 80}], backends: [{address: 198.18.30.5}]}"), Status: 422, Want: []string{`Service "web"`, `spec.backends[0].address "198.18.30.5"`, `department "health"`}},
	{Desc: "backend VM in another department", Role: "admin", Op: "apply", YAML: Doc("Service", "web", "{department: health, ports: [{port: 80}], backends: [{vm: lands-vm1}]}"), Status: 422, Want: []string{`Service "web"`, `spec.backends[0].vm "lands-vm1"`, `department "lands"`}},
	{Desc: "unknown department", Role: "admin", Op: "apply", YAML: ValidSegment + Doc("Segment", "s1", "{department: finance, ipv4: 198.18.22.0/24}"), Status: 422, Want: []string{`Segment "s1"`, `spec.department "finance"`, "unknown department"}},
	{Desc: "quota exceeded", Role: "admin", Op: "apply", YAML: ValidSegment + Doc("VM", "lands-vm2", "{department: lands, vcpus: 3, memoryMiB: 512, networks: [{segment: lands-web}]}"), Status: 422, Want: []string{`VM "lands-vm2"`, "quota exceeded", "5 vCPUs", "quota is 4"}},
	{Desc: "pool of 1,000 identical CIDRs: errors counted, not listed 999 times", Role: "admin", Op: "apply", YAML: Doc("AddressPool", "p1k", "{departments: [lands], cidrs: ["+strings.Repeat("203.0.113.0/24, ", 999)+"203.0.113.0/24]}"), Status: 422, Want: []string{"999 problems", `AddressPool "p1k"`, `spec.cidrs[1] "203.0.113.0/24"`}},
	{Desc: "pool naming 20,000 unknown departments", Role: "admin", Op: "apply", YAML: Doc("AddressPool", "p20k", "{cidrs: [203.0.113.0/24], departments: ["+strings.Repeat("nosuch, ", 19999)+"nosuch]}"), Status: 422, Want: []string{"20000 problems", `spec.departments[0] "nosuch"`, "unknown department"}},
	{Desc: "VM of 2^40 MiB", Role: "admin", Op: "apply", YAML: Doc("VM", "lands-huge", "{department: lands, vcpus: 1, memoryMiB: 1099511627776, networks: [{segment: lands-web}]}"), Status: 422, Want: []string{`VM "lands-huge"`, `spec.memoryMiB "1099511627776"`, "4 TiB"}},
	{Desc: "volume of 2^20 GiB", Role: "admin", Op: "apply", YAML: Doc("Volume", "lands-huge", "{department: lands, sizeGiB: 1048576}"), Status: 422, Want: []string{`Volume "lands-huge"`, `spec.sizeGiB "1048576"`, "64 TiB"}},
	{Desc: "health-check path that is a URL to a host-internal address", Role: "admin", Op: "apply", YAML: Doc("Service", "web", "{department: lands, ports: [{port: 80}], healthCheck: {type: http, path: 'http://169.254.169.254/latest'}}"), Status: 422, Want: []string{`spec.healthCheck.path "http://169.254.169.254/latest"`, "absolute path"}},
	{Desc: "health-check path that is a network-path reference", Role: "admin", Op: "apply", YAML: Doc("Service", "web", "{department: lands, ports: [{port: 80}], healthCheck: {type: http, path: //198.51.100.1/x}}"), Status: 422, Want: []string{`spec.healthCheck.path "//198.51.100.1/x"`}},
	{Desc: "health-check interval of 1000 hours", Role: "admin", Op: "apply", YAML: Doc("Service", "web", "{department: lands, ports: [{port: 80}], healthCheck: {type: tcp, interval: 1000h}}"), Status: 422, Want: []string{`spec.healthCheck.interval "1000h"`, "100ms to 1h"}},
	{Desc: "health-check threshold of a million", Role: "admin", Op: "apply", YAML: Doc("Service", "web", "{department: lands, ports: [{port: 80}], healthCheck: {type: tcp, healthyThreshold: 1000000}}"), Status: 422, Want: []string{`spec.healthCheck.healthyThreshold "1000000"`}},
	{Desc: "delete a department that still has segments", Role: "admin", Op: "delete", Kind: "Department", Name: "lands", Status: 422, Want: []string{`Department "lands"`, "cannot delete", `Segment "lands-web"`}},
	{Desc: "delete something that does not exist", Role: "admin", Op: "delete", Kind: "Segment", Name: "nosuch", Status: 404, Want: []string{`Segment "nosuch"`, "not found"}},
	{Desc: "missing token", Role: "", Op: "apply", YAML: ValidSegment, Status: 401, Want: []string{"missing bearer token"}},
	{Desc: "wrong token", Role: "bogus", Op: "apply", YAML: ValidSegment, Status: 401, Want: []string{"invalid token"}},
	{Desc: "wrong token reading", Role: "bogus", Op: "get", Kind: "Segment", Name: "lands-web", Status: 401, Want: []string{"invalid token"}},
	{Desc: "department token reading another department", Role: "lands", Op: "get", Kind: "Segment", Name: "health-web", Status: 403, Want: []string{"lands-viewer", `Segment "health-web"`, `department "health"`}},
	{Desc: "department token writing", Role: "lands", Op: "apply", YAML: ValidSegment, Status: 403, Want: []string{"lands-viewer", "may not apply"}},
	{Desc: "network token writing a VM", Role: "network", Op: "apply", YAML: Doc("VM", "lands-vm2", "{department: lands, vcpus: 1, memoryMiB: 512, networks: [{segment: lands-web}]}"), Status: 403, Want: []string{"neteng", `VM "lands-vm2"`}},
	{Desc: "agent token reading objects", Role: "agent-host1", Op: "get", Kind: "Segment", Name: "lands-web", Status: 403, Want: []string{"agent-host1", "may read only"}},
}
