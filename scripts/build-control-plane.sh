#!/usr/bin/env bash
# Build the hermetic test control plane (kube-apiserver, kube-controller-manager, kube-scheduler, etcd)
# from the official Go modules, into a cache keyed by version:
#   ${CHITU_CACHE:-$HOME/.cache/chitu}/control-plane/<K8S_VERSION>/
# Idempotent: when every binary is already there it builds nothing.
# Cold: about 8.5 min on 2 cores, 1 GB of module cache (~/go) and 3 GB of build cache.
set -euo pipefail

K8S_VERSION=v1.37.2       # k8s.io/kubernetes
STAGING_VERSION=v0.37.2   # its published k8s.io/* staging modules
ETCD_VERSION=v3.6.14      # go.etcd.io/etcd/server/v3

CACHE_ROOT="${CHITU_CACHE:-$HOME/.cache/chitu}/control-plane"
BIN_DIR="$CACHE_ROOT/$K8S_VERSION"
SRC_DIR="$CACHE_ROOT/src"
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler)

log() { echo "[build-control-plane $(date +%H:%M:%S)] $*"; }

# One build at a time: tests that find the binaries missing may start this script concurrently, and two builds
# would delete each other's module directory.
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.build.lock"
flock 9

missing=()
for bin in "${K8S_CMDS[@]}" etcd; do
  [[ -x "$BIN_DIR/$bin" ]] || missing+=("$bin")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  log "all binaries present in $BIN_DIR"
  exit 0
fi
log "missing: ${missing[*]} -> building into $BIN_DIR"
command -v go >/dev/null || { echo "go is not on PATH" >&2; exit 1; }
mkdir -p "$BIN_DIR" "$SRC_DIR"
export CGO_ENABLED=0

# Build one package of the helper module in $PWD; write to a temporary name first so an
# interrupted build never leaves a half-written binary that the idempotency check would trust.
build() {  # build NAME PACKAGE [LDFLAGS]
  local name=$1 pkg=$2 ldflags=${3:-"-s -w"} start=$SECONDS
  log "building $name ($pkg)"
  go build -trimpath -ldflags "$ldflags" -o "$BIN_DIR/.$name.tmp" "$pkg"
  mv "$BIN_DIR/.$name.tmp" "$BIN_DIR/$name"
  log "built $name in $((SECONDS - start)) s"
}

needs() { [[ " ${missing[*]} " == *" $1 "* ]]; }

# etcd: the server module's root package is `main`.
if needs etcd; then
  dir="$SRC_DIR/etcd-$ETCD_VERSION"
  rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
  go mod init chitu.local/etcd >/dev/null 2>&1
  go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION" -tool=go.etcd.io/etcd/server/v3
  log "resolving etcd modules"
  go mod tidy
  build etcd go.etcd.io/etcd/server/v3
fi

k8s_missing=()
for bin in "${K8S_CMDS[@]}"; do needs "$bin" && k8s_missing+=("$bin"); done
if [[ ${#k8s_missing[@]} -gt 0 ]]; then
  dir="$SRC_DIR/kubernetes-$K8S_VERSION"
  rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
  go mod init chitu.local/kubernetes >/dev/null 2>&1
  # k8s.io/kubernetes points its staging modules at ./staging/... in its own go.mod; a module that
  # requires it must pin each of them to the published tag instead. Take the list from that go.mod.
  log "reading the staging module list from k8s.io/kubernetes@$K8S_VERSION's go.mod"
  k8s_gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [[ -f "$k8s_gomod" ]] || { echo "could not locate go.mod of k8s.io/kubernetes@$K8S_VERSION" >&2; exit 1; }
  edits=(-require="k8s.io/kubernetes@$K8S_VERSION")
  while read -r mod; do
    edits+=(-replace="$mod=$mod@$STAGING_VERSION")
  done < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$k8s_gomod")
  log "pinning $(( ${#edits[@]} - 1 )) staging modules to $STAGING_VERSION"
  for bin in "${K8S_CMDS[@]}"; do edits+=(-tool="k8s.io/kubernetes/cmd/$bin"); done
  go mod edit "${edits[@]}"
  log "resolving kubernetes modules"
  go mod tidy
  minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
  major=${K8S_VERSION#v}; major=${major%%.*}
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor"
  # The apiserver first: the other two reuse most of its compiled packages.
  for bin in "${k8s_missing[@]}"; do build "$bin" "k8s.io/kubernetes/cmd/$bin" "$ldflags"; done
fi

log "done: $(ls "$BIN_DIR" | tr '\n' ' ')"
