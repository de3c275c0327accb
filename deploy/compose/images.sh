#!/usr/bin/env bash
# Build every image docker-compose.yml needs, locally, with no registry (podman; see engine.sh):
#   localhost/ferry-base:bookworm   debootstrap --variant=minbase bookworm + python3, venv, openssl
#                                   (the packages of debian:bookworm-slim plus Python; ~30 s on a quiet machine)
#   localhost/ferry-kube:<v>        kube-apiserver, kube-controller-manager, kubectl (build-k8s.sh)
#   localhost/ferry-etcd, -nats     the local stack's etcd and nats-server
#   localhost/ferry-otelcol, -jaeger built from the Go module proxy (build-go-tools.sh --compose)
#   localhost/ferry:dev             the Dockerfile, Python packages from a wheelhouse (wheelhouse.sh)
# Binaries sit where the registry images keep them, so the compose file runs either. Every image but
# ferry:dev is built once per version; ferry:dev is rebuilt from the layer cache. Writes the compose
# env file naming the images to $FERRY_COMPOSE_STATE/images.env (default .state/compose) and prints it.
set -euo pipefail
cd "$(dirname "$0")/../.."
say() { printf '==> %s\n' "$*" >&2; }
export PATH="$HOME/.local/bin:$PATH"
CACHE="${FERRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}"
STATE="${FERRY_COMPOSE_STATE:-$PWD/.state/compose}"
CTX="$CACHE/containers/contexts"
BASE=localhost/ferry-base:bookworm
mkdir -p "$STATE" "$CTX"
exports=$(bash deploy/compose/engine.sh) && eval "$exports"
exists() { podman image exists "$1"; }

# --- the base image ----------------------------------------------------------------------------
if ! exists "$BASE"; then
  say "building $BASE with debootstrap (minbase bookworm + python3, python3-venv, openssl) — first run only"
  root="$CACHE/containers/rootfs.tmp"
  rm -rf "$root"
  debootstrap --variant=minbase --include=python3,python3-venv,openssl,ca-certificates \
    bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$CACHE/containers/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/containers/debootstrap.log" >&2; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  rm -rf "$root"
fi

# --- images holding binaries -------------------------------------------------------------------
# binary_image TAG LINE... -- SRC:DEST...: FROM the base, the binaries copied to DEST, then the
# Containerfile LINEs (ENV, ENTRYPOINT) that make it behave like the registry image it stands for.
binary_image() {
  local tag=$1; shift
  local lines=()
  while [[ $1 != -- ]]; do lines+=("$1"); shift; done; shift
  exists "$tag" && return 0
  say "building $tag"
  local dir="$CTX/${tag//[:\/]/_}"
  rm -rf "$dir" && mkdir -p "$dir/root"
  local pair
  for pair in "$@"; do
    mkdir -p "$dir/root$(dirname "${pair#*:}")"
    cp -L "${pair%%:*}" "$dir/root${pair#*:}"
  done
  { echo "FROM $BASE"; echo "COPY root/ /"; for line in "${lines[@]}"; do echo "$line"; done; } > "$dir/Containerfile"
  podman build --quiet -f "$dir/Containerfile" -t "$tag" "$dir" >/dev/null
  rm -rf "$dir"
}

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
kube=$(bash deploy/local/build-k8s.sh)
binary_image "localhost/ferry-kube:$K8S_VERSION" -- \
  "$kube/kube-apiserver:/usr/local/bin/kube-apiserver" \
  "$kube/kube-controller-manager:/usr/local/bin/kube-controller-manager" "$kube/kubectl:/bin/kubectl"

read -r etcd nats < <(uv run --quiet python -c \
  'from ferry_local.binaries import find_binaries as f; b = f(); print(b.etcd, b.nats_server)')
etcd_v=$("$etcd" --version | awk '/etcd Version/ {print $3}')
nats_v=$("$nats" --version | awk '{print $2}')
binary_image "localhost/ferry-etcd:$etcd_v" -- "$etcd:/usr/local/bin/etcd"
binary_image "localhost/ferry-nats:${nats_v#v}" 'ENTRYPOINT ["/usr/local/bin/nats-server"]' 'CMD []' -- "$nats:/usr/local/bin/nats-server"

tools=$(bash deploy/local/build-go-tools.sh --compose)
otel_v=$(basename "$(dirname "$(readlink -f "$tools/otelcol")")"); otel_v=${otel_v#otelcol-v}
jaeger_v=$(basename "$(dirname "$(readlink -f "$tools/jaeger")")"); jaeger_v=${jaeger_v#jaeger-v}
binary_image "localhost/ferry-otelcol:$otel_v" -- "$tools/otelcol:/otelcol"
binary_image "localhost/ferry-jaeger:$jaeger_v" "ENV JAEGER_LISTEN_HOST=0.0.0.0" -- "$tools/jaeger:/cmd/jaeger/jaeger-linux"

# --- Ferry's own image -------------------------------------------------------------------------
bash deploy/compose/wheelhouse.sh .state/wheelhouse
say "building localhost/ferry:dev (Dockerfile, BASE_IMAGE=$BASE, packages from .state/wheelhouse)"
start=$(date +%s)
podman build --quiet --build-arg "BASE_IMAGE=$BASE" --build-arg "KUBECTL_IMAGE=localhost/ferry-kube:$K8S_VERSION" \
  -t localhost/ferry:dev . >/dev/null
say "localhost/ferry:dev ready in $(( $(date +%s) - start ))s"
podman image prune --force --filter until=168h >/dev/null  # old layers (the recent ones are the build cache)

cat > "$STATE/images.env" <<ENV
FERRY_IMAGE=localhost/ferry:dev
FERRY_BASE_IMAGE=$BASE
FERRY_KUBECTL_IMAGE=localhost/ferry-kube:$K8S_VERSION
FERRY_KUBE_APISERVER_IMAGE=localhost/ferry-kube:$K8S_VERSION
FERRY_KUBE_CONTROLLER_MANAGER_IMAGE=localhost/ferry-kube:$K8S_VERSION
FERRY_ETCD_IMAGE=localhost/ferry-etcd:$etcd_v
FERRY_NATS_IMAGE=localhost/ferry-nats:${nats_v#v}
FERRY_OTELCOL_IMAGE=localhost/ferry-otelcol:$otel_v
FERRY_JAEGER_IMAGE=localhost/ferry-jaeger:$jaeger_v
ENV
echo "$STATE/images.env"
