#!/usr/bin/env bash
# Build helm from its official Go module (helm.sh/helm/v3, no release tarball) into a cache keyed by version:
#   ${CHITU_CACHE:-$HOME/.cache/chitu}/helm/<HELM_VERSION>/helm
# Idempotent: when the binary is already there it builds nothing. Prints the binary's path last.
# Cold: a few minutes on 2 cores (it shares most of its k8s.io modules with the control plane build).
#
# Why v3: its flags and release format are what charts and CI pipelines are written against today; v4
# changes install defaults (server-side apply) and plugin formats that users of this chart would not expect.
set -euo pipefail

HELM_VERSION=v3.22.0

CACHE_ROOT="${CHITU_CACHE:-$HOME/.cache/chitu}/helm"
BIN_DIR="$CACHE_ROOT/$HELM_VERSION"

log() { echo "[build-helm $(date +%H:%M:%S)] $*" >&2; }

if [[ -x "$BIN_DIR/helm" ]]; then
  log "helm $HELM_VERSION present in $BIN_DIR"
  echo "$BIN_DIR/helm"
  exit 0
fi
command -v go >/dev/null || { echo "go is not on PATH" >&2; exit 1; }
mkdir -p "$BIN_DIR"
export CGO_ENABLED=0

# helm's go.mod has no replace directives, so `go install module@version` builds it with exactly the
# dependency versions helm pinned. The ldflags are those of helm's own Makefile: its version, and the
# Kubernetes version its `template`/`lint` assume by default (client-go v0.X.Y -> Kubernetes 1.X).
log "reading helm $HELM_VERSION's client-go version"
helm_gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" \
  | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
[[ -f "$helm_gomod" ]] || { echo "could not locate go.mod of helm.sh/helm/v3@$HELM_VERSION" >&2; exit 1; }
client_go=$(awk '$1 == "k8s.io/client-go" {print $2}' "$helm_gomod")
k8s_minor=${client_go#v0.}; k8s_minor=${k8s_minor%%.*}
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done

# Build into a temporary directory first so an interrupted build never leaves a half-written binary
# that the idempotency check above would trust.
tmp_bin=$(mktemp -d "$CACHE_ROOT/.build.XXXXXX")
trap 'rm -rf "$tmp_bin"' EXIT
start=$SECONDS
log "building helm $HELM_VERSION (client-go $client_go -> default Kubernetes 1.$k8s_minor)"
GOBIN="$tmp_bin" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
mv "$tmp_bin/helm" "$BIN_DIR/helm"
log "built helm in $((SECONDS - start)) s: $("$BIN_DIR/helm" version --short)"
echo "$BIN_DIR/helm"
