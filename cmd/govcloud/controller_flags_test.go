package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestControllerFlagsRefused: an election TTL of 0 or less and an etcd endpoint the client
// could not dial are refused before anything starts, naming the flag and the value; good
// endpoints of each form pass.
func TestControllerFlagsRefused(t *testing.T) {
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("gc-host1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string // in the error
	}{
		{[]string{"--election-ttl", "-1s"}, `--election-ttl -1s: want 500ms to 1m0s`},
		{[]string{"--election-ttl", "0s"}, `--election-ttl 0s: want 500ms to 1m0s`},
		{[]string{"--election-ttl", "1ns"}, `--election-ttl 1ns: want 500ms to 1m0s`},
		{[]string{"--election-ttl", "1000h"}, `--election-ttl 1000h0m0s: want 500ms to 1m0s`},
		{[]string{"--table-range", "254-255"}, `--table-range "254-255": holds the kernel's reserved tables`},
		{[]string{"--table-range", "250-260"}, `--table-range "250-260": holds the kernel's reserved tables`},
		{[]string{"--table-range", "253-253"}, `reserved tables`},
		{[]string{"--table-range", "0-10"}, `--table-range: range "0-10"`},
		{[]string{"--table-range", "2147483000-2147483648"}, `table IDs stop at 2147483647`},
		{[]string{"--backup-dir", "/tmp/x", "--backup-interval", "0s"}, `--backup-interval 0s: must be more than 0`},
		{[]string{"--backup-keep", "-1"}, `--backup-keep -1: want 0 (keep all) or more`},
		{[]string{"--cert-ttl", "-1h"}, `--cert-ttl -1h0m0s: must be more than 0`},
		{[]string{"--audit-retention-interval", "0s"}, `--audit-retention-interval 0s: must be more than 0`},
		{[]string{"--advertise-url", "ftp://198.18.0.1:8480"}, `--advertise-url "ftp://198.18.0.1:8480": scheme "ftp"`},
		{[]string{"--advertise-url", "https://198.18.0.1"}, `want https://HOST:PORT and nothing more`},
		{[]string{"--advertise-url", "https://0.0.0.0:8480"}, `wildcard address`},
		{[]string{"--advertise-url", "https://198.18.0.1:99999"}, `port "99999" is not a number from 1 to 65535`},
		{[]string{"--listen", "bogus"}, `--listen "bogus": want host:port`},
		{[]string{"--listen", "127.0.0.1:99999"}, `--listen "127.0.0.1:99999": port "99999"`},
		{[]string{"--metrics-listen", "bogus"}, `--metrics-listen "bogus": want host:port`},
		{[]string{"--tls-cert", notPEM}, `--tls-cert "` + notPEM + `" and --tls-key "": give both or neither`},
		{[]string{"--tls-cert", "/nonexistent-cert", "--tls-key", "/nonexistent-key"}, `--tls-cert: open /nonexistent-cert`},
		{[]string{"--client-ca", "/nonexistent-ca"}, `--client-ca: open /nonexistent-ca`},
		{[]string{"--client-ca", notPEM}, `--client-ca ` + notPEM + `: no PEM block`},
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
	// Every bad value is named in one go, and nothing is written to the data dir first.
	root := newRoot()
	dir := t.TempDir()
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&bytes.Buffer{})
	root.SetArgs([]string{"controller", "--data-dir", dir, "--election-ttl", "1ns", "--table-range", "254-255", "--backup-keep", "-1", "--advertise-url", "https://198.18.0.1"})
	err := root.Execute()
	for _, want := range []string{"--election-ttl 1ns", "--table-range", "--backup-keep -1", "--advertise-url"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("four bad flags: error %v does not name %s", err, want)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		t.Errorf("refused flags, yet the data dir holds %d entries", len(ents))
	}
	for _, r := range []string{"1-252", "256-4000", "1000-1999", "2147483000-2147483647"} {
		if _, err := parseTableRange(r); err != nil {
			t.Errorf("--table-range %s: %v", r, err)
		}
	}
	for _, e := range []string{"http://198.18.0.1:2379", "https://[2001:db8::1]:2379", "unix:///run/govcloud/etcd.sock", "198.18.0.1:2379", "localhost:2379"} {
		if err := checkEtcdEndpoint(e); err != nil {
			t.Errorf("%s: %v", e, err)
		}
	}
}

// TestLabHostsFlag: up refuses a host count the lab cannot make before touching anything;
// verify and down, which follow what up made, say --hosts and --vms are ignored rather than
// refuse them (an empty --dir: verify then finds no lab).
func TestLabHostsFlag(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		wantErr   string // in the error
		wantNote  string // on stderr
		forbidErr string // never in the error
	}{
		{[]string{"up", "--hosts", "9"}, "--hosts 9: the lab makes from 1 to 8 hosts", "", ""},
		{[]string{"up", "--hosts", "-1"}, "--hosts -1: the lab makes from 1 to 8 hosts", "", ""},
		{[]string{"up", "--hosts", "0"}, "--hosts 0: the lab makes from 1 to 8 hosts", "", ""},
		{[]string{"verify", "--hosts", "9"}, "lab verify", "lab verify: --hosts is for up only; verify follows what up made", "--hosts 9"},
		{[]string{"verify", "--vms"}, "lab verify", "lab verify: --vms is for up only", "--vms"},
	} {
		root := newRoot()
		var out, errOut bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&errOut)
		root.SetArgs(append([]string{"lab", "--dir", t.TempDir()}, tc.args...))
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) || (tc.forbidErr != "" && strings.Contains(err.Error(), tc.forbidErr)) {
			t.Errorf("lab %v: error %v, want one containing %q", tc.args, err, tc.wantErr)
		}
		if !strings.Contains(errOut.String(), tc.wantNote) {
			t.Errorf("lab %v: stderr %q, want %q", tc.args, errOut.String(), tc.wantNote)
		}
	}
}

// TestComputeFlagsRefused: the compute agent names every bad flag value before it dials the
// controller or touches libvirt.
func TestComputeFlagsRefused(t *testing.T) {
	root := newRoot()
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&bytes.Buffer{})
	root.SetArgs([]string{"compute", "--state-dir", t.TempDir(), "--controller", "not a url", "--provider", "qemu", "--metrics-listen", "127.0.0.1:x,198.18.0.1", "--stop-timeout", "-1s"})
	err := root.Execute()
	for _, want := range []string{`controller URL "not a url"`, `--provider "qemu": want libvirt or netns`, `"127.0.0.1:x": port "x"`, `"198.18.0.1": want host:port`, `--stop-timeout -1s`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("compute with bad flags: error %v does not name %s", err, want)
		}
	}
}
