#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages that building, testing and the demo need.
# Idempotent and quick when everything is present: it asks apt only for what is missing.
set -euo pipefail

PKGS=(
  # eBPF toolchain for 'make generate' (pinned clang) and inspection
  clang-19 llvm-19 libbpf-dev linux-libc-dev bpftool
  # the race detector ('make test' runs RACE_PKGS under -race) needs cgo and a C compiler
  gcc libc6-dev
  # kernel-facing tools the privileged tests and the benchmarks drive
  iproute2 nftables ethtool tcpdump iperf3 iputils-ping curl python3-scapy procps
  # the lab's top-of-rack router and the BGP tests' peer; BIRD 2 is the second implementation
  frr bird2
  # control plane: a real external etcd (TLS, client certificates) for the controller's tests;
  # setpriv (util-linux) runs a client as another user in the embedded etcd's test; etcdctl
  # (etcd-client) drives the three-member cluster of the HA test
  etcd-server etcd-client util-linux
  # metering: a real Prometheus scrapes /metrics in tests; promtool tests the recording rules
  prometheus
  # compute: libvirtd + qemu (TCG) run real VMs; the tiny guest is Debian's kernel + busybox
  qemu-system-x86 qemu-utils linux-image-amd64 busybox-static libvirt-daemon-system libvirt-clients
  dnsmasq-base xz-utils
  # the Debian guest image ('make image-debian'): debootstrap from Debian's packages, a
  # partition table (sfdisk, in fdisk) and EXTLINUX with syslinux's MBR as its boot loader
  debootstrap fdisk extlinux syslinux-common
  # the Debian package ('make deb'): deploy's test lints it (no error allowed) and runs its
  # maintainer scripts under 'dpkg --root' with busybox-static (above) as the root's /bin/sh
  lintian
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $EUID -ne 0 ]]; then
    echo "deps: missing packages: ${missing[*]}; run 'sudo make deps'" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "deps: all ${#PKGS[@]} packages present"
fi

# bpffs for pinned maps and links.
if [[ $EUID -eq 0 ]] && ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf
fi
