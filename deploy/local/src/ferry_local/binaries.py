"""Finds the binaries the local stack runs, building the Kubernetes ones once (cached outside the repo)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ferry_local.paths import cache_dir, repo_root

K8S_VERSION = os.environ.get("K8S_VERSION", "v1.35.4")
ETCD_VERSION = os.environ.get("ETCD_VERSION", "v3.6.16")
"""The etcd release line Kubernetes 1.35 is tested with (Debian's 3.4 is too old for the watch
cache to serve LISTs: every LIST would read etcd)."""


class MissingBinary(RuntimeError):
    """A required program is not installed; the message says how to get it."""


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path
    etcd: Path
    nats_server: Path


def _built(script: str, what: str, *args: str) -> Path:
    """Run a build script of ``deploy/local`` (it builds once, then only answers) for its bin dir."""
    versions = {"K8S_VERSION": K8S_VERSION, "ETCD_VERSION": ETCD_VERSION}
    env = dict(os.environ, **versions, FERRY_CACHE=str(cache_dir()))
    # The script prints progress on stderr (passed through) and the bin dir on stdout.
    done = subprocess.run(
        ["bash", str(repo_root() / "deploy" / "local" / script), *args],
        env=env, stdout=subprocess.PIPE, stderr=sys.stderr, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise MissingBinary(f"building {what} failed (exit {done.returncode}); see the output above")
    return Path(done.stdout.strip().splitlines()[-1])


def kubernetes_bin_dir() -> Path:
    """Build (first run only) and return the directory with kube-apiserver, kcm and kubectl."""
    return _built("build-k8s.sh", f"Kubernetes {K8S_VERSION}")


def go_tools_bin_dir() -> Path:
    """Build (first run only) and return the directory with helm and promtool."""
    return _built("build-go-tools.sh", "helm and promtool")


CrdSet = Literal["lws", "gateway", "prometheus-operator"]
"""The third-party CRD sets ``fetch-crds.sh`` takes from their Go modules (pinned there): the
LeaderWorkerSet CRD, the Gateway API and Inference Extension CRDs, the Prometheus Operator's
ServiceMonitor, PodMonitor and PrometheusRule."""


def fetched_crds(crds: CrdSet) -> Path:
    """Fetch (first run only) and return the directory holding one set of third-party CRDs."""
    return _built("fetch-crds.sh", f"the {crds} CRDs (Go modules)", crds)


def etcd_bin_dir() -> Path:
    """Build (first run only) and return the directory with etcd from the Go module proxy."""
    return _built("build-etcd.sh", f"etcd {ETCD_VERSION}")


def _which(name: str, *extra_dirs: str, package: str) -> Path:
    found = shutil.which(name) or next(
        (str(Path(d) / name) for d in extra_dirs if (Path(d) / name).is_file()), None
    )
    if not found:
        raise MissingBinary(f"{name} not found; install the Debian package {package!r} (make deps does it)")
    return Path(found)


def find_binaries() -> Binaries:
    k8s = kubernetes_bin_dir()
    return Binaries(
        kube_apiserver=k8s / "kube-apiserver",
        kube_controller_manager=k8s / "kube-controller-manager",
        kubectl=k8s / "kubectl",
        etcd=etcd_bin_dir() / "etcd",
        nats_server=_which("nats-server", "/usr/sbin", "/usr/bin", package="nats-server"),
    )
