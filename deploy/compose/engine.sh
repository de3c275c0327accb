#!/usr/bin/env bash
# A container engine where Docker is absent (Debian bookworm, root, no registry): Debian's podman with
# runc, configured under the cache directory, never in the machine's global config. Prints the shell
# exports that select that configuration:   eval "$(bash deploy/compose/engine.sh)"
#
#   containers.conf  runtime = runc (crun fails here on the hybrid cgroup layout and on setrlimit),
#                    explicit default_ulimits within the VM's hard limits, cgroupfs and file events (no systemd)
#   storage.conf     images and containers under $FERRY_CACHE/containers (kept between runs)
# A laptop with Docker needs none of this.
set -euo pipefail
say() { printf '==> %s\n' "$*" >&2; }
CACHE="${FERRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}"
CONF="$CACHE/containers"
mkdir -p "$CONF"

need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
if ((${#need[@]})); then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  say "installing Debian packages for the container engine: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Below the VM's hard limits with room to spare (equal to them, runc's setrlimit is refused here). Never
# pass --ulimit or compose `ulimits:` as well: podman then adds its own nproc default, which runc refuses.
nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[[ "$nofile" == unlimited || "$nofile" -gt 32768 ]] && nofile=32768
[[ "$nproc" == unlimited || "$nproc" -gt 65536 ]] && nproc=65536
nofile=$((nofile * 4 / 5)); nproc=$((nproc / 2))
cat > "$CONF/containers.conf.new" <<CONF
# Written by deploy/compose/engine.sh (selected with CONTAINERS_CONF; the global config is untouched).
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
mv "$CONF/containers.conf.new" "$CONF/containers.conf"
cat > "$CONF/storage.conf.new" <<CONF
# Written by deploy/compose/engine.sh (selected with CONTAINERS_STORAGE_CONF).
[storage]
driver = "overlay"
graphroot = "$CONF/storage"
runroot = "$CONF/run"
CONF
mv "$CONF/storage.conf.new" "$CONF/storage.conf"
say "podman $(podman --version | awk '{print $3}') with runc, configured in $CONF"
echo "export CONTAINERS_CONF=$CONF/containers.conf"
echo "export CONTAINERS_STORAGE_CONF=$CONF/storage.conf"
