#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager and kubectl from the Go module proxy, once.
#
# k8s.io/kubernetes replaces every staging module with ./staging/..., so `go install` cannot
# build it; instead a throw-away wrapper module requires k8s.io/kubernetes at the pinned tag and
# replaces each staging module with its published v0.X.Y twin (the list is read from that tag's
# own go.mod, so it never drifts). Binaries land in $FERRY_CACHE/k8s-<version>/bin with a stamp.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
CACHE="${FERRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}"
OUT="$CACHE/k8s-$K8S_VERSION"
BIN="$OUT/bin"
STAMP="$OUT/.stamp"
CMDS=(kube-apiserver kube-controller-manager kubectl)

say() { printf '==> %s\n' "$*" >&2; }

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$K8S_VERSION ${CMDS[*]}" ]]; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { echo "error: Go >= 1.25 is required to build Kubernetes $K8S_VERSION (not found on PATH)" >&2; exit 1; }

staging_version="v0.${K8S_VERSION#v1.}"
work="$OUT/src"
rm -rf "$work" && mkdir -p "$work" "$BIN"
say "building Kubernetes $K8S_VERSION (${CMDS[*]}) into $BIN — first run only, takes several minutes"
say "downloading k8s.io/kubernetes@$K8S_VERSION metadata"
gomod=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[[ -f "$gomod" ]] || { echo "error: could not download k8s.io/kubernetes@$K8S_VERSION from the Go module proxy" >&2; exit 1; }

{
  echo "module ferry.local/k8sbins"
  echo
  echo "go 1.25.0"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  echo "replace ("
  grep -E '^\s+k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk -v v="$staging_version" '{print "\t" $1 " => " $1 " " v}'
  echo ")"
} > "$work/go.mod"
{
  echo "//go:build tools"
  echo "package tools"
  echo
  echo "import ("
  for c in "${CMDS[*]}"; do :; done
  for c in "${CMDS[@]}"; do
    if [[ "$c" == kubectl ]]; then echo "	_ \"k8s.io/kubernetes/cmd/kubectl\""; else echo "	_ \"k8s.io/kubernetes/cmd/$c\""; fi
  done
  echo ")"
} > "$work/tools.go"

say "resolving modules (go mod tidy)"
(cd "$work" && go mod tidy 2>&1 | sed 's/^/    /' >&2)
for c in "${CMDS[@]}"; do
  say "go build $c"
  start=$(date +%s)
  (cd "$work" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" -o "$BIN/$c" "k8s.io/kubernetes/cmd/$c")
  say "built $c in $(( $(date +%s) - start ))s"
done
echo "$K8S_VERSION ${CMDS[*]}" > "$STAMP"
echo "$BIN"
