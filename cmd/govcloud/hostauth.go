package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/govcloud/govcloud/controlplane/client"
)

// hostAuth is how a host's agent (network or compute) reaches and authenticates to the
// controller: URLs, CA, and a client certificate obtained with a join token (or, the older
// way, an agent bearer token).
type hostAuth struct {
	controller     string
	controllerFile string
	tokenFile      string
	apiNetns       string
	caFile         string
	joinToken      string
	joinTokenFile  string
	certDir        string
}

func (h *hostAuth) flags(f *pflag.FlagSet) {
	f.StringVar(&h.controller, "controller", "", "controller URL(s), comma-separated for failover (round robin, the last that answered first; default GOVCLOUD_API or "+client.DefaultAPI+")")
	f.StringVar(&h.controllerFile, "controller-file", "", "file holding the controller URL(s), comma-separated (instead of --controller); re-read on SIGHUP, so a host is pointed at a restored or moved controller without a restart")
	f.StringVar(&h.controller, "api", "", "same as --controller")
	_ = f.MarkHidden("api")
	f.StringVar(&h.caFile, "ca", "", "CA certificate (PEM) verifying the controller (default GOVCLOUD_CA, else the local controller's ca.crt)")
	f.StringVar(&h.joinToken, "join-token", "", "single-use join token ('govcloud token create --role agent --host H --join') exchanged for this host's certificate when it has none")
	f.StringVar(&h.joinTokenFile, "join-token-file", "", "file holding the join token (instead of --join-token)")
	f.StringVar(&h.certDir, "cert-dir", "", "directory of this host's certificate, host.crt and host.key (default: --state-dir)")
	f.StringVar(&h.tokenFile, "token-file", "", "file holding an agent bearer token, used when the host has no certificate and no join token (default GOVCLOUD_TOKEN)")
	f.StringVar(&h.apiNetns, "api-netns", "", "network namespace file (e.g. a bind mount of /proc/self/ns/net) to dial the controller from")
}

// readControllerFile reads the URLs of --controller-file.
func (h *hostAuth) readControllerFile() (string, error) {
	b, err := os.ReadFile(h.controllerFile)
	if err != nil {
		return "", fmt.Errorf("--controller-file: %w", err)
	}
	urls := strings.TrimSpace(string(b))
	if urls == "" {
		return "", fmt.Errorf("--controller-file %s: empty (want the controller URL(s), comma-separated)", h.controllerFile)
	}
	return urls, nil
}

// repointOnHangup re-reads --controller-file on each SIGHUP until ctx ends and points c at
// its URLs, then calls changed (the agent's watch retries at once). Without the flag it does
// nothing. A file that cannot be read leaves c as it was, and says so in the log.
func (h *hostAuth) repointOnHangup(ctx context.Context, c *client.Client, log *slog.Logger, changed func()) {
	if h.controllerFile == "" {
		return
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		urls, err := h.readControllerFile()
		if err != nil {
			log.Error("SIGHUP: controller URLs unchanged", "err", err)
			continue
		}
		c.Repoint(urls)
		log.Info("SIGHUP: controller URLs re-read", "controller", urls, "file", h.controllerFile)
		if changed != nil {
			changed()
		}
	}
}

// client builds the controller client of host: with the host's certificate from certDir
// (made through the join token when missing), else the bearer token. run renews the
// certificate until ctx ends (a no-op without one).
func (h *hostAuth) client(ctx context.Context, host, defaultCertDir string, log *slog.Logger) (c *client.Client, run func(context.Context), err error) {
	c = client.FromEnv()
	if h.controller != "" {
		c.SetBase(h.controller)
	}
	if h.controllerFile != "" {
		urls, err := h.readControllerFile()
		if err != nil {
			return nil, nil, err
		}
		c.SetBase(urls)
	}
	tc, err := client.TLSConfig(h.caFile)
	if err != nil {
		return nil, nil, err
	}
	tr := client.NewTransport(tc)
	if h.apiNetns != "" {
		dial, err := netnsDialer(h.apiNetns)
		if err != nil {
			return nil, nil, err
		}
		tr.DialContext = dial
	}
	// No overall timeout: every attempt is cut when the controller goes silent (heartbeats),
	// and long polls last as long as they ask.
	c.HTTP = &http.Client{Transport: tr}
	if h.tokenFile != "" {
		b, err := os.ReadFile(h.tokenFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--token-file: %w", err)
		}
		c.Token = strings.TrimSpace(string(b))
	}
	join := strings.TrimSpace(h.joinToken)
	var joinErr error // only when the host has no certificate yet: a used join token may be gone
	if h.joinTokenFile != "" {
		b, err := os.ReadFile(h.joinTokenFile)
		if err != nil {
			joinErr = fmt.Errorf("--join-token-file: %w", err)
		}
		join = strings.TrimSpace(string(b))
	}
	dir := h.certDir
	if dir == "" {
		dir = defaultCertDir
	}
	id, err := client.LoadIdentity(dir, host)
	switch {
	case err == nil:
		log.Info("host certificate", "host", host, "dir", dir, "notAfter", id.Leaf().NotAfter)
	case joinErr != nil:
		return nil, nil, joinErr
	case join != "":
		if !errors.Is(err, os.ErrNotExist) {
			log.Warn("host certificate unusable; joining again", "dir", dir, "err", err)
		}
		anon := &client.Client{Base: c.Base, Bases: c.Bases, HTTP: c.HTTP, AttemptIdle: c.AttemptIdle, RetryFor: c.RetryFor} // the join token is the only credential
		jctx, cancel := context.WithTimeout(ctx, time.Minute)
		id, err = client.Join(jctx, anon, dir, host, join)
		cancel()
		if err != nil {
			return nil, nil, err
		}
		c.Base, c.Bases = anon.Base, anon.Bases
		log.Info("joined: host certificate issued", "host", host, "dir", dir, "notAfter", id.Leaf().NotAfter)
	case c.Token != "" && errors.Is(err, os.ErrNotExist):
		log.Warn("no host certificate: authenticating with a bearer token; give --join-token to use a host certificate", "host", host)
		return c, func(context.Context) {}, nil
	case errors.Is(err, os.ErrNotExist):
		return nil, nil, fmt.Errorf("host %q has no certificate in %s: give --join-token or --join-token-file (or an agent token)", host, dir)
	default:
		return nil, nil, fmt.Errorf("host certificate in %s: %w", dir, err)
	}
	id.Use(c)
	return c, func(ctx context.Context) { id.RunRenewal(ctx, c, log, 0) }, nil
}

// check finds, without dialing, what client would refuse: each controller URL (of
// --controller, --controller-file or GOVCLOUD_API), the CA file, and the token and join-token
// files, each error naming its flag and value.
func (h *hostAuth) check(defaultCertDir string) []error {
	var errs []error
	urls := h.controller
	if h.controllerFile != "" {
		u, err := h.readControllerFile()
		if err != nil {
			errs = append(errs, err)
		}
		urls = u
	} else if urls == "" {
		urls = os.Getenv("GOVCLOUD_API")
	}
	for _, b := range strings.Split(urls, ",") {
		if b = strings.TrimRight(strings.TrimSpace(b), "/"); b != "" {
			if err := client.CheckURL(b); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if _, err := client.TLSConfig(h.caFile); err != nil {
		errs = append(errs, err)
	}
	certDir := h.certDir
	if certDir == "" {
		certDir = defaultCertDir
	}
	_, certErr := os.Stat(filepath.Join(certDir, client.HostCertFile))
	for _, f := range []struct{ flag, path string }{{"--token-file", h.tokenFile}, {"--join-token-file", h.joinTokenFile}} {
		if f.path == "" || (f.flag == "--join-token-file" && certErr == nil) {
			continue // a host with its certificate needs no join token (a used one may be gone)
		}
		if b, err := os.ReadFile(f.path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.flag, err))
		} else if strings.TrimSpace(string(b)) == "" {
			errs = append(errs, fmt.Errorf("%s %s: empty", f.flag, f.path))
		}
	}
	return errs
}
