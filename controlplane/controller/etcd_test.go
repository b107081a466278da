package controller_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/apitest"
	"github.com/govcloud/govcloud/controlplane/client"
	"github.com/govcloud/govcloud/controlplane/controller"
	"github.com/govcloud/govcloud/controlplane/pki"
	"github.com/govcloud/govcloud/controlplane/store"
	"github.com/govcloud/govcloud/controlplane/store/etcdtest"
)

// TestExternalEtcdTLS: the controller runs on a real external etcd (Debian's etcd-server)
// that requires TLS and client certificates, through --etcd-cacert/--etcd-cert/--etcd-key;
// a client without a certificate, or with one of another CA, is refused by that etcd.
func TestExternalEtcdTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("etcd test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srvCert, srvKey, err := ca.PeerCert([]string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cliCert, cliKey, err := ca.PeerCert([]string{"govcloud-controller"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"ca.crt": ca.CertPEM, "server.crt": srvCert, "server.key": srvKey, "client.crt": cliCert, "client.key": cliKey}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f := func(n string) string { return filepath.Join(dir, n) }
	curl, out := etcdtest.Start(t, dir, "https",
		"--cert-file", f("server.crt"), "--key-file", f("server.key"), "--trusted-ca-file", f("ca.crt"), "--client-cert-auth",
		"--max-txn-ops", "100000", "--max-request-bytes", "67108864")

	tc, err := store.EtcdTLS(f("ca.crt"), f("client.crt"), f("client.key"))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := store.ConnectTLS([]string{curl}, tc, quiet)
		if err == nil {
			st.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd with TLS not up after 30s: %v\n%s", err, out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// etcd refuses clients without a certificate and with a certificate of another CA.
	noCert, _ := store.EtcdTLS(f("ca.crt"), "", "")
	if st, err := store.ConnectTLS([]string{curl}, noCert, quiet); err == nil {
		st.Close()
		t.Error("etcd accepted a client without a certificate")
	}
	other, _ := pki.NewCA("other", time.Hour)
	oc, ok, _ := other.PeerCert([]string{"x"}, time.Hour)
	_ = os.WriteFile(f("other.crt"), oc, 0o600)
	_ = os.WriteFile(f("other.key"), ok, 0o600)
	otherTLS, _ := store.EtcdTLS(f("ca.crt"), f("other.crt"), f("other.key"))
	if st, err := store.ConnectTLS([]string{curl}, otherTLS, quiet); err == nil {
		st.Close()
		t.Error("etcd accepted a client certificate of another CA")
	}

	// The controller on it: HTTPS API, apply, read back, a host joins (records in that etcd).
	c := startTLS(t, controller.Options{EtcdEndpoints: []string{curl}, EtcdTLS: tc})
	ctx := context.Background()
	admin := c.client(t, c.token)
	res, err := admin.Apply(ctx, "base.yaml", []byte(apitest.Base), client.ApplyOptions{})
	if err != nil || res.Counts["create"] == 0 {
		t.Fatalf("apply on external etcd: %v %+v", err, res)
	}
	objs, err := admin.List(ctx, "segments")
	if err != nil || len(objs) == 0 {
		t.Fatalf("read back: %v (%d segments)", err, len(objs))
	}
	jt, err := admin.CreateJoinToken(ctx, client.JoinTokenRequest{Host: "host1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Join(ctx, c.client(t, ""), t.TempDir(), "host1", jt.Token); err != nil {
		t.Fatalf("join through a controller on external etcd: %v", err)
	}
	if strings.Contains(c.out.String(), c.token) {
		t.Error("admin token printed")
	}
}
