# govcloud — build, generate, test, benchmark and demo.
# Every target that touches the kernel (test, bench-*, demo) needs root.

GO        ?= go
CLANG     ?= clang-19
BIN       := bin/govcloud
GOTESTFLAGS ?= -count=1 -timeout 30m
export CGO_ENABLED ?= 0

.PHONY: all build generate check-generate test test-unit vet lint deps demo demo-vms demo-down \
        deb dashboards bench-lb bench-maglev fuzz-lb bench-agent bench-controlplane bench-scale bench-backup bench-bgp bench-metering fuzz-config image-debian clean help

all: build

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

# What 'govcloud version' and /v1/status report (internal/buildinfo).
BUILDINFO := github.com/govcloud/govcloud/internal/buildinfo
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)
DATE      ?= $(shell git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
BPFSUM    ?= $(shell cat dataplane/bpfobj/*_bpfel.o | sha256sum | cut -d' ' -f1)
ldflags    = -X $(BUILDINFO).version=$(1) -X $(BUILDINFO).commit=$(COMMIT) -X $(BUILDINFO).date=$(DATE) -X $(BUILDINFO).bpfSHA256=$(BPFSUM)
LDFLAGS   := $(call ldflags,$(VERSION))

build: ## build bin/govcloud (version, commit, date and eBPF object hash stamped in)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/govcloud

generate: ## rebuild the committed eBPF objects with the pinned clang (clang-19)
	@command -v $(CLANG) >/dev/null || { echo "generate: $(CLANG) not found; run 'sudo make deps'" >&2; exit 1; }
	PATH="$$(dirname $$(command -v $(GO))):$$PATH" ./scripts/generate-bpf.sh $(CLANG)

check-generate: generate ## fail if the committed eBPF objects are stale
	@git diff --exit-code --stat -- dataplane/bpfobj || { \
	  echo "check-generate: committed eBPF objects differ from 'make generate'; commit the regenerated files" >&2; exit 1; }

dashboards: ## regenerate deploy/grafana/dashboards/govcloud.json from deploy/grafana/gen (a test fails when it is stale)
	$(GO) run ./deploy/grafana/gen -o deploy/grafana/dashboards/govcloud.json

vet: ## go vet
	$(GO) vet ./...

STATICCHECK_VERSION ?= v0.8.2
STATICCHECK ?= $(shell $(GO) env GOPATH)/bin/staticcheck

lint: vet ## go vet + staticcheck (installs staticcheck $(STATICCHECK_VERSION) when missing)
	@[ -x $(STATICCHECK) ] || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(STATICCHECK) ./...

deps: ## install what builds, tests and the demo need (Debian/Ubuntu, idempotent)
	./scripts/deps.sh

# controlplane/e2e runs alone, after the rest: its controller and etcd failover times are held
# to the 3 s goal, which other packages' tests on the same cores would stretch.
# RACE_PKGS also run under the race detector: the long-running servers' request paths, where
# a data race on a map ends the process (a 102 heartbeat and a handler's headers did).
# -race needs cgo (gcc, from 'make deps'); every other build here is CGO_ENABLED=0.
RACE_PKGS ?= ./controlplane/api/ ./controlplane/client/ ./controlplane/hoststatus/

# The Debian guest image is built (once per machine) before the tests, not inside them: its
# debootstrap would otherwise run beside the lab's timing-sensitive scenarios.
test: build image-debian ## every test, privileged ones included (run as root)
	$(GO) test $(GOTESTFLAGS) $$($(GO) list ./... | grep -v '/controlplane/e2e$$')
	$(GO) test -count=1 github.com/osrg/gobgp/v3/pkg/server # the vendored GoBGP's patches (third_party/gobgp/PATCHES.md)
	CGO_ENABLED=1 $(GO) test -race -count=1 $(RACE_PKGS)
	$(GO) test $(GOTESTFLAGS) ./controlplane/e2e/

test-unit: ## only the tests that need neither root nor tools
	GOVCLOUD_UNPRIVILEGED=1 $(GO) test -count=1 -short ./...

NFPM_VERSION ?= v2.45.2
# A Debian version must start with a digit: a tag v1.2.3 gives 1.2.3, an untagged commit
# 0.0.0~gitCOMMIT ('~' sorts before anything, so any release is newer). The packaged binary is
# stamped with this same string, so 'govcloud version' says what 'dpkg -s govcloud' says (the
# commit is on its own line either way).
DEB_VERSION  ?= $(shell git describe --tags --match 'v[0-9]*' 2>/dev/null | sed 's/^v//' | grep . || echo 0.0.0~git$$(git rev-parse --short HEAD 2>/dev/null || echo unknown))
DEBDIR       ?= bin

deb: ## Debian package in $(DEBDIR) (nfpm $(NFPM_VERSION)): binary, man pages, systemd units, /etc/govcloud
	rm -rf bin/deb && mkdir -p bin/deb $(DEBDIR)
	$(GO) build -trimpath -ldflags "-s -w $(call ldflags,$(DEB_VERSION))" -o bin/deb/govcloud ./cmd/govcloud
	./bin/deb/govcloud man bin/deb/man && gzip -9n bin/deb/man/*.1
	printf 'govcloud (%s) unstable; urgency=medium\n\n  * Built from commit %s.\n\n -- govcloud maintainers <govcloud@example.org>  %s\n' \
	  '$(DEB_VERSION)' '$(COMMIT)' "$$(date -R -d '$(DATE)')" | gzip -9n > bin/deb/changelog.gz
	GOVCLOUD_DEB_VERSION=$(DEB_VERSION) GOFLAGS=-mod=mod $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION) \
	  package --config deploy/deb/nfpm.yaml --packager deb --target $(DEBDIR)/

bench-lb: build ## XDP load balancer versus nftables DNAT, per-packet cost, table swap (root)
	$(GO) test -count=1 -run '^$$' -bench BenchmarkLBReport -benchtime 1x -timeout 30m ./dataplane/lbmap/

bench-maglev: ## shared Maglev tables: controller computation for 1000 services, bytes a host fetches after missing 10 changes
	$(GO) test -count=1 -run '^$$' -bench BenchmarkMaglevTablesReport -benchtime 1x -timeout 20m ./controlplane/lbtables/keeper/

fuzz-lb: ## fuzz the XDP load balancer through BPF_PROG_TEST_RUN for FUZZTIME (default 60s, root)
	$(GO) test -run '^$$' -fuzz FuzzXDP -fuzztime $(or $(FUZZTIME),60s) ./dataplane/lbmap/

bench-agent: ## agent: apply -> forwarding on both hosts (lab), 4094 VLAN mappings, trunk vs plain veth throughput (root)
	$(GO) test -count=1 -run '^$$' -bench BenchmarkApplyToForwarding -benchtime 1x -timeout 20m ./lab/
	$(GO) test -count=1 -run '^$$' -bench BenchmarkScaleServices -benchtime 1x -timeout 10m ./dataplane/lbmap/
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 30m ./dataplane/hostnet/

bench-compare: ## before/after in one run: make bench-compare BASE=<git rev> TARGET=bench-lb [ROUNDS=3] (alternates both sides, prints min/median/max and ratios)
	./scripts/bench-compare.sh $(or $(BASE),main) $(or $(TARGET),bench-lb) $(or $(ROUNDS),3)

bench-controlplane: ## control plane: apply/plan of 30 departments x 4 segments x 10 services, API p50/p99 under load; apply p50/p99 on a 3-member etcd cluster vs embedded, leader failover time; then bench-scale (root)
	$(GO) test -count=1 -run '^$$' -bench 'BenchmarkControlPlane|BenchmarkHAReport' -benchtime 1x -timeout 20m ./controlplane/e2e/
	$(MAKE) bench-scale

bench-scale: ## scale lab: 8 hosts, apply 30 departments x 4 segments x 10 services -> every VIP answering on every host, min/median/max over ROUNDS rounds (default 3; goal < 30 s; root)
	GC_SCALE_ROUNDS=$(or $(ROUNDS),3) $(GO) test -count=1 -run '^$$' -bench BenchmarkScaleLab -benchtime 1x -timeout 60m ./lab/

bench-backup: ## backup and restore of the 30 departments x 4 segments x 10 services store (rounds, min/median/max); the lab's disaster drill recovery time (root)
	$(GO) test -count=1 -run '^$$' -bench BenchmarkBackup -benchtime 1x -timeout 20m ./controlplane/e2e/
	$(GO) test -count=1 -run '^$$' -bench BenchmarkDrill -benchtime 1x -timeout 20m ./lab/

bench-bgp: ## BGP speaker: Set() -> UPDATE at FRR p50/p99 over 100 changes, 10,000 VIPs to FRR, speaker RSS; BFD vs hold-timer failure detection p50/p99 over 20 runs (root)
	$(GO) test -count=1 -run '^$$' -bench 'BenchmarkBGPReport|BenchmarkBFDReport' -benchtime 1x -timeout 15m ./controlplane/bgp/gobgp/

bench-metering: ## metering: /metrics scrape p50/p99 and series count for 30 departments; trunk counters on vs off; ledger ingest 30 departments x 20 hosts every 10 s (root)
	$(GO) test -count=1 -run '^$$' -bench BenchmarkLedgerIngest -benchtime 1x -timeout 10m ./metering/
	$(GO) test -count=1 -run '^$$' -bench BenchmarkMeteringReport -benchtime 1x -timeout 10m ./metering/hostsource/
	$(GO) test -count=1 -run '^$$' -bench BenchmarkTrunkThroughput -benchtime 1x -timeout 10m ./dataplane/hostnet/
	@echo "(the load balancer's counters on vs off: see 'sudo make bench-lb', line 'xdp_lb built without counters')"

bench-compute: build ## compute: apply -> guest answers ping for namespace, tiny and Debian guests, p50/p95, each beside the same guest by hand (ip netns; qemu-img + virsh), alternated (root; starts libvirtd; N=10, DEBIAN_N=3)
	GC_BENCH_N=$(or $(N),10) GC_BENCH_DEBIAN_N=$(or $(DEBIAN_N),3) $(GO) test -count=1 -run '^$$' -bench BenchmarkComputeReport -benchtime 1x -timeout 20m ./compute/libvirt/

fuzz-config: ## fuzz the YAML parser+validator for 60s
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 60s ./controlplane/config/

IMAGE_STORE ?= /var/cache/govcloud/images

image-debian: ## Debian 12 guest image (debootstrap, ~9 min once per machine; cached in IMAGE_STORE, rebuilt when its recipe changes; root)
	./scripts/build-debian-image.sh $(IMAGE_STORE)

demo: deps build ## build and bring up the lab
	./$(BIN) lab up

demo-vms: deps build ## the lab with real VMs (libvirt, qemu TCG) as the backends
	./$(BIN) lab up --vms

demo-down: ## remove everything the lab made
	@[ -x $(BIN) ] || $(GO) build -o $(BIN) ./cmd/govcloud
	./$(BIN) lab down

clean:
	rm -rf bin
