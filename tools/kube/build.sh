#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, kubectl and etcd from source via the
# Go module proxy, into a per-version cache outside the repository:
#   ${PYNCHY_K8S_CACHE:-~/.cache/pynchy/k8s}/v<kube>-etcd<etcd>/bin
# Prints the bin directory on stdout. Only the first run pays for the build.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/versions.env"

cache_root=${PYNCHY_K8S_CACHE:-$HOME/.cache/pynchy/k8s}
bin="$cache_root/v$KUBE_VERSION-etcd$ETCD_VERSION/bin"
want="kube-apiserver kube-controller-manager kubectl etcd"

complete() { for b in $want; do [ -x "$bin/$b" ] || return 1; done; }
if complete; then echo "$bin"; exit 0; fi

log() { echo "pynchy/k8s: $*" >&2; }
# shellcheck source=go-env.sh
. "$here/go-env.sh" "$here/kube/go.mod" "$here/etcd/go.mod"

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
tmp="$bin.partial"
rm -rf "$tmp"; mkdir -p "$tmp"
start=$(date +%s)
log "building etcd v$ETCD_VERSION (first run only)"
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3) >&2
log "building kube-apiserver, kube-controller-manager, kubectl v$KUBE_VERSION (first run only; ~20-40 min on 2 cores)"
(cd "$here/kube" && go build -trimpath -pgo=off -tags selinux,notest,grpcnotrace -ldflags "-s -w $ver" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl) >&2
mkdir -p "$(dirname "$bin")"; rm -rf "$bin"; mv "$tmp" "$bin"
log "built in $(( $(date +%s) - start ))s into $bin"
echo "$bin"
