#!/usr/bin/env bash
# Build etcd from the Go module proxy, once: the 3.6 line Kubernetes 1.35 is tested with.
#
# Debian's etcd-server is 3.4, older than any etcd Kubernetes 1.35 supports; kube-apiserver then
# cannot serve LISTs from its watch cache ("RequestWatchProgress feature is not supported") and
# every LIST reads etcd. go.etcd.io/etcd/server/v3 replaces its sibling modules with ../paths, so
# `go install …@version` refuses it; a throw-away wrapper module requires it at the pinned tag
# (the siblings then resolve to their published twins of the same tag) and builds its main package.
# The binary lands in $FERRY_CACHE/etcd-<version>/bin with a stamp.
set -euo pipefail

ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE="${FERRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}"
OUT="$CACHE/etcd-$ETCD_VERSION"
BIN="$OUT/bin"
STAMP="$OUT/.stamp"

say() { printf '==> %s\n' "$*" >&2; }

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$ETCD_VERSION etcd" ]]; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { echo "error: Go >= 1.25 is required to build etcd $ETCD_VERSION (not found on PATH)" >&2; exit 1; }

work="$OUT/src"
rm -rf "$work" && mkdir -p "$work" "$BIN"
say "building etcd $ETCD_VERSION into $BIN from the Go module proxy — first run only, takes a few minutes"
cat > "$work/go.mod" <<MOD
module ferry.local/etcdbin

go 1.25.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
cat > "$work/tools.go" <<'SRC'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
SRC
say "resolving modules (go mod tidy)"
(cd "$work" && GOFLAGS=-mod=mod go mod tidy 2>&1 | sed 's/^/    /' >&2)
say "go build etcd"
start=$(date +%s)
(cd "$work" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
say "built etcd in $(( $(date +%s) - start ))s"
"$BIN/etcd" --version | sed -n '1s/^/    /p' >&2  # sed reads it all: `head` would end the pipe early (SIGPIPE, 141 under pipefail)
echo "$ETCD_VERSION etcd" > "$STAMP"
echo "$BIN"
