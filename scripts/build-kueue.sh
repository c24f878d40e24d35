#!/usr/bin/env bash
# Build Kueue's controller-manager from its official Go module (sigs.k8s.io/kueue) and copy its CRDs,
# into a cache keyed by version, for the hermetic control plane's gang-admission tests:
#   ${CHITU_CACHE:-$HOME/.cache/chitu}/kueue/<KUEUE_VERSION>/kueue
#   ${CHITU_CACHE:-$HOME/.cache/chitu}/kueue/<KUEUE_VERSION>/crds/*.yaml
#   ${CHITU_CACHE:-$HOME/.cache/chitu}/kueue/<KUEUE_VERSION>/webhooks.yaml   (its webhook configurations)
# Idempotent: when all of them are already there it builds nothing. The dev cluster starts it when asked
# (chitu_devcluster.kueue); cold, about 5 min on 2 cores after the control plane (shared module cache).
set -euo pipefail

KUEUE_VERSION=v0.17.0   # sigs.k8s.io/kueue

CACHE_ROOT="${CHITU_CACHE:-$HOME/.cache/chitu}/kueue"
OUT_DIR="$CACHE_ROOT/$KUEUE_VERSION"
SRC_DIR="$CACHE_ROOT/src/kueue-$KUEUE_VERSION"

log() { echo "[build-kueue $(date +%H:%M:%S)] $*"; }

if [[ -x "$OUT_DIR/kueue" && -f "$OUT_DIR/crds/kueue.x-k8s.io_workloads.yaml" && -f "$OUT_DIR/webhooks.yaml" ]]; then
  log "kueue $KUEUE_VERSION present in $OUT_DIR"
  exit 0
fi
command -v go >/dev/null || { echo "go is not on PATH" >&2; exit 1; }
mkdir -p "$OUT_DIR"
export CGO_ENABLED=0

# A helper module that requires Kueue and names its manager as a tool, so `go mod tidy` resolves
# exactly Kueue's own dependency versions (its go.mod has no replace directives).
rm -rf "$SRC_DIR" && mkdir -p "$SRC_DIR" && cd "$SRC_DIR"
go mod init chitu.local/kueue >/dev/null 2>&1
go mod edit -require="sigs.k8s.io/kueue@$KUEUE_VERSION" -tool=sigs.k8s.io/kueue/cmd/kueue
log "resolving kueue modules"
go mod tidy

# The CRDs as the module ships them (config/components/crd/bases); the kustomize patches only add a
# conversion webhook behind a Service, which a loopback apiserver cannot reach: the tests use v1beta2 only.
module_dir=$(go list -m -f '{{.Dir}}' "sigs.k8s.io/kueue")
rm -rf "$OUT_DIR/.crds.tmp" && mkdir -p "$OUT_DIR/.crds.tmp"
cp "$module_dir"/config/components/crd/bases/*.yaml "$OUT_DIR/.crds.tmp/"
chmod u+w "$OUT_DIR"/.crds.tmp/*.yaml
rm -rf "$OUT_DIR/crds" && mv "$OUT_DIR/.crds.tmp" "$OUT_DIR/crds"
# The webhook configurations as the module ships them (behind a Service); the dev cluster points them at
# Kueue's loopback port instead and keeps only those for kueue.x-k8s.io objects.
cp "$module_dir/config/components/webhook/manifests.yaml" "$OUT_DIR/.webhooks.yaml.tmp"
chmod u+w "$OUT_DIR/.webhooks.yaml.tmp" && mv "$OUT_DIR/.webhooks.yaml.tmp" "$OUT_DIR/webhooks.yaml"

if [[ -x "$OUT_DIR/kueue" ]]; then
  log "done-kueue: $OUT_DIR (binary already built)"
  exit 0
fi

start=$SECONDS
log "building kueue (sigs.k8s.io/kueue/cmd/kueue)"
ldflags="-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION"
# Temporary name first: an interrupted build never leaves a half-written binary the check above trusts.
go build -trimpath -ldflags "$ldflags" -o "$OUT_DIR/.kueue.tmp" sigs.k8s.io/kueue/cmd/kueue
mv "$OUT_DIR/.kueue.tmp" "$OUT_DIR/kueue"
log "built kueue in $((SECONDS - start)) s"
log "done-kueue: $OUT_DIR"
