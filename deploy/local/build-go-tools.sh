#!/usr/bin/env bash
# Build the Go command-line tools the chart and monitoring tests need, from the Go module proxy, once:
#   helm     helm.sh/helm/v3/cmd/helm                     (helm lint / template / install)
#   promtool github.com/prometheus/prometheus/cmd/promtool (promtool check rules)
# (the Prometheus Operator CRDs the chart's monitoring objects need: fetch-crds.sh prometheus-operator).
# Both modules have no replace directives, so `go install <pkg>@<version>` builds them as published.
# Binaries land in $FERRY_CACHE/tools/<name>-<version>/<name> (version-stamped); the script prints
# the directory holding every tool, so callers can put it on PATH.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}" # Prometheus tags its Go module v0.3XY.Z for release 3.XY.Z
PROMETHEUS_RELEASE="${PROMETHEUS_RELEASE:-3.16.0}"
CACHE="${FERRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}"
TOOLS="$CACHE/tools"
BIN="$TOOLS/bin"
mkdir -p "$BIN"

say() { printf '==> %s\n' "$*" >&2; }

# build NAME PACKAGE VERSION LDFLAGS: go install PACKAGE@VERSION into $TOOLS/NAME-VERSION, link into $BIN.
build() {
  local name=$1 pkg=$2 version=$3 ldflags=$4
  local dir="$TOOLS/$name-$version-$(printf '%s' "$ldflags" | sha256sum | cut -c1-8)"  # flags change → rebuild
  if [[ ! -x "$dir/$name" ]]; then
    command -v go >/dev/null || { echo "error: Go is required to build $name $version (not found on PATH)" >&2; exit 1; }
    say "building $name $version from the Go module proxy ($pkg) — first run only, takes a few minutes"
    local start
    start=$(date +%s)
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    (cd "$dir.tmp" && GOBIN="$dir.tmp" CGO_ENABLED=0 GOFLAGS=-mod=mod \
      go install -trimpath -ldflags "-s -w $ldflags" "$pkg@$version")
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    say "built $name in $(( $(date +%s) - start ))s"
  fi
  ln -sfn "$dir/$name" "$BIN/$name"
}

# The Kubernetes version `helm template`/`lint` assume without a cluster: the client-go minor helm
# builds with (its Makefile sets the same variables).
HELM_K8S_MINOR="${HELM_K8S_MINOR:-37}"
build helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" \
  "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
   -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$HELM_K8S_MINOR \
   -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$HELM_K8S_MINOR"
build promtool github.com/prometheus/prometheus/cmd/promtool "$PROMETHEUS_VERSION" \
  "-X github.com/prometheus/common/version.Version=$PROMETHEUS_RELEASE"
echo "$BIN"
