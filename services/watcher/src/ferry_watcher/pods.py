"""Which pods the watcher publishes: ModelServing pods and pods that some ModelServer selects.

Kthena's ModelServer selects pods of any owner (a Deployment, a StatefulSet, a bare pod) by
``workloadSelector.matchLabels``; publishing every pod of the cluster would put each of, say,
10,000 unrelated pods on the bus and in every router. So the pod informer watches all pods but
publishes only the wanted ones, decided per event by :class:`~ferry_schemas.selection.SelectorIndex`
(one dict look-up per pod label, independent of the number of pods and ModelServers). The index is
fed by the ModelServer informer; when a selector appears or changes, the pods it now selects are
fetched with one server-side filtered list (``labelSelector``) of that namespace, and published pods
that nothing wants any more get a tombstone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from ferry_schemas.bus import OBJECTS_STREAM, ObjectEvent, decode_token
from ferry_schemas.labels import MS_NAME
from ferry_schemas.runtime.kubeconn import ApiError
from ferry_schemas.selection import (
    Pair,
    SelectorIndex,
    label_selector_query,
    pool_match_labels,
    server_match_labels,
)

from ferry_watcher.informer import JSON, Informer
from ferry_watcher.kube import list_objects
from ferry_watcher.metrics import RESELECTS

log = logging.getLogger(__name__)

Selector = tuple[Pair, ...]


class PodSelection:
    """The ModelServer (and, in gateway mode, InferencePool) selectors the watcher knows, and the
    selector changes still to act on."""

    def __init__(self) -> None:
        self.index: SelectorIndex[None] = SelectorIndex()
        self.changes: asyncio.Queue[tuple[int, str, Selector]] = asyncio.Queue()
        """(sequence, namespace, new selector — empty when it went away)."""
        self.sequence = 0
        self._service_labels: dict[str, dict[str, str]] = {}
        """Service key → its selector (gateway mode: every Service is watched)."""
        self._route_services: dict[str, set[str]] = {}
        """HTTPRoute key → the Services it names as backendRefs (only those select pods)."""

    def on_server(self, event: ObjectEvent) -> None:
        """Observer of the ModelServer informer: file the selector, queue a reselect when it changed."""
        labels = {} if event.deleted else server_match_labels(event.object)
        self._file(f"{event.namespace}/{event.name}", event.namespace, labels)

    def on_pool(self, event: ObjectEvent) -> None:
        """Observer of the InferencePool informer (gateway mode): pools select pods the same way."""
        labels = {} if event.deleted else pool_match_labels(event.object)
        self._file(f"inferencepool:{event.namespace}/{event.name}", event.namespace, labels)

    def on_service(self, event: ObjectEvent) -> None:
        """Observer of the Service informer (gateway mode)."""
        key = f"{event.namespace}/{event.name}"
        selector = (event.object.get("spec") or {}).get("selector") or {}
        if event.deleted or not isinstance(selector, dict):
            self._service_labels.pop(key, None)
        else:
            self._service_labels[key] = {str(k): str(v) for k, v in selector.items()}
        self._file_service(key)

    def on_route(self, event: ObjectEvent) -> None:
        """Observer of the HTTPRoute informer: the Services it names as backends select pods."""
        key = f"{event.namespace}/{event.name}"
        before = self._route_services.pop(key, set())
        now: set[str] = set()
        if not event.deleted:
            for rule in (event.object.get("spec") or {}).get("rules") or []:
                for ref in rule.get("backendRefs") or []:
                    if (ref.get("group") or "") == "" and (ref.get("kind") or "Service") == "Service":
                        now.add(f"{ref.get('namespace') or event.namespace}/{ref['name']}")
            self._route_services[key] = now
        for service in before | now:
            self._file_service(service)

    def _file_service(self, key: str) -> None:
        referenced = any(key in services for services in self._route_services.values())
        labels = self._service_labels.get(key, {}) if referenced else {}
        self._file(f"service:{key}", key.split("/", 1)[0], labels)

    def _file(self, key: str, namespace: str, labels: dict[str, str]) -> None:
        new: Selector = tuple(sorted(labels.items()))
        old = self.index.selector(key)
        if (old[1] if old is not None else ()) == new:
            return
        self.index.put(key, namespace, labels, None)
        self.sequence += 1
        self.changes.put_nowait((self.sequence, namespace, new))

    def wants_labels(self, namespace: str, labels: dict[str, str]) -> bool:
        return MS_NAME in labels or self.index.selects_any(namespace, labels)

    def wants(self, obj: JSON) -> bool:
        meta = obj.get("metadata") or {}
        return self.wants_labels(str(meta.get("namespace") or ""), selection_labels(obj))


def selection_labels(pod: JSON) -> dict[str, str]:
    """The pod's labels, with the ModelServing name of its ownerReference when the label is gone: a
    ModelServing pod whose labels were edited by hand stays published, so the applier repairs it."""
    meta = pod.get("metadata") or {}
    labels = dict(meta.get("labels") or {})
    if MS_NAME not in labels:
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") == "ModelServing" and ref.get("controller") and ref.get("name"):
                labels[MS_NAME] = str(ref["name"])
    return labels


class PodInformer(Informer):
    """The pod informer: publishes the pods :class:`PodSelection` wants and follows selector changes."""

    def __init__(
        self,
        *args: Any,
        selection: PodSelection,
        selectors_synced: list[asyncio.Event],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._selection = selection
        self._selectors_synced = selectors_synced
        self._labels: dict[str, dict[str, dict[str, str]]] = {}
        """namespace → subject → labels of every published pod (small: only wanted pods)."""
        self._others: dict[str, dict[str, dict[str, str]]] = {}
        """namespace → name → labels of every pod not published: a new selector lists the API
        server only when one of them matches (a booster's ModelServer selects its own pods, already
        published, so it costs no LIST)."""
        self._covered = 0
        """Selector changes up to this sequence are covered by the last full list."""

    async def run(self) -> None:
        # the first list must know every selector, or it would tombstone pods that are wanted
        for synced in self._selectors_synced:
            await synced.wait()
        worker = asyncio.create_task(self._follow_selectors(), name="pod-reselect")
        try:
            await super().run()
        finally:
            worker.cancel()

    async def relist(self) -> str:
        self._covered = self._selection.sequence
        return await super().relist()

    def wants(self, obj: JSON) -> bool:
        return self._selection.wants(obj)

    def _listed_unwanted(self, objects: list[JSON]) -> None:
        self._others = {}
        for obj in objects:
            meta = obj.get("metadata") or {}
            others = self._others.setdefault(str(meta.get("namespace") or ""), {})
            others[str(meta.get("name") or "")] = dict(meta.get("labels") or {})

    def _unwanted(self, event: ObjectEvent) -> None:
        others = self._others.setdefault(event.namespace, {})
        if event.deleted:
            others.pop(event.name, None)
        else:
            others[event.name] = dict((event.object.get("metadata") or {}).get("labels") or {})

    def _remember(self, event: ObjectEvent) -> None:
        self._others.get(event.namespace, {}).pop(event.name, None)
        super()._remember(event)
        self._labels.setdefault(event.namespace, {})[event.subject] = selection_labels(event.object)

    def _forget(self, subject: str) -> None:
        super()._forget(subject)
        for published in self._labels.values():
            if published.pop(subject, None) is not None:
                break

    async def _follow_selectors(self) -> None:
        await self.synced.wait()
        while True:
            sequence, namespace, selector = await self._selection.changes.get()
            if sequence <= self._covered:
                continue  # the full list ran after this change and saw its pods
            while True:
                try:
                    await self.reselect(namespace, selector)
                    break
                except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                    log.warning("pods: reselect in %s failed (%s); retrying", namespace, exc)
                    await self._backoff.sleep()

    async def reselect(self, namespace: str, selector: Selector) -> None:
        """Tombstone published pods of ``namespace`` nothing wants; publish those ``selector`` now selects."""
        RESELECTS.inc()
        published = self._labels.get(namespace, {})
        for subject, labels in list(published.items()):
            if not self._selection.wants_labels(namespace, labels):
                await self._tombstone(subject, "")
                # unpublished now: a selector that comes back (a re-created InferencePool or
                # ModelServer) must find it here, or it never lists the API server for it again
                self._others.setdefault(namespace, {})[decode_token(subject.rsplit(".", 1)[-1])] = labels
        if not selector or (self._namespace and namespace != self._namespace):
            return
        others = self._others.get(namespace, {}).values()
        if not any(all(labels.get(k) == v for k, v in selector) for labels in others):
            log.debug(
                "pods: selector %s in %s selects no unpublished pod",
                label_selector_query(selector),
                namespace,
            )
            return
        items, _ = await list_objects(self._api, self.watched.path(namespace), label_selector_query(selector))
        added = 0
        for obj in items:
            event = ObjectEvent.from_object("SYNC", self.resource, obj)
            # a pod the watch already published is newer there than in this list: leave it
            if event.subject not in self._known and self.wants(obj):
                await self.publish(event, await self._republish_id(event))
                added += 1
        log.info(
            "pods: selector %s in %s selects %d more pods", label_selector_query(selector), namespace, added
        )

    async def _republish_id(self, event: ObjectEvent) -> str | None:
        """A pod selected again after its tombstone (a selector went away and came back) is the same
        ``uid/resourceVersion`` as before: its id names the tombstone's stream sequence, or the
        stream would drop it as a duplicate of the first publication (every watcher replica derives
        the same id, so high availability still publishes it once)."""
        await self._publisher.flush()  # the stream read next must hold everything sent
        try:
            last = await self._js.get_last_msg(OBJECTS_STREAM, event.subject)
            deleted = ObjectEvent.model_validate_json(last.data or b"{}").deleted
        except Exception:  # nothing stored for the subject (or unreadable): the plain id is right
            return None
        return f"{event.msg_id}/after/{last.seq}" if deleted else None
