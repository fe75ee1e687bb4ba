#!/usr/bin/env bash
# Build the binaries a real Kubernetes node needs, next to the control plane that
# tools/kube/build.sh builds, into a per-version cache outside the repository:
#   ${PYNCHY_K8S_CACHE:-~/.cache/pynchy/k8s}/node-v<kube>-kuberouter<v>-coredns<v>-pause<v>/bin
#   kubelet, kube-scheduler, kube-proxy  the control plane's Kubernetes version, from the same
#                                        wrapper module (tools/kube/kube) with the same flags
#   kube-router                          NetworkPolicy enforcer (run with only --run-firewall)
#   coredns                              cluster DNS, serving cluster.local from the API server
#   pause                                the pod sandbox process (tools/node/pause.c, static):
#                                        our machines have no registry to pull a pause image from
# Why from source: no registry and no release downloads here, only the Go module proxy, which
# also pins every dependency through the committed go.sum files. Versions: versions.env.
# Prints the bin directory on stdout (last line), logs to stderr. Only the first run pays for
# the build: on 2 cores ~8 min after tools/kube/build.sh (kubelet, kube-scheduler, kube-proxy
# ~1 min from the Go build cache it leaves; kube-router and coredns share little with it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kube="$here/../kube"
# shellcheck source=/dev/null
. "$kube/versions.env"
# shellcheck source=/dev/null
. "$here/versions.env"

cache_root=${PYNCHY_K8S_CACHE:-$HOME/.cache/pynchy/k8s}
bin="$cache_root/node-v$KUBE_VERSION-kuberouter$KUBE_ROUTER_VERSION-coredns$COREDNS_VERSION-pause$PAUSE_VERSION/bin"
want="kubelet kube-scheduler kube-proxy kube-router coredns pause"

complete() { for b in $want; do [ -x "$bin/$b" ] || return 1; done; }
if complete; then echo "$bin"; exit 0; fi

log() { echo "pynchy/node: $*" >&2; }
mkdir -p "$cache_root"
if command -v flock >/dev/null 2>&1; then
  # Two callers at once (parallel tests) would otherwise share one .partial directory.
  exec 9>"$cache_root/.node-build.lock"
  flock 9
  if complete; then echo "$bin"; exit 0; fi
fi

# shellcheck source=../kube/go-env.sh
. "$kube/go-env.sh" "$kube/kube/go.mod" "$here/kube-router/go.mod" "$here/coredns/go.mod"
libc_a=$(gcc -print-file-name=libc.a 2>/dev/null || true)
if [ ! -f "$libc_a" ]; then
  log "ERROR: building pause needs gcc and a static libc: apt-get install gcc libc6-dev"; exit 1
fi

# -mod=readonly: the committed go.mod/go.sum must already hold every module (tools/*/regen.sh).
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0
tmp="$bin.partial"
rm -rf "$tmp"; mkdir -p "$tmp"
start=$(date +%s)
step() { log "$1 built in $(( $(date +%s) - t ))s"; }

t=$(date +%s)
gcc -static -Os -Wall -Werror -DPAUSE_VERSION="\"$PAUSE_VERSION\"" -o "$tmp/pause" "$here/pause.c" >&2
strip "$tmp/pause"
step pause

t=$(date +%s)
log "building kubelet, kube-scheduler, kube-proxy v$KUBE_VERSION (first run only)"
(cd "$kube/kube" && go build -trimpath -pgo=off -tags selinux,notest,grpcnotrace -ldflags "-s -w $ver" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy) >&2
step "kubelet, kube-scheduler, kube-proxy"

t=$(date +%s)
log "building kube-router v$KUBE_ROUTER_VERSION (first run only)"
kr=github.com/cloudnativelabs/kube-router/v2
# Without the version it logs "Malformed version" at start-up. BuildDate: the release's time,
# not now, so that a rebuild is byte-identical (as the other Go binaries are).
(cd "$here/kube-router" && released=$(go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' "$kr") \
  && go build -trimpath -ldflags "-s -w -X $kr/pkg/version.Version=v$KUBE_ROUTER_VERSION -X $kr/pkg/version.BuildDate=$released" \
    -o "$tmp/kube-router" "$kr/cmd/kube-router") >&2
step kube-router

t=$(date +%s)
log "building coredns v$COREDNS_VERSION (first run only)"
(cd "$here/coredns" && go build -trimpath -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=v$COREDNS_VERSION" \
  -o "$tmp/coredns" github.com/coredns/coredns) >&2
step coredns

mkdir -p "$(dirname "$bin")"; rm -rf "$bin"; mv "$tmp" "$bin"
log "built in $(( $(date +%s) - start ))s into $bin"
echo "$bin"
