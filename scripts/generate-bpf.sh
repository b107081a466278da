#!/usr/bin/env bash
# generate-bpf.sh CLANG: rebuilds the committed eBPF objects (bpf2go) in a scratch copy of the
# sources at /tmp/govcloud-bpfgen.XXXXXX and copies the results back. clang-19's BTF type order
# depends on the length of the paths it is run with (the checkout's directory), so building in
# a path of fixed length makes the objects the same in every clone and check-generate meaningful.
set -euo pipefail
clang=${1:?usage: generate-bpf.sh CLANG}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d /tmp/govcloud-bpfgen.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/dataplane"
cp -r "$root/go.mod" "$root/go.sum" "$root/bpf" "$root/third_party" "$tmp/"
cp -r "$root/dataplane/bpfobj" "$tmp/dataplane/"
(cd "$tmp" && BPF_CLANG="$clang" go generate ./dataplane/bpfobj/...)
cp "$tmp"/dataplane/bpfobj/*_bpfel.go "$tmp"/dataplane/bpfobj/*_bpfel.o "$root/dataplane/bpfobj/"
