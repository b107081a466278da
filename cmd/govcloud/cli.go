package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"gopkg.in/yaml.v3"

	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/config"
)

// cliError turns a controller error into one line per problem.
func cliError(err error) error {
	var ce *client.Error
	var es config.Errors
	if errors.As(err, &ce) {
		es = ce.Errors
	} else {
		errors.As(err, &es)
	}
	if len(es) > 1 {
		lines := make([]string, 0, len(es)+1)
		lines = append(lines, fmt.Sprintf("%d problems, nothing was changed:", es.Count()))
		for _, e := range es {
			lines = append(lines, "  "+e.Error())
		}
		return errors.New(strings.Join(lines, "\n"))
	}
	return err
}

func readInput(file string) ([]byte, string, error) {
	if file == "" {
		return nil, "", errors.New("-f FILE required ('-' reads standard input)")
	}
	if file == "-" {
		b, err := io.ReadAll(os.Stdin)
		return b, "<stdin>", err
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, file, fmt.Errorf("read %s: %w", file, err)
	}
	return b, file, nil
}

func checkOutput(o string, allowed ...string) error {
	for _, a := range allowed {
		if o == a {
			return nil
		}
	}
	return fmt.Errorf("-o %q: want one of %s", o, strings.Join(allowed, ", "))
}

// printData writes JSON bytes as json or yaml.
func printData(w io.Writer, raw json.RawMessage, format string) error {
	switch format {
	case "json":
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		enc := yaml.NewEncoder(w)
		enc.SetIndent(2)
		defer enc.Close()
		return enc.Encode(v)
	}
	return fmt.Errorf("unknown output format %q", format)
}

func printChanges(w io.Writer, res *client.ApplyResult, verb string) {
	sym := map[string]string{"create": "+", "update": "~", "delete": "-", "unchanged": "="}
	for _, c := range res.Changes {
		if c.Action == "unchanged" && c.Reason == "" {
			continue
		}
		line := fmt.Sprintf("%s %s %s %s", sym[c.Action], c.Action, c.Kind, c.Name)
		if len(c.Fields) > 0 {
			line += " (" + strings.Join(c.Fields, ", ") + ")"
		}
		fmt.Fprintln(w, line)
		for _, v := range c.Values {
			fmt.Fprintf(w, "    %s: %s -> %s\n", v.Field, v.From, v.To)
		}
		if c.Reason != "" {
			fmt.Fprintf(w, "    placement: %s\n", c.Reason)
		}
	}
	n := res.Counts
	rev := fmt.Sprintf("planned against revision %d", res.Revision)
	if !res.DryRun {
		rev = fmt.Sprintf("now at revision %d", res.Revision)
	}
	fmt.Fprintf(w, "%s: %d to create, %d to update, %d to delete, %d unchanged (%s)\n",
		verb, n["create"], n["update"], n["delete"], n["unchanged"], rev)
}

func detail(o client.Object) []string {
	switch s := o.Spec.(type) {
	case *config.DepartmentSpec:
		return []string{fmt.Sprintf("table=%d", o.Status.TableID)}
	case *config.SegmentSpec:
		d := fmt.Sprintf("vlan=%d ipv4=%s gw=%s", config.EffectiveVLAN(&o.Object), s.IPv4, s.Gateway4())
		if s.IPv6 != "" {
			d += " ipv6=" + s.IPv6
		}
		return []string{d}
	case *config.AddressPool:
		return []string{fmt.Sprintf("%s scope=%s for=%s", strings.Join(s.CIDRs, ","), s.ScopeName(), strings.Join(s.Departments, ","))}
	case *config.ServiceSpec:
		ports := make([]string, len(s.Ports))
		for i, p := range s.Ports {
			proto := p.Protocol
			if proto == "" {
				proto = "tcp"
			}
			ports[i] = fmt.Sprintf("%d/%s", p.Port, proto)
		}
		return []string{fmt.Sprintf("vip=%s ports=%s backends=%s", o.VIP, strings.Join(ports, ","), backendList(s))}
	case *config.HostSpec:
		return []string{fmt.Sprintf("address=%s uplink=%s peers=%d", s.Address, s.Uplink, len(s.BGPPeers))}
	case *config.VMSpec:
		host := o.Status.Host
		if host == "" {
			host = "(pending)"
		}
		d := []string{fmt.Sprintf("host=%s vcpus=%d mem=%dMiB addresses=%s", host, s.VCPUs, s.MemoryMiB, strings.Join(o.Addresses, ","))}
		if s.PowerState == config.PowerStopped {
			d = append(d, "power=stopped")
		}
		if o.Status.Reason != "" {
			d = append(d, "reason: "+o.Status.Reason)
		}
		return d
	case *config.VolumeSpec:
		host := o.Status.Host
		if host == "" {
			host = "(none yet)"
		}
		return []string{fmt.Sprintf("size=%dGiB host=%s", s.SizeGiB, host)}
	case *config.ImageSpec:
		return []string{fmt.Sprintf("os=%s source=%s sha256=%.12s…", s.OS, s.Source, s.SHA256)}
	case *config.SecurityPolicySpec:
		sel := make([]string, 0, len(s.Selector))
		for _, k := range slices.Sorted(maps.Keys(s.Selector)) {
			sel = append(sel, k+"="+s.Selector[k])
		}
		return []string{fmt.Sprintf("selector=%s rules=%d", strings.Join(sel, ","), len(s.Allow))}
	}
	return nil
}

func printTable(w io.Writer, objs []client.Object) error {
	sort.SliceStable(objs, func(i, j int) bool {
		if objs[i].Kind != objs[j].Kind {
			return config.KindOrder(objs[i].Kind) < config.KindOrder(objs[j].Kind)
		}
		return objs[i].Name < objs[j].Name
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAME\tDEPARTMENT\tDETAIL")
	for _, o := range objs {
		d := o.Department
		if d == "" {
			d = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", o.Kind, o.Name, d, strings.Join(detail(o), " "))
	}
	return tw.Flush()
}
