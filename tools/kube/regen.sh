#!/usr/bin/env bash
# Regenerate the wrapper Go modules (kube/ and etcd/) for the versions in versions.env.
# k8s.io/kubernetes lists its staging modules as v0.0.0 with replace directives that
# do not apply to a dependency, so each staging module is replaced with its published
# v0.<minor>.<patch> tag. Run this only when bumping versions; the result is committed.
# The kube wrapper also carries the node binaries (kubelet, kube-scheduler, kube-proxy) that
# tools/node/build.sh builds, so its go.sum holds what kubelet alone needs (k8s.io/cri-streaming, ...).
# Usage: regen.sh [kube] [etcd]   (no argument: both)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/versions.env"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
S=0.${KUBE_VERSION#1.}

parts=${*:-kube etcd}
want() { case " $parts " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

if want kube; then
  cd "$here/kube"
  rm -f go.mod go.sum
  go mod init pynchy.dev/tools/kube >/dev/null
  gomod=$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
  gover=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")
  go mod edit -go="$gover" -godebug=default=go"${gover%.*}"
  for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/.*#\1#p' "$gomod"); do
    go mod edit -replace="$m=$m@v$S"
  done
  go mod edit -require="k8s.io/kubernetes@v$KUBE_VERSION"
  # Each package needs the explicit @version: a bare path means @upgrade, i.e. the newest kubernetes.
  tools=""
  for c in kube-apiserver kube-controller-manager kubectl kubelet kube-scheduler kube-proxy; do
    tools="$tools k8s.io/kubernetes/cmd/$c@v$KUBE_VERSION"
  done
  # shellcheck disable=SC2086
  go get -tool $tools
  echo "regenerated the kube wrapper for kubernetes v$KUBE_VERSION"
fi

if want etcd; then
  cd "$here/etcd"
  rm -f go.mod go.sum
  go mod init pynchy.dev/tools/etcd >/dev/null
  go get -tool "go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
  echo "regenerated the etcd wrapper for etcd v$ETCD_VERSION"
fi
