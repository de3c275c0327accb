#!/usr/bin/env bash
# Fetch a set of third-party CRDs from the published Go modules that ship them, once.
#
# Every set is module@version plus paths inside the module, pinned here. The Go module proxy serves
# the modules (checksummed by sum.golang.org): `go mod download` puts each module tree in the Go
# module cache and the named manifests are copied from there into $FERRY_CACHE/crds/<set>-<versions>/
# (never into the repository). Sets:
#   lws                  the LeaderWorkerSet CRD (sigs.k8s.io/lws): the local stack serves LWS
#   gateway              Gateway API (standard channel) and Gateway API Inference Extension: gateway mode
#   prometheus-operator  ServiceMonitor, PodMonitor, PrometheusRule: the chart's monitoring objects
#
# fetch-crds.sh SET              fetch SET if not cached; print its directory on stdout
# fetch-crds.sh --cached SET...  exit 0 when every SET is cached (nothing to fetch, no Go needed)
set -euo pipefail

LWS_VERSION="${LWS_VERSION:-v0.7.0}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.4.1}"
INFERENCE_EXTENSION_VERSION="${INFERENCE_EXTENSION_VERSION:-v1.6.0}"
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
CACHE="${FERRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

sources() {  # SET -> one line per module: "module@version path-glob..."
  case $1 in
    lws)
      echo "sigs.k8s.io/lws@$LWS_VERSION config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml" ;;
    gateway)
      echo "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION config/crd/standard/gateway.networking.k8s.io_*.yaml"
      echo "sigs.k8s.io/gateway-api-inference-extension@$INFERENCE_EXTENSION_VERSION config/crd/bases/*.yaml" ;;
    prometheus-operator)
      local crd=example/prometheus-operator-crd/monitoring.coreos.com
      echo "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
        "${crd}_servicemonitors.yaml ${crd}_podmonitors.yaml ${crd}_prometheusrules.yaml" ;;
    *) die "unknown CRD set '$1' (lws, gateway, prometheus-operator)" ;;
  esac
}

out_dir() {  # SET -> $CACHE/crds/SET-<version of each module>
  local versions
  versions=$(sources "$1" | sed 's/^[^@]*@\([^ ]*\).*/\1/' | paste -sd- -)
  echo "$CACHE/crds/$1-$versions"
}

if [[ "${1:-}" == --cached ]]; then
  shift
  for set in "$@"; do sources "$set" >/dev/null; [[ -f "$(out_dir "$set")/.stamp" ]] || exit 1; done
  exit 0
fi
[[ $# -eq 1 ]] || die "usage: $0 SET | --cached SET..."
set=$1
sources "$set" >/dev/null  # a known set
out=$(out_dir "$set")
if [[ -f "$out/.stamp" ]]; then
  echo "$out"
  exit 0
fi
command -v go >/dev/null || die "Go is required to fetch the $set CRDs from the Go module proxy (not found on PATH)"

mkdir -p "$CACHE/crds"
work=$(mktemp -d "$out.XXXXXX")
trap 'rm -rf "$work"' EXIT
while read -r module rest; do
  read -ra paths <<<"$rest"
  say "fetching $module from the Go module proxy ($set CRDs)"
  dir=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "$module" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [[ -d "$dir" ]] || die "could not download $module from the Go module proxy"
  for path in "${paths[@]}"; do
    files=("$dir"/$path)
    [[ -f "${files[0]}" ]] || die "$module has no $path"
    install -m 0644 "${files[@]}" "$work/"
  done
done < <(sources "$set")
sources "$set" > "$work/.stamp"
# several runs may race (one machine, many worktrees): the first complete directory wins
mv -T "$work" "$out" 2>/dev/null || [[ -f "$out/.stamp" ]] || die "could not move the $set CRDs into $out"
say "fetched $(find "$out" -name "*.yaml" | wc -l) $set CRD files"
echo "$out"
