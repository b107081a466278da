package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/config"
	"github.com/govcloud/govcloud/controlplane/hoststatus"
	"github.com/govcloud/govcloud/controlplane/lbtables"
	"github.com/govcloud/govcloud/internal/buildinfo"
)

// backendWeight is a backend's weight (1 when not given).
func backendWeight(b config.Backend) int {
	if b.Weight == nil {
		return 1
	}
	return *b.Weight
}

// backendName is how a backend is shown: its VM, else its address.
func backendName(b config.Backend) string {
	if b.VM != "" {
		return b.VM
	}
	return b.Address
}

// backendList is a service's backends with their weights, a drained one (weight 0) marked:
// "lands-web-1(w1),lands-web-2(w0,draining)".
func backendList(s *config.ServiceSpec) string {
	if len(s.Backends) == 0 {
		return "none"
	}
	parts := make([]string, len(s.Backends))
	for i, b := range s.Backends {
		w := backendWeight(b)
		parts[i] = fmt.Sprintf("%s(w%d)", backendName(b), w)
		if w == 0 {
			parts[i] = fmt.Sprintf("%s(w0,draining)", backendName(b))
		}
	}
	return strings.Join(parts, ",")
}

// indent writes text under a label: continuation lines line up under the first.
func indent(w io.Writer, prefix, label, text string) {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	fmt.Fprintf(w, "%s%s%s\n", prefix, label, lines[0])
	pad := prefix + strings.Repeat(" ", len(label))
	for _, l := range lines[1:] {
		fmt.Fprintf(w, "%s%s\n", pad, l)
	}
}

// printHostFaults prints a host report's faults, each once: the host's error (the pass's
// joined errors, indented), then objects not ready for a reason of their own, and the objects
// only that error holds back named on one line.
func printHostFaults(w io.Writer, r hoststatus.Status) {
	if !r.Ready && r.Error != "" {
		indent(w, "  ", "error: ", r.Error)
	}
	var held []string
	for _, kind := range []struct {
		what string
		m    map[string]string
	}{{"segment", r.Segments}, {"service", r.Services}, {"guest", r.Guests}} {
		names := make([]string, 0, len(kind.m))
		for n := range kind.m {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			v := kind.m[n]
			if v == "ready" {
				continue
			}
			reason := strings.TrimPrefix(v, "not ready: ")
			if r.Error != "" && strings.Contains(r.Error, reason) {
				held = append(held, kind.what+" "+n)
				continue
			}
			indent(w, "  ", kind.what+" "+n+": ", v)
		}
	}
	if len(held) == 0 {
		return
	}
	// Where the fault is: the objects the error names; the rest only wait on it.
	var at, waiting []string
	for _, h := range held {
		_, name, _ := strings.Cut(h, " ")
		if strings.Contains(r.Error, strconv.Quote(name)) {
			at = append(at, h)
		} else {
			waiting = append(waiting, h)
		}
	}
	if len(at) > 0 {
		fmt.Fprintf(w, "  at: %s\n", strings.Join(at, ", "))
	}
	if len(waiting) > 0 {
		label := "not ready because of that error: "
		if len(at) > 0 {
			label = "also held back until it is fixed: "
		}
		fmt.Fprintf(w, "  %s%s\n", label, strings.Join(waiting, ", "))
	}
}

// printDrains prints every backend with weight 0 and the connections the load balancers still
// hold for it (hosts' last reports), saying when none are left. objs are every object (for
// VM placement and host addresses), reports the hosts' network reports.
func printDrains(w io.Writer, objs []client.Object, reports map[string]hoststatus.Report) {
	vms, hosts := map[string]client.Object{}, map[string]netip.Addr{}
	var svcs []client.Object
	for _, o := range objs {
		switch o.Kind {
		case config.KindVM:
			vms[o.Name] = o
		case config.KindHost:
			hosts[o.Name], _ = netip.ParseAddr(o.Spec.(*config.HostSpec).Address)
		case config.KindService:
			svcs = append(svcs, o)
		}
	}
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Name < svcs[j].Name })
	names := make([]string, 0, len(reports))
	for h := range reports {
		names = append(names, h)
	}
	sort.Strings(names)
	header := false
	for _, o := range svcs {
		s := o.Spec.(*config.ServiceSpec)
		for _, b := range s.Backends {
			if backendWeight(b) != 0 {
				continue
			}
			if !header {
				fmt.Fprintln(w, "draining (weight 0; connections as of each host's last report, used within the last minute):")
				header = true
			}
			// The address the load balancers send this backend's flows to.
			var target netip.Addr
			where := ""
			switch {
			case b.Address != "":
				target, _ = netip.ParseAddr(b.Address)
			case s.Mode == "dsr":
				h := vms[b.VM].Status.Host
				target, where = hosts[h], " via its host "+h
			default:
				if a := vms[b.VM].Addresses; len(a) > 0 {
					target, _ = netip.ParseAddr(a[0])
				}
			}
			if !target.IsValid() {
				fmt.Fprintf(w, "  %s/%s: not placed yet: nothing to wait for\n", o.Name, backendName(b))
				continue
			}
			var per []string
			total, unknown := 0, 0
			for _, h := range names {
				// An agent that counts lists every target of its plan (a service it balances to
				// no target has none); one that does not count lists nothing.
				r := reports[h].Status
				n, counted := 0, r.Connections != nil || len(r.Services) == 0
				for _, c := range r.Connections {
					if c.Service == o.Name && c.Target == target {
						n += c.Active
					}
				}
				if !counted {
					unknown++
					per = append(per, "? on "+h)
					continue
				}
				total += n
				per = append(per, fmt.Sprintf("%d on %s", n, h))
			}
			verdict := fmt.Sprintf("%d active connection(s) left", total)
			switch {
			case unknown > 0:
				verdict = fmt.Sprintf("%d active connection(s) known; %d host(s) report no count (?)", total, unknown)
			case total == 0:
				verdict = "no active connections left: safe to remove"
			}
			shared := ""
			if where != "" {
				others := 0
				for _, ob := range s.Backends {
					if ob.VM != "" && ob.VM != b.VM && vms[ob.VM].Status.Host == vms[b.VM].Status.Host {
						others++
					}
				}
				if others > 0 {
					shared = fmt.Sprintf(" (counts shared with %d other backend(s) of the service there)", others)
				}
			}
			fmt.Fprintf(w, "  %s/%s%s (%s): %s [%s]%s\n", o.Name, backendName(b), where, target, verdict, strings.Join(per, ", "), shared)
		}
	}
}

// writeStatus prints the controller's summary, each host's report and the drains in progress.
// objs may be nil (the drains are then left out); ctl holds the controller's shared Maglev
// table summaries by service (empty: each host's tables are shown without comparison).
func writeStatus(w io.Writer, st *client.Status, objs []client.Object, ctl map[string]lbtables.Summary) {
	fmt.Fprintf(w, "controller: %s\nleader:     %s (this one: %v)\nrevision:   %d\n", st.ID, st.Leader.Leader, st.Leader.IsLeader, st.Revision)
	var ctlVersion string
	var bi buildinfo.Info
	if json.Unmarshal(st.Version, &bi) == nil && bi.Version != "" {
		ctlVersion = bi.Short()
		fmt.Fprintf(w, "version:    %s\n", ctlVersion)
	}
	for _, k := range config.Kinds {
		fmt.Fprintf(w, "%-12s %d\n", k+":", st.Objects[k])
	}
	hosts := make([]string, 0, len(st.Hosts))
	for h := range st.Hosts {
		hosts = append(hosts, h)
	}
	for h := range st.Compute {
		if _, ok := st.Hosts[h]; !ok {
			hosts = append(hosts, h)
		}
	}
	sort.Strings(hosts)
	reports := map[string]hoststatus.Report{}
	for _, h := range hosts {
		var r hoststatus.Report
		raw, ok := st.Hosts[h]
		if !ok {
			fmt.Fprintf(w, "host %s: no network agent report\n", h)
			printCompute(w, st.Compute[h])
			continue
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			fmt.Fprintf(w, "host %s: unreadable network agent report: %v\n", h, err)
			printCompute(w, st.Compute[h])
			continue
		}
		reports[h] = r
		ready := "ready"
		if !r.Status.Ready {
			ready = "NOT READY"
		}
		fmt.Fprintf(w, "host %s: %s (revision %d, last report %s)\n", h, ready, r.Status.Revision, r.Time.Format(time.RFC3339))
		if v := r.Status.Version; v != "" && ctlVersion != "" && !sameBuild(v, ctlVersion) {
			fmt.Fprintf(w, "  agent version %s differs from the controller's %s\n", v, ctlVersion)
		}
		printHostFaults(w, r.Status)
		if r.Status.XDP != "" {
			fmt.Fprintf(w, "  load balancer: %s; advertising %d VIP(s)\n", r.Status.XDP, len(r.Status.Advertise))
		}
		for _, p := range r.Status.BGP {
			fmt.Fprintf(w, "  bgp peer %-15s AS%-6d %-12s advertised %d received %d accepted %d", p.Address, p.ASN, p.State, p.Advertised, p.Received, p.Accepted)
			if b := p.BFD; b != nil {
				fmt.Fprintf(w, " bfd %s", b.State)
				if b.State == "up" {
					fmt.Fprintf(w, " (tx %s, detect %s)", b.TxInterval, b.DetectTime)
				} else if b.Diag != "" {
					fmt.Fprintf(w, " (%s)", b.Diag)
				}
			}
			if p.Reason != "" {
				fmt.Fprintf(w, " (%s)", p.Reason)
			}
			fmt.Fprintln(w)
		}
		if raw, ok := st.Compute[h]; ok {
			printCompute(w, raw)
		}
		printTables(w, r.Status, ctl)
		for _, k := range r.Status.Backends.Keys() {
			if h := r.Status.Backends[k]; !h.Up {
				indent(w, "  ", k.String()+": down: ", h.Reason)
			}
		}
	}
	if objs != nil {
		printPlacement(w, objs)
		printDrains(w, objs, reports)
	}
}

// printPlacement lists the VMs that are pending, or kept on a host now over its capacity,
// with the controller's reason, by name.
func printPlacement(w io.Writer, objs []client.Object) {
	var vms []client.Object
	for _, o := range objs {
		if o.Kind == config.KindVM && o.Status.Reason != "" {
			vms = append(vms, o)
		}
	}
	sort.Slice(vms, func(i, j int) bool { return vms[i].Name < vms[j].Name })
	for _, o := range vms {
		state := "pending"
		if o.Status.Host != "" {
			state = "on " + o.Status.Host
		}
		indent(w, "", fmt.Sprintf("vm %s: %s: ", o.Name, state), o.Status.Reason)
	}
}

// sameBuild says whether two builds as reported ("VERSION (COMMIT)", buildinfo.Info.Short) are
// one: by commit when both name one (a package's version and a plain build's differ for the
// same commit), else by the whole text.
func sameBuild(a, b string) bool {
	commit := func(s string) string {
		i := strings.LastIndex(s, " (")
		if i < 0 || !strings.HasSuffix(s, ")") {
			return ""
		}
		c := strings.TrimSuffix(s[i+2:len(s)-1], "-dirty")
		if c == "unknown" {
			return ""
		}
		return c
	}
	if ca, cb := commit(a), commit(b); ca != "" && cb != "" {
		return ca == cb && strings.HasSuffix(a, "-dirty)") == strings.HasSuffix(b, "-dirty)")
	}
	return a == b
}
