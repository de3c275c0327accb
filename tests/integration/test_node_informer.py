"""The local node's informer against a real API server: one LIST, then resumed watches.

A watch the server ends (``timeoutSeconds``) is resumed from the last resourceVersion seen, as
client-go's reflector does; only 410 Gone or an error relists. A node that relisted every minute made
the e2e "no LIST in a steady-state reconcile" check fail whenever a minute ended inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest
from ferry_local.node.informer import informer
from kubernetes_asyncio import client, config

from tests.conftest import KubeEnv

pytestmark = [pytest.mark.integration]


async def until(check: Callable[[], bool], what: str, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_watch_the_server_ends_is_resumed_without_a_list(kube: KubeEnv, namespace: str) -> None:
    requests: list[bool] = []  # one per request to the API server: True for a watch, False for a LIST
    cache: dict[tuple[str, str], dict[str, Any]] = {}
    changed, stop = asyncio.Event(), asyncio.Event()
    api = await config.new_client_from_config(config_file=str(kube.kubeconfig))
    core = client.CoreV1Api(api)

    async def list_config_maps(**kwargs: Any) -> Any:
        requests.append(bool(kwargs.get("watch")))
        return await core.list_namespaced_config_map(namespace, **kwargs)

    watching = informer(list_config_maps, cache, changed, stop, what="configmaps", watch_seconds=1)
    task = asyncio.create_task(watching)
    try:
        # Three watches mean the server ended two (each after a second) and both were resumed.
        await until(lambda: requests.count(True) >= 3, "three watches")
        kube.kubectl_run("create", "configmap", "late", "-n", namespace, "--from-literal=k=v")
        await until(lambda: (namespace, "late") in cache, "the config map made after the renewals")
        kube.kubectl_run("delete", "configmap", "late", "-n", namespace)
        await until(lambda: (namespace, "late") not in cache, "the config map's deletion")
        assert requests.count(False) == 1, f"requests (True = watch, False = LIST): {requests}"
    finally:
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await api.close()
