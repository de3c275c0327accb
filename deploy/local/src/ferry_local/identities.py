"""Each Ferry service under its own Kubernetes identity, on the local stack and in the tests.

The RBAC is the one ``deploy/`` installs: ``deploy/base/namespace.yaml`` and every
``deploy/base/rbac/<service>.yaml`` (one ServiceAccount ``ferry-<service>`` per file, with its
ClusterRole and binding) are applied as they are — one source of truth, not a copy. Each service
then gets a token from the TokenRequest API (``kubectl create token``) and a kubeconfig of its own
that carries only that token, so a permission missing from ``deploy/`` fails here as on a cluster.
Adding a service = adding its ``deploy/base/rbac/<service>.yaml`` (see ``deploy/README.md``).
The local node (scheduler and kubelet of the local stack only) has its own, ``ferry-local-node``,
from ``deploy/local/rbac/local-node.yaml``: it never runs as the cluster admin either.
:func:`with_identity` also gives the service its own NATS user (:mod:`ferry_local.natsd`).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import yaml

from ferry_local.binaries import kubernetes_bin_dir
from ferry_local.natsd import service_url
from ferry_local.paths import repo_root, state_dir

NAMESPACE = "ferry-system"
TOKEN_DURATION = "48h"
NODE_IDENTITY = "local-node"
NATS_URL_KEYS = ("FERRY_NATS_URL", "NATS_URL")
"""The local node's identity: ServiceAccount ``ferry-local-node``."""


def rbac_dir() -> Path:
    return repo_root() / "deploy" / "base" / "rbac"


def services() -> list[str]:
    """The services that have an identity: one ``deploy/base/rbac/<service>.yaml`` each."""
    return sorted(path.stem for path in rbac_dir().glob("*.yaml"))


def node_rbac_file() -> Path:
    return repo_root() / "deploy" / "local" / "rbac" / f"{NODE_IDENTITY}.yaml"


def identities() -> list[str]:
    """Every identity the local stack issues: each service's and the local node's."""
    return [*services(), NODE_IDENTITY]


def service_account(service: str) -> str:
    return f"ferry-{service}"


def _kubectl(kubectl: Path, kubeconfig: Path, *args: str, input: str | None = None) -> str:
    done = subprocess.run(
        [str(kubectl), "--kubeconfig", str(kubeconfig), *args],
        input=input, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def rbac_file(identity: str) -> Path:
    return node_rbac_file() if identity == NODE_IDENTITY else rbac_dir() / f"{identity}.yaml"


def apply_rbac(kubectl: Path, admin_kubeconfig: Path, names: list[str]) -> None:
    """Create the namespace and apply the ServiceAccount, roles and bindings of each identity named."""
    files = [repo_root() / "deploy" / "base" / "namespace.yaml", *(rbac_file(name) for name in names)]
    args = ["apply", "--server-side", "--force-conflicts", "--field-manager", "ferry-local"]
    for path in files:
        args += ["-f", str(path)]
    _kubectl(kubectl, admin_kubeconfig, *args)


def service_kubeconfig(cluster: dict[str, str], service: str, token: str) -> str:
    """A kubeconfig for ``cluster`` (server and CA) that authenticates with ``token`` only."""
    user = service_account(service)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "ferry", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "ferry", "user": user}}],
        "current-context": user,
    }
    return yaml.safe_dump(config)


def ensure_identities(
    kubectl: Path, admin_kubeconfig: Path, out_dir: Path, names: list[str]
) -> dict[str, Path]:
    """Apply the RBAC and write ``<out_dir>/<identity>.kubeconfig`` for each identity named."""
    apply_rbac(kubectl, admin_kubeconfig, names)
    out_dir.mkdir(parents=True, exist_ok=True)
    view = json.loads(_kubectl(kubectl, admin_kubeconfig, "config", "view", "--minify", "--raw", "-ojson"))
    cluster = view["clusters"][0]["cluster"]
    found: dict[str, Path] = {}
    for service in names:
        token = _kubectl(
            kubectl, admin_kubeconfig, "create", "token", service_account(service),
            "-n", NAMESPACE, "--duration", TOKEN_DURATION,
        ).strip()  # fmt: skip
        path = out_dir / f"{service}.kubeconfig"
        path.write_text(service_kubeconfig(cluster, service, token))
        path.chmod(0o600)
        found[service] = path
    return found


_ISSUED: dict[str, dict[str, Path]] = {}


def identities_for(admin_kubeconfig: str | Path, names: list[str] | None = None) -> dict[str, Path]:
    """The kubeconfigs of ``names`` (default: every identity) for the cluster of ``admin_kubeconfig``,
    each issued once per process (under ``.state/identities/<hash of the admin kubeconfig path>/``).
    Only the RBAC of the identities asked for is applied: a node alone adds no service's roles."""
    key = str(Path(admin_kubeconfig).resolve())
    wanted = identities() if names is None else names
    issued = _ISSUED.setdefault(key, {})
    if missing := [name for name in wanted if name not in issued]:
        out = state_dir() / "identities" / hashlib.sha256(key.encode()).hexdigest()[:12]
        issued.update(ensure_identities(kubernetes_bin_dir() / "kubectl", Path(key), out, missing))
    return {name: issued[name] for name in wanted}


def with_identity(service: str, env: dict[str, str]) -> dict[str, str]:
    """``env`` with ``service``'s own identities: ``KUBECONFIG`` switched from the admin's to the
    service's token, and the NATS URL to the service's NATS user (when the service has them)."""
    out = dict(env)
    admin = env.get("KUBECONFIG")
    if admin and service in identities():
        # the services' identities are issued together (a stack starts them all), the node's alone
        group = services() if service in services() else [service]
        out["KUBECONFIG"] = str(identities_for(admin, group)[service])
    for key in NATS_URL_KEYS:
        if env.get(key):
            out[key] = service_url(service, env[key])
    return out
