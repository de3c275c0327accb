"""What the router benchmarks share: a fleet of local engines made visible to a router without Kubernetes.

A router learns its world from the bus; a benchmark publishes that world itself — one ModelServer,
one ModelRoute and a Running, Ready pod per engine, as the watcher would — so only the router and
the engines run (``publish_objects`` publishes any objects that way). ``wait_http`` waits for a
process's endpoint to answer 200.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from typing import Any

import nats
from ferry_local.processes import ManagedProcess, tail
from ferry_schemas.bus import MSG_ID_HEADER, ObjectEvent
from ferry_schemas.runtime.jetstream import declare_streams


def wait_http(url: str, what: str, process: ManagedProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if not process.alive():
            break
        time.sleep(0.1)
    raise SystemExit(f"{what} did not come up:\n{tail(process.log)}")


def fleet_objects(
    namespace: str, model: str, hosts: list[str], port: int
) -> list[tuple[str, dict[str, Any]]]:
    """ModelServer ``bench`` (vLLM, selects ``app=bench``), ModelRoute ``bench``, pods ``engine-<i>``."""
    server = {
        "metadata": {"name": "bench", "namespace": namespace},
        "spec": {
            "workloadSelector": {"matchLabels": {"app": "bench"}},
            "workloadPort": {"port": port},
            "inferenceEngine": "vLLM",
            "model": model,
        },
    }
    route = {
        "metadata": {"name": "bench", "namespace": namespace},
        "spec": {"modelName": model, "rules": [{"targetModels": [{"modelServerName": "bench"}]}]},
    }
    objects: list[tuple[str, dict[str, Any]]] = [("modelservers", server), ("modelroutes", route)]
    for i, host in enumerate(hosts):
        pod = {
            "metadata": {"name": f"engine-{i}", "namespace": namespace, "labels": {"app": "bench"}},
            "status": {
                "phase": "Running",
                "podIP": host,
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
        objects.append(("pods", pod))
    return objects


async def publish_fleet(nats_url: str, namespace: str, model: str, hosts: list[str], port: int) -> None:
    """Publish the fleet's objects as the watcher's ADDED events."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await declare_streams(js)
    await publish_objects(js, fleet_objects(namespace, model, hosts, port))
    await nc.drain()


async def publish_objects(js: Any, objects: list[tuple[str, dict[str, Any]]], batch: int = 1) -> None:
    """Publish each (resource, object) on FERRY_OBJECTS as an ADDED event, as the watcher does;
    ``batch`` acks are awaited together (the fleet benchmark publishes tens of thousands)."""
    for start in range(0, len(objects), batch):
        sends = []
        for resource, obj in objects[start : start + batch]:
            obj["metadata"].setdefault("uid", f"{resource}-{obj['metadata']['name']}")
            obj["metadata"]["resourceVersion"] = str(time.time_ns())
            event = ObjectEvent.from_object("ADDED", resource, obj)
            sends.append(js.publish(event.subject, event.to_bytes(), headers={MSG_ID_HEADER: event.msg_id}))
        await asyncio.gather(*sends)
