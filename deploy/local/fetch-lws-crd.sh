#!/usr/bin/env bash
# Fetch the LeaderWorkerSet CRD from the published Go module sigs.k8s.io/lws (its config/crd), once.
#
# Kthena serves LeaderWorkerSets as ModelServings when the API server has the kind; the local stack
# installs this CRD so Ferry's LWS support runs in tests and the demo. The module comes through the
# Go module proxy like the Kubernetes build (pinned, checksum-verified by go), and the CRD is kept in
# $FERRY_CACHE/lws-<version>/crds (never copied into the repo). Prints that directory.
set -euo pipefail

LWS_VERSION="${LWS_VERSION:-v0.7.0}"
CACHE="${FERRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}"
OUT="$CACHE/lws-$LWS_VERSION/crds"
FILE="leaderworkerset.x-k8s.io_leaderworkersets.yaml"

say() { printf '==> %s\n' "$*" >&2; }

if [[ -s "$OUT/$FILE" ]]; then
  echo "$OUT"
  exit 0
fi
command -v go >/dev/null || { echo "error: Go is required to fetch sigs.k8s.io/lws@$LWS_VERSION (not found on PATH)" >&2; exit 1; }

say "fetching the LeaderWorkerSet CRD: sigs.k8s.io/lws@$LWS_VERSION from the Go module proxy"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dir=$(cd "$work" && go mod download -json "sigs.k8s.io/lws@$LWS_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[[ -s "$dir/config/crd/bases/$FILE" ]] || { echo "error: sigs.k8s.io/lws@$LWS_VERSION has no config/crd/bases/$FILE" >&2; exit 1; }
mkdir -p "$OUT"
install -m 0644 "$dir/config/crd/bases/$FILE" "$OUT/$FILE.tmp"
mv "$OUT/$FILE.tmp" "$OUT/$FILE"
say "LeaderWorkerSet CRD ready in $OUT"
echo "$OUT"
