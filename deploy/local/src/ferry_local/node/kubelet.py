"""Plays scheduler and kubelet for the local stack.

Binds pending pods to one node when their gang can be met (:mod:`gang`), runs the mock engine for
each bound pod on its own 127.0.x.y (:mod:`engine`), reports the pod Running, then Ready once the
engine answers ``/health``, Failed when the process dies, and finishes graceful deletion (stop the
process, delete with grace 0) as a kubelet does. Level-triggered: every pass looks at all pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from ferry_local.node.addresses import AddressPool
from ferry_local.node.engine import ProcessPlan, plan_for
from ferry_local.node.gang import bindable
from ferry_local.node.informer import informer
from ferry_local.processes import ManagedProcess, spawn

log = logging.getLogger(__name__)
Obj = dict[str, Any]
MERGE_PATCH: dict[str, Any] = {"_content_type": "application/merge-patch+json"}


@dataclass(frozen=True)
class NodeSettings:
    log_dir: Path
    node_name: str = "ferry-local"
    resync_seconds: float = 1.0
    health_timeout: float = 1.0


@dataclass
class PodRun:
    """What the node runs for one pod."""

    ip: str
    plan: ProcessPlan
    process: ManagedProcess | None = None
    ready: bool = False
    failed: bool = False
    started_at: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, status: bool) -> Obj:
    return {"type": kind, "status": "True" if status else "False", "lastTransitionTime": _now()}


class LocalNode:
    def __init__(self, api: client.ApiClient, settings: NodeSettings) -> None:
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self.settings = settings
        self._pods: dict[tuple[str, str], Obj] = {}
        self._podgroups: dict[tuple[str, str], Obj] = {}
        self._runs: dict[str, PodRun] = {}
        self._binding: set[str] = set()
        self._addresses = AddressPool()
        self._changed = asyncio.Event()
        self._http = httpx.AsyncClient(timeout=settings.health_timeout)

    async def run(self, stop: asyncio.Event) -> None:
        await self._register_node()
        pods = informer(self._core.list_pod_for_all_namespaces, self._pods, self._changed, stop, what="pods")
        groups = informer(self._list_podgroups, self._podgroups, self._changed, stop, what="podgroups")
        watchers = [asyncio.create_task(pods), asyncio.create_task(groups)]
        try:
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), self.settings.resync_seconds)
                self._changed.clear()
                try:
                    await self.reconcile()
                except Exception:
                    log.exception("local node pass failed; retrying")
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            self.stop_all()
            await self._http.aclose()

    async def _list_podgroups(self, **kwargs: Any) -> Any:
        return await self._custom.list_cluster_custom_object(
            "scheduling.volcano.sh", "v1beta1", "podgroups", **kwargs
        )

    async def _register_node(self) -> None:
        name = self.settings.node_name
        with contextlib.suppress(ApiException):
            await self._core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name)))
        ready = {**_condition("Ready", True), "reason": "FerryLocalNode", "lastHeartbeatTime": _now()}
        capacity = {"cpu": "64", "memory": "256Gi", "pods": "1000", "nvidia.com/gpu": "64"}
        status = {
            "status": {
                "conditions": [ready],
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": name},
                ],
                "capacity": capacity,
                "allocatable": capacity,
            }
        }
        await self._core.patch_node_status(name, status)

    # ------------------------------------------------------------------ one pass

    async def reconcile(self) -> None:
        pods = list(self._pods.values())
        for pod in bindable(pods, self._podgroups):
            await self._bind(pod)
        live = set()
        for pod in pods:
            meta, spec = pod["metadata"], pod.get("spec") or {}
            if spec.get("nodeName") != self.settings.node_name:
                continue
            uid = meta["uid"]
            live.add(uid)
            if meta.get("deletionTimestamp"):
                await self._finish_deletion(pod)
            elif (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
                self._stop(uid, release=False)
            elif uid not in self._runs:
                await self._start(pod)
            else:
                await self._check(pod, self._runs[uid])
        for uid in set(self._runs) - live:
            self._stop(uid)

    async def _bind(self, pod: Obj) -> None:
        meta = pod["metadata"]
        if meta["uid"] in self._binding:
            return
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"]),
            target=client.V1ObjectReference(api_version="v1", kind="Node", name=self.settings.node_name),
        )
        try:
            await self._core.create_namespaced_binding(meta["namespace"], body, _preload_content=False)
            self._binding.add(meta["uid"])
            log.info("bound %s/%s", meta["namespace"], meta["name"])
        except ApiException as exc:
            if exc.status != 409:  # already bound or gone: the watch will tell
                log.warning("binding %s/%s failed: %s", meta["namespace"], meta["name"], exc.reason)

    async def _start(self, pod: Obj) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        ip = self._addresses.acquire(uid, preferred=(pod.get("status") or {}).get("podIP"))
        plan = plan_for(pod, ip)
        run = PodRun(ip=ip, plan=plan)
        if plan.argv is not None:
            log_name = f"{meta['namespace']}_{meta['name']}"
            run.process = spawn(log_name, plan.argv, self.settings.log_dir, env=plan.env)
            log.info("started engine for %s/%s on %s:%s", meta["namespace"], meta["name"], ip, plan.port)
        else:
            run.ready = True
        self._runs[uid] = run
        await self._patch_status(pod, run)

    async def _check(self, pod: Obj, run: PodRun) -> None:
        if run.failed:
            return
        if run.process is not None and not run.process.alive():
            run.failed = True
            run.ready = False
            log.warning("engine of %s/%s exited", pod["metadata"]["namespace"], pod["metadata"]["name"])
            await self._patch_status(pod, run)
            return
        if not run.ready and run.plan.port is not None:
            try:
                answer = await self._http.get(f"http://{run.ip}:{run.plan.port}/health")
                run.ready = answer.status_code == 200
            except httpx.HTTPError:
                return
            if run.ready:
                await self._patch_status(pod, run)
        elif run.ready and not _reported_ready(pod):
            await self._patch_status(pod, run)

    async def _patch_status(self, pod: Obj, run: PodRun) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        containers = spec.get("containers") or []
        if run.failed:
            state: Obj = {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": _now()}}
        else:
            state = {"running": {"startedAt": run.started_at}}
        ready = run.ready and not run.failed
        statuses = [
            {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": ready, "restartCount": 0,
             "started": not run.failed, "state": state}
            for c in containers
        ]  # fmt: skip
        status: Obj = {
            "phase": "Failed" if run.failed else "Running",
            "podIP": run.ip,
            "podIPs": [{"ip": run.ip}],
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "startTime": run.started_at,
            "conditions": [
                _condition("PodScheduled", True),
                _condition("Initialized", True),
                _condition("ContainersReady", ready),
                _condition("Ready", ready),
            ],
            "containerStatuses": statuses,
        }
        try:
            # A merge patch replaces lists (podIPs, conditions) instead of merging them by key; the
            # stubs do not list _content_type, which the client takes through **kwargs.
            patch = self._core.patch_namespaced_pod_status
            await patch(meta["name"], meta["namespace"], {"status": status}, **MERGE_PATCH)
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def _finish_deletion(self, pod: Obj) -> None:
        meta = pod["metadata"]
        self._stop(meta["uid"])
        with contextlib.suppress(ApiException):
            options = client.V1DeleteOptions(
                grace_period_seconds=0, preconditions=client.V1Preconditions(uid=meta["uid"])
            )
            await self._core.delete_namespaced_pod(meta["name"], meta["namespace"], body=options)

    def _stop(self, uid: str, *, release: bool = True) -> None:
        run = self._runs.get(uid)
        if run is not None and run.process is not None:
            run.process.stop(timeout=5)
            run.process = None
        if release:
            self._runs.pop(uid, None)
            self._binding.discard(uid)
            self._addresses.release(uid)

    def stop_all(self) -> None:
        for uid in list(self._runs):
            self._stop(uid)


def _reported_ready(pod: Obj) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False
