package lab

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// labHostName matches the lab's host names, gc-host<K>.
var labHostName = regexp.MustCompile(`^gc-host([1-9][0-9]*)$`)

// fitConfig fits one YAML file of the applied configuration to the lab's hosts: a Host
// document naming a lab host (gc-hostK) that this lab does not make is left out, and a VM
// placed on such a host is placed on gc-host((K-1) mod n + 1) instead, so the example's two
// hosts fold onto one with --hosts 1. It returns data itself when nothing needed changing,
// with a note per change and the names of the hosts the file declares.
func fitConfig(file string, data []byte, hosts []string) (out []byte, declared, notes []string, err error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	changed := false
	for i := 1; ; i++ {
		var n yaml.Node
		if err := dec.Decode(&n); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, nil, nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		if len(n.Content) == 0 || n.Content[0].Kind != yaml.MappingNode {
			docs = append(docs, &n)
			continue
		}
		root := n.Content[0]
		kind, name := scalar(root, "kind"), scalar(field(root, "metadata"), "name")
		spec := field(root, "spec")
		switch kind {
		case "Host":
			if isLabHost(name) && !slices.Contains(hosts, name) {
				notes = append(notes, fmt.Sprintf("Host %s left out: this lab has %d host(s)", name, len(hosts)))
				changed = true
				continue
			}
			declared = append(declared, name)
		case "VM":
			if h := field(spec, "host"); h != nil && h.Kind == yaml.ScalarNode && isLabHost(h.Value) && !slices.Contains(hosts, h.Value) {
				k, _ := strconv.Atoi(labHostName.FindStringSubmatch(h.Value)[1])
				to := hosts[(k-1)%len(hosts)]
				notes = append(notes, fmt.Sprintf("VM %s placed on %s instead of %s: this lab has %d host(s)", name, to, h.Value, len(hosts)))
				h.Value = to
				changed = true
			}
		}
		docs = append(docs, &n)
	}
	if !changed {
		return data, declared, nil, nil
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	for _, d := range docs {
		if err := enc.Encode(d); err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", file, err)
		}
	}
	if err := enc.Close(); err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", file, err)
	}
	return b.Bytes(), declared, notes, nil
}

func isLabHost(name string) bool { return labHostName.MatchString(name) }

// field returns the value of key in mapping m (nil when m is not a mapping or has no key).
func field(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// scalar returns the scalar value of key in mapping m ("" when there is none).
func scalar(m *yaml.Node, key string) string {
	if v := field(m, key); v != nil && v.Kind == yaml.ScalarNode {
		return v.Value
	}
	return ""
}

// hostsYAML is the Host documents of the lab's hosts named in which, as the example
// configuration declares gc-host1 and gc-host2: uplink eth0, the fabric address, an AS of its
// own, and the ToR as its BGP peer over IPv4 and over IPv6.
func (l *Lab) hostsYAML(which []string) string {
	var b strings.Builder
	for _, h := range which {
		i := l.hostIndex(h)
		fmt.Fprintf(&b, "---\napiVersion: govcloud/v1\nkind: Host\nmetadata: {name: %s}\nspec:\n  uplink: eth0\n  address: %s\n  asn: %d\n  routerID: %s\n  bgpPeers: [{address: %s, asn: 65000, gracefulRestart: true}, {address: \"%s\", asn: 65000, gracefulRestart: true}]\n",
			h, hostAddr(i), hostASN(i), hostAddr(i), torFabric, torFabric6)
	}
	return b.String()
}
