"""Session fixtures: a real Kubernetes API server (``kube``), a real NATS JetStream (``nats_url``).

``kube``: ``KUBECONFIG`` if set, else a testcontainers K3s cluster when a Docker engine answers
(``FERRY_TESTCONTAINERS_K3S=0`` turns that off where no k3s image can be had, as here), else the
local stack (etcd + kube-apiserver + kube-controller-manager, built once from the Go module proxy).
``nats_url``: ``NATS_URL`` if set, else testcontainers NATS (image ``FERRY_NATS_IMAGE``, default
``nats:2.11``) when an engine answers, else a local nats-server. The local fallbacks are never
skipped: without them CI fails loudly. ``tests/containers`` runs part of the suite on the
testcontainers path against the project's own podman engine, so both paths run in CI.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from ferry_local.binaries import find_binaries, kubernetes_bin_dir
from ferry_local.natsd import NatsServer
from ferry_local.paths import repo_root, state_dir
from ferry_local.stack import LocalStack, StackInfo, install_crds
from nats.aio.client import Client as NatsClient


def pytest_sessionstart(session: pytest.Session) -> None:
    """Turn SIGTERM (a CI time limit, ``timeout``) into KeyboardInterrupt so the fixtures' teardown
    still stops every process they started instead of leaking a stack."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


_STACK_MARKERS = ("integration", "e2e", "containers")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the longest files first: with ``make test``'s workers (``--dist loadfile``, collection
    order kept) a long file started last would leave one core idle while it finishes. Files with a
    ``slow`` test go first, then those on a stack, then the quick unit tests that fill the gaps."""

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("slow"):
            return 0
        return 1 if any(item.get_closest_marker(m) for m in _STACK_MARKERS) else 2

    def file_of(item: pytest.Item) -> str:
        return item.nodeid.split("::")[0]

    file_rank: dict[str, int] = {}
    for item in items:
        file_rank[file_of(item)] = min(file_rank.get(file_of(item), 2), rank(item))
    items.sort(key=lambda item: file_rank[file_of(item)])  # stable: order within a rank is kept


def docker_engine_available() -> bool:
    """True when a Docker(-compatible) engine answers (testcontainers needs one; a CLI alone is not
    enough). Podman's first answer can take seconds on a busy machine, hence the long timeout; with no
    engine at all the connection is refused at once."""
    if os.environ.get("FERRY_NO_TESTCONTAINERS"):
        return False
    from tests.support.containers import docker_answers

    return docker_answers(timeout=20)


@dataclass
class KubeEnv:
    """A reachable Kubernetes API server and the kubectl that matches it."""

    kubeconfig: Path
    kubectl: Path
    server: str
    env: dict[str, str] = field(default_factory=dict)

    def kubectl_run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl; with ``check`` a failure raises with kubectl's stderr in the message."""
        done = subprocess.run(
            [str(self.kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            input=input, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}"
            )
        return done


def _test_state_dir(name: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=state_dir()))
    return path


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeEnv]:
    """The session's cluster: ``KUBECONFIG`` if set, else K3s from testcontainers when an engine
    answers, else a local stack; Ferry's CRDs installed."""
    if env_config := os.environ.get("KUBECONFIG"):
        env = _kube_env(Path(env_config))
        install_crds(_stack_info(env))
        yield env
    elif docker_engine_available() and os.environ.get("FERRY_TESTCONTAINERS_K3S", "1") != "0":
        from testcontainers.k3s import K3SContainer

        container = K3SContainer()
        container.start()
        try:
            kubeconfig = _test_state_dir("k3s") / "kubeconfig"
            kubeconfig.write_text(container.config_yaml())
            env = _kube_env(kubeconfig)
            install_crds(_stack_info(env))
            yield env
        finally:
            container.stop()
    else:
        with local_cluster("test-stack") as env:
            yield env


@contextmanager
def local_cluster(name: str, *, crds: bool = True) -> Iterator[KubeEnv]:
    """A local stack of its own (etcd, kube-apiserver, kube-controller-manager; no NATS), for tests
    that must not share cluster-scoped objects with the session's cluster; stopped afterwards."""
    stack = LocalStack(_test_state_dir(name), with_nats=False)
    try:  # a failed start or CRD install must not leak the stack
        stack.start()
        assert stack.info is not None
        env = _kube_env(Path(stack.info.kubeconfig))
        if crds:
            install_crds(_stack_info(env))
        yield env
    finally:
        stack.stop()
        shutil.rmtree(stack.state_dir, ignore_errors=True)


def _kube_env(kubeconfig: Path) -> KubeEnv:
    kubectl_bin = kubernetes_bin_dir() / "kubectl"
    server = subprocess.run(
        [str(kubectl_bin), "--kubeconfig", str(kubeconfig), "config", "view", "--minify",
         "-o", "jsonpath={.clusters[0].cluster.server}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    env = {"KUBECONFIG": str(kubeconfig)}
    return KubeEnv(kubeconfig=kubeconfig, kubectl=kubectl_bin, server=server, env=env)


def _stack_info(env: KubeEnv) -> StackInfo:
    return StackInfo(
        state_dir="", kubeconfig=str(env.kubeconfig), kubectl=str(env.kubectl), server=env.server,
        nats_url="", nats_monitor="", etcd_url="",
    )  # fmt: skip


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer | None]:
    """The local nats-server the suite started (None when ``NATS_URL`` or testcontainers provide one)."""
    if os.environ.get("NATS_URL") or docker_engine_available():
        yield None
        return
    with local_nats_server("test-nats") as server:
        yield server


@pytest.fixture
def own_nats(request: pytest.FixtureRequest) -> Iterator[NatsServer]:
    """A nats-server (JetStream) of this test alone, for tests that stop, kill or restart it (on the
    same port and store)."""
    with local_nats_server(request.module.__name__.rsplit(".", 1)[-1].replace("_", "-")) as server:
        yield server


@contextmanager
def local_nats_server(name: str) -> Iterator[NatsServer]:
    """A nats-server (JetStream) with its store in a fresh state directory, removed afterwards."""
    directory = _test_state_dir(name)
    server = NatsServer(find_binaries().nats_server, directory / "store", directory / "logs")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer | None) -> Iterator[str]:
    if nats_server is not None:
        yield nats_server.url
    elif url := os.environ.get("NATS_URL"):
        yield url
    else:
        from testcontainers.community.nats import NatsContainer

        with NatsContainer(os.environ.get("FERRY_NATS_IMAGE", "nats:2.11"), jetstream=True) as container:
            yield container.nats_uri()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    """A NATS connection for one test."""
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()


@contextmanager
def fresh_namespace(kube: KubeEnv, prefix: str = "t") -> Iterator[str]:
    """Create a uniquely named namespace; delete it afterwards without waiting for finalisation."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    kube.kubectl_run("create", "namespace", name)
    try:
        yield name
    finally:
        kube.kubectl_run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def namespace(kube: KubeEnv) -> Iterator[str]:
    """A fresh namespace for one test."""
    with fresh_namespace(kube) as name:
        yield name


@pytest.fixture(scope="session")
def repo() -> Path:
    return repo_root()
