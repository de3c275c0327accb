"""End-to-end fixtures: every Ferry service as its own process on the real local stack.

Each test module gets its own nats-server (restartable, so fault tests can kill it), its own
namespace, its own watcher/converter/applier/status processes, which only see that
namespace (``FERRY_WATCH_NAMESPACE``) and write their spans to one trace file, and one local
node (``kubelet``, shared by ``ferry``) that schedules and runs the pods.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ferry_local.binaries import find_binaries
from ferry_local.natsd import NatsServer
from ferry_local.paths import state_dir
from ferry_local.processes import ManagedProcess
from ferry_local.system import SystemInfo, start_node, start_system

from tests.conftest import KubeEnv, fresh_namespace
from tests.support.cluster import Cluster
from tests.support.services import ServiceSet

_RUNNING: dict[str, ServiceSet] = {}
"""Service sets by module, so a failing test's report carries the services' logs."""


@pytest.fixture(scope="module")
def e2e_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="e2e-", dir=state_dir()))
    yield path
    if not getattr(request.session, "testsfailed", 0):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def e2e_nats(e2e_dir: Path) -> Iterator[NatsServer]:
    server = NatsServer(find_binaries().nats_server, e2e_dir / "nats-store", e2e_dir / "logs")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def e2e_namespace(kube: KubeEnv) -> Iterator[str]:
    with fresh_namespace(kube, "e2e") as name:
        yield name


@pytest.fixture(scope="module")
def trace_file(e2e_dir: Path) -> Path:
    return e2e_dir / "spans.jsonl"


def pipeline_env(kube: KubeEnv, nats_url: str, namespace: str, trace_file: Path) -> dict[str, str]:
    return {
        **kube.env,
        "FERRY_NATS_URL": nats_url,
        "FERRY_WATCH_NAMESPACE": namespace,
        "FERRY_TRACE_FILE": str(trace_file),
        "FERRY_WATCH_BACKOFF_MAX": "2",
        "FERRY_ACK_WAIT": "10",
        "FERRY_LOG_LEVEL": "INFO",
    }


@pytest.fixture(scope="module")
def pipeline(
    request: pytest.FixtureRequest, kube: KubeEnv, e2e_nats: NatsServer, e2e_namespace: str,
    e2e_dir: Path, trace_file: Path,
) -> Iterator[ServiceSet]:  # fmt: skip
    services = ServiceSet(e2e_dir / "logs", pipeline_env(kube, e2e_nats.url, e2e_namespace, trace_file))
    _RUNNING[request.module.__name__] = services
    try:
        services.start()
        yield services
    finally:
        services.stop()
        _RUNNING.pop(request.module.__name__, None)


@pytest.fixture(scope="module")
def ferry(
    request: pytest.FixtureRequest, kube: KubeEnv, e2e_nats: NatsServer, e2e_namespace: str, e2e_dir: Path,
    kubelet: ManagedProcess,
) -> Iterator[SystemInfo]:  # fmt: skip
    """Every service, as ``make up`` runs them, watching the module's namespace (plus the module's
    ``FERRY_ENV`` settings, e.g. shorter autoscaling periods), on the module's one local node
    (``kubelet``: a module that asks for both gets one node, never two of the same name)."""
    env = {
        **kube.env,
        "FERRY_NATS_URL": e2e_nats.url,
        "FERRY_WATCH_NAMESPACE": e2e_namespace,
        **getattr(request.module, "FERRY_ENV", {}),
    }
    system = start_system(env, e2e_dir / "logs", e2e_dir / "spans.jsonl", with_node=False)
    try:
        yield system
    finally:
        for process in reversed(system.processes):
            process.stop()


@pytest.fixture(scope="module")
def cluster(kube: KubeEnv, e2e_namespace: str) -> Cluster:
    return Cluster(kube, e2e_namespace)


@pytest.fixture(scope="module")
def kubelet(kube: KubeEnv, e2e_dir: Path) -> Iterator[ManagedProcess]:
    """The gang-aware local node: binds a pod only when its PodGroup's minMember (and minTaskMember)
    can be met, runs the mock engine for each engine container, reports readiness from the engine's
    own proof, restarts per restartPolicy (back-off 1 s here), refuses images outside its catalogue.
    The module's only node: ``ferry`` runs on it, and a second node of the same name on the cluster
    (another fixture's :func:`start_node`) refuses to start while this one holds its Lease."""
    node = start_node(kube.env, e2e_dir / "logs", {"FERRY_NODE_RESTART_BACKOFF": "1"})
    try:
        yield node
    finally:
        node.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    services = _RUNNING.get(getattr(item.module, "__name__", ""))
    if services is not None and report.failed:
        report.sections.append(("ferry service logs", services.logs(30)))
    return report
