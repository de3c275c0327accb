#!/usr/bin/env bash
# Fetch the Gateway API (standard channel) and Gateway API Inference Extension CRDs, once.
#
# Both are published Go modules, so the Go module proxy serves them (checksummed by sum.golang.org):
# `go mod download` puts the module trees in the Go module cache and the CRD manifests are copied
# from there into $FERRY_CACHE/gateway-crds-<versions>/ with a stamp. Nothing is copied into the
# repository; the versions are pinned here. Prints the CRD directory on stdout.
set -euo pipefail

GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.4.1}"
INFERENCE_EXTENSION_VERSION="${INFERENCE_EXTENSION_VERSION:-v1.6.0}"
CACHE="${FERRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}"
OUT="$CACHE/gateway-crds-$GATEWAY_API_VERSION-gie-$INFERENCE_EXTENSION_VERSION"
STAMP="$OUT/.stamp"

say() { printf '==> %s\n' "$*" >&2; }

if [[ -f "$STAMP" ]]; then
  echo "$OUT"
  exit 0
fi
command -v go >/dev/null || { echo "error: Go is required to fetch the Gateway API CRDs from the Go module proxy (not found on PATH)" >&2; exit 1; }

module_dir() {  # module@version -> its directory in the Go module cache (downloaded if missing)
  local dir
  dir=$(cd "$(mktemp -d)" && GOFLAGS=-mod=mod go mod download -json "$1" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [[ -d "$dir" ]] || { echo "error: could not download $1 from the Go module proxy" >&2; exit 1; }
  echo "$dir"
}

rm -rf "$OUT" && mkdir -p "$OUT"
say "fetching sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION (standard channel CRDs)"
gw=$(module_dir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")
cp "$gw"/config/crd/standard/gateway.networking.k8s.io_*.yaml "$OUT/"
say "fetching sigs.k8s.io/gateway-api-inference-extension@$INFERENCE_EXTENSION_VERSION (config/crd)"
gie=$(module_dir "sigs.k8s.io/gateway-api-inference-extension@$INFERENCE_EXTENSION_VERSION")
cp "$gie"/config/crd/bases/*.yaml "$OUT/"
chmod u+w "$OUT"/*.yaml
echo "$GATEWAY_API_VERSION $INFERENCE_EXTENSION_VERSION" > "$STAMP"
say "Gateway API CRDs ready in $OUT ($(ls "$OUT"/*.yaml | wc -l) files)"
echo "$OUT"
