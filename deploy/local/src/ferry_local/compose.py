"""The one-shot steps of ``docker-compose.yml``: ``ferry-local pki`` and ``ferry-local bootstrap``.

``pki`` runs before the API server starts: the same CA, certificates and SA keys as the local stack
(plus the compose service name as a serving-cert SAN), a kubeconfig for the containers
(``kubeconfig-in-cluster``, server ``https://apiserver:6443``) and one for the host (``kubeconfig``,
certificates embedded, server on the published port). ``bootstrap`` runs after it: it waits until the
API server is ready and NATS accepts connections, then installs the CRDs; every Ferry service starts
only once it has exited 0.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from ferry_local.pki import ensure_pki, write_kubeconfig
from ferry_local.readiness import StackError, say
from ferry_local.stack import StackInfo, install_crds


def write_pki(state: Path, server: str, host_server: str, sans: tuple[str, ...]) -> None:
    pki = ensure_pki(state / "pki", extra_sans=sans)
    write_kubeconfig(state / "kubeconfig-in-cluster", server, pki)
    write_kubeconfig(state / "kubeconfig", host_server, pki, embed=True)
    for key in (pki.ca_key, pki.admin_key, pki.server_key, pki.sa_key):
        key.chmod(0o640)
    say(f"PKI and kubeconfigs ready in {state}")


def _wait(what: str, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise StackError(f"{what} not ready after {timeout:.0f}s")
        time.sleep(0.5)
    say(f"{what} ready")


def _apiserver_ready(kubeconfig: Path) -> bool:
    """A probe that hangs (an API server still starting on a loaded machine) is "not yet", not a crash."""
    try:
        done = subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig), "get", "--raw", "/readyz"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _tcp_open(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def bootstrap(kubeconfig: Path, crds: Path, nats: str, timeout: float = 180) -> None:
    _wait("kube-apiserver", lambda: _apiserver_ready(kubeconfig), timeout)
    _wait(f"NATS at {nats}", lambda: _tcp_open(nats), timeout)
    info = StackInfo(
        state_dir=str(kubeconfig.parent), kubeconfig=str(kubeconfig), kubectl="kubectl",
        server="", nats_url=f"nats://{nats}", nats_monitor="", etcd_url="",
    )  # fmt: skip
    install_crds(info, crds)
