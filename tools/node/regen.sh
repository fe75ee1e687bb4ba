#!/usr/bin/env bash
# Regenerate the wrapper Go modules kube-router/ and coredns/ for the versions in versions.env.
# kubelet, kube-scheduler and kube-proxy live in tools/kube/kube: regenerate that one with
# tools/kube/regen.sh kube. Run this only when bumping versions; the result is committed.
# Usage: regen.sh [kube-router] [coredns]   (no argument: both)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/versions.env"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
parts=${*:-kube-router coredns}
want() { case " $parts " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# $1 wrapper dir, $2 module name, $3 package@version. The *package* path matters: `go get` of
# only the module leaves go.sum without the command's dependencies.
regen() {
  cd "$here/$1"
  rm -f go.mod go.sum
  go mod init "$2" >/dev/null 2>&1
  go mod edit -go=1.26.0  # not the local toolchain's patch release; go get raises it if a dependency needs more
  go get -tool "$3"
  echo "regenerated the $1 wrapper for $3"
}
if want kube-router; then
  regen kube-router pynchy.dev/tools/kube-router "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@v$KUBE_ROUTER_VERSION"
fi
if want coredns; then
  regen coredns pynchy.dev/tools/coredns "github.com/coredns/coredns@v$COREDNS_VERSION"
fi
