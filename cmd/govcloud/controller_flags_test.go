package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestControllerFlagsRefused: an election TTL of 0 or less and an etcd endpoint the client
// could not dial are refused before anything starts, naming the flag and the value; good
// endpoints of each form pass.
func TestControllerFlagsRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the error
	}{
		{[]string{"--election-ttl", "-1s"}, `--election-ttl -1s: must be more than 0`},
		{[]string{"--election-ttl", "0s"}, `--election-ttl 0s: must be more than 0`},
		{[]string{"--etcd-endpoints", "notaurl"}, `--etcd-endpoints "notaurl"`},
		{[]string{"--etcd-endpoints", "http://198.18.0.1"}, `--etcd-endpoints "http://198.18.0.1": want http://host:port`},
		{[]string{"--etcd-endpoints", "http://198.18.0.1:2379,unix://"}, `--etcd-endpoints "unix://": no socket path`},
		{[]string{"--etcd-endpoints", "198.18.0.1:"}, `--etcd-endpoints "198.18.0.1:"`},
	} {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"controller", "--data-dir", t.TempDir()}, tc.args...))
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
	for _, e := range []string{"http://198.18.0.1:2379", "https://[2001:db8::1]:2379", "unix:///run/govcloud/etcd.sock", "198.18.0.1:2379", "localhost:2379"} {
		if err := checkEtcdEndpoint(e); err != nil {
			t.Errorf("%s: %v", e, err)
		}
	}
}
