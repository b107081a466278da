package gobgp

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/govcloud/govcloud/controlplane/bgp"
	"github.com/govcloud/govcloud/controlplane/bgp/frrtest"
	"github.com/govcloud/govcloud/dataplane/netnstest"
)

const md5Conf = `frr defaults datacenter
hostname md5tor
!
router bgp 65000
 bgp router-id 198.18.3.1
 no bgp ebgp-requires-policy
 neighbor 198.18.3.2 remote-as 65103
 neighbor 198.18.3.2 password right-password-7f3a
 neighbor 198.18.3.2 timers connect 1
!
`

func TestMD5(t *testing.T) {
	netnstest.RequirePrivileged(t)
	frrtest.Require(t)
	tor, h := netnstest.New(t, "gct-m5t"), netnstest.New(t, "gct-m5h")
	must(t, netnstest.Veth(tor, "t3", h, "up"))
	must(t, tor.AddrAdd("t3", "198.18.3.1/30"))
	must(t, h.AddrAdd("up", "198.18.3.2/30"))
	frr := frrtest.Start(t, tor, md5Conf, false)
	sp := startSpeaker(t, h, "GOVCLOUD_BGP_DEBUG=1")

	const wrong, right = "wrong-password-c41b", "right-password-7f3a"
	cfg := func(pw string) bgp.Config {
		return bgp.Config{RouterID: netip.MustParseAddr("198.18.3.2"), ASN: 65103, Peers: []bgp.Peer{
			{Address: netip.MustParseAddr("198.18.3.1"), ASN: 65000, Password: bgp.Secret(pw), HoldTime: 9 * time.Second}}}
	}
	adverts := []bgp.Advertisement{{Prefix: netip.MustParsePrefix("198.18.103.1/32")}}

	sp.MustSet(cfg(wrong), adverts)
	time.Sleep(4 * time.Second) // several connect attempts from both sides
	st := sp.Peer("198.18.3.1")
	if st.Established {
		t.Fatal("session established with the wrong MD5 password")
	}
	if n, _ := frr.Neighbor("198.18.3.2"); n.State == "Established" {
		t.Fatal("FRR established with the wrong MD5 password")
	}
	// "TCPMD5Failure" in the reason means FRR's SYNs reached our listener and failed its key
	// check: the listener has the key (an MPTCP listener cannot, and counts them unexpected).
	if !strings.Contains(st.Reason, "MD5") || !strings.Contains(st.Reason, "TCPMD5Failure") {
		t.Errorf("status reason %q does not point at the MD5 password (with the kernel's counter)", st.Reason)
	}
	t.Logf("wrong password: state %s, reason %q", st.State, st.Reason)
	statusJSON, _ := json.Marshal(sp.Status())

	sp.MustSet(cfg(right), adverts)
	frrtest.WaitFor(t, "session with the right password", 20*time.Second, func() (bool, error) {
		s := sp.Peer("198.18.3.1")
		return s.Established, fmt.Errorf("%s: %s", s.State, s.Reason)
	})
	frrtest.WaitFor(t, "FRR to learn the route over the MD5 session", 5*time.Second, func() (bool, error) {
		p, err := frr.Paths("198.18.103.1/32")
		return len(p) == 1, err
	})
	if st := sp.Peer("198.18.3.1"); st.Reason != "" {
		t.Errorf("established session still has reason %q", st.Reason)
	}
	statusJSON2, _ := json.Marshal(sp.Status())
	logs := sp.Log()
	for _, pw := range []string{wrong, right} {
		for what, s := range map[string]string{"speaker log (debug level)": logs, "status JSON": string(statusJSON) + string(statusJSON2)} {
			if strings.Contains(s, pw) {
				t.Errorf("password %q appears in the %s", pw, what)
			}
		}
	}
	if !strings.Contains(logs, "198.18.3.1") {
		t.Error("speaker log is empty: the password check above proves nothing")
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	const pw = "s3cr3t-never-shown"
	p := bgp.Peer{Address: netip.MustParseAddr("192.0.2.1"), ASN: 65000, Password: pw}
	cfg := bgp.Config{RouterID: netip.MustParseAddr("192.0.2.2"), ASN: 65001, Peers: []bgp.Peer{p}}
	js, _ := json.Marshal(cfg)
	for _, s := range []string{p.String(), fmt.Sprint(p), fmt.Sprintf("%+v", p), fmt.Sprintf("%#v", p), fmt.Sprintf("%v", cfg), string(js)} {
		if strings.Contains(s, pw) {
			t.Errorf("password printed: %s", s)
		}
	}
	if p.Password.Reveal() != pw {
		t.Error("Reveal lost the password")
	}
	var a logAdapter
	a.setSecrets(cfg.Peers)
	a.reasons = map[string]string{}
	a.note("failed to connect", map[string]any{"Key": "192.0.2.1", "Error": "dial with key " + pw})
	if r := a.reason("192.0.2.1", true); strings.Contains(r, pw) || !strings.Contains(r, "MD5") {
		t.Errorf("reason %q: must mention MD5 and never the password", r)
	}
}
