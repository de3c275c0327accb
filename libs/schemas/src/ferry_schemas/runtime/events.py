"""Kubernetes Events (``events.k8s.io/v1``) for every action on a user's object (design rule 9).

Modelled on client-go's ``tools/events`` broadcaster:

* **Asynchronous.** :meth:`EventRecorder.record` never blocks a reconcile and never fails it; a
  background task writes, and an event that cannot be written is logged and counted, not retried
  forever (events are an explanation, not state).
* **Low priority: Events yield to reconcile work.** Given ``idle_for`` (the service's
  :meth:`WorkQueue.idle_for <ferry_schemas.runtime.workqueue.WorkQueue.idle_for>`), the writer holds
  Events while the work queue has had work within the last ``quiet`` seconds, so their API writes (a
  POST: the API server's decode, admission and etcd write, this process's request; ~2.8 ms of CPU in
  all) do not compete with the writes users wait for. It writes the held Events, oldest first, once
  the queue has been idle ``quiet`` seconds (a pipeline's short pauses between stages are not idle),
  at most ``busy_rate`` per second while it is busy, and always once one was held ``max_delay``
  seconds, so a service that is never idle still tells its story within ``max_delay``; ``stop``
  writes what is held (bounded by its ``drain``). Without ``idle_for`` every Event is written at
  once.
* **Aggregated.** Isomorphic events within ``series_window`` become one Event with a ``series``
  (count, lastObservedTime): the first is created, the second patches ``series.count = 2``, later
  ones only count in memory and are patched at most every ``flush_interval``. Occurrences recorded
  while the first is still held are counted into it, so it is created with its series (one POST,
  ``series.count = n``). So a pod recreated 40 times is one Event, count 40. Isomorphic is client-go's
  ``tools/events`` key: the same object, related object, type, reason and action; the note is not
  part of it (the series keeps the first note), so notes that name what changed do not defeat the
  aggregation.
* **Rate-limited.** Each regarded object has a token bucket (``burst`` writes, refilled at
  ``refill_per_second``, client-go's spam filter: 25 and one per 5 minutes); writes past it are
  dropped and counted (``ferry_events_total{outcome="dropped"}``).

``kubectl describe modelbooster X`` then tells the story.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client import Counter

from ferry_schemas.runtime.kubeconn import MERGE_PATCH, METADATA_ONLY, ApiError, KubeConnection, object_path

log = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]
EVENTS_GROUP = "events.k8s.io"

EVENTS = Counter("ferry_events_total", "Events recorded, by how they reached the API server.", ["outcome"])
"""outcome: created, series (patched), aggregated (counted in memory), dropped, failed."""

EventKey = tuple[str, ...]
"""client-go's isomorphic key: object uid and name, related uid and name, type, reason, action."""

MAX_NOTE = 1024
MAX_REASON = 128


def micro_time(moment: datetime | None = None) -> str:
    """``MicroTime``: RFC 3339 with microseconds."""
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def reference(obj: Mapping[str, Any]) -> dict[str, str]:
    """The ObjectReference of a whole object (apiVersion, kind, namespace, name, uid, resourceVersion)."""
    meta = obj.get("metadata") or {}
    ref = {
        "apiVersion": str(obj.get("apiVersion") or ""),
        "kind": str(obj.get("kind") or ""),
        "namespace": str(meta.get("namespace") or ""),
        "name": str(meta.get("name") or ""),
        "uid": str(meta.get("uid") or ""),
    }
    if meta.get("resourceVersion"):
        ref["resourceVersion"] = str(meta["resourceVersion"])
    return ref


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class _Series:
    name: str
    namespace: str
    first_seen: float
    count: int = 1
    written_count: int = 1
    last_observed: str = field(default_factory=micro_time)


@dataclass
class _Held:
    """An Event recorded and not written yet, with the occurrences counted into it meanwhile."""

    event: dict[str, Any]
    recorded: float
    count: int = 1
    last_observed: str = field(default_factory=micro_time)


class EventRecorder:
    """See the module docstring. ``controller`` is ``reportingController`` (e.g. ``ferry/applier``)."""

    def __init__(
        self,
        api: KubeConnection,
        controller: str,
        *,
        instance: str = "",
        burst: int = 25,
        refill_per_second: float = 1 / 300,
        series_window: float = 1800.0,
        flush_interval: float = 30.0,
        queue_size: int = 10_000,
        timeout: float = 10.0,
        max_delay: float = 10.0,
        quiet: float = 1.0,
        busy_rate: float = 0.0,
        poll: float = 0.25,
    ) -> None:
        self._api = api
        self.controller = controller
        self.instance = instance or f"{socket.gethostname()}-{os.getpid()}"
        self._burst = burst
        self._refill = refill_per_second
        self._window = series_window
        self._flush_interval = flush_interval
        self._timeout = timeout
        self._queue_size = queue_size
        self._max_delay = max_delay
        self._quiet = quiet
        self._busy_rate = busy_rate
        self._poll = poll
        self._idle_for: Callable[[], float] = _always_idle
        self._busy_tokens = 1.0
        self._busy_stamp = time.monotonic()
        self._held: dict[EventKey, _Held] = {}
        """Events not written yet, oldest first (a dict keeps insertion order)."""
        self._arrived = asyncio.Event()
        self._emptied = asyncio.Event()
        self._emptied.set()
        self._draining = False
        self._buckets: dict[str, _Bucket] = {}
        self._series: dict[EventKey, _Series] = {}
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ API

    def record(
        self,
        regarding: Mapping[str, Any],
        *,
        reason: str,
        action: str,
        note: str = "",
        type: EventType = "Normal",
        related: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue one event about ``regarding`` (a whole object or an ObjectReference dict)."""
        ref = dict(regarding) if "metadata" not in regarding else reference(regarding)
        event: dict[str, Any] = {
            "regarding": ref,
            "reason": reason[:MAX_REASON],
            "action": action[:MAX_REASON],
            "note": note[:MAX_NOTE],
            "type": type,
        }
        if related is not None:
            event["related"] = dict(related) if "metadata" not in related else reference(related)
        key = _key(event)
        held = self._held.get(key)
        if held is not None:  # not written yet: one more occurrence of it
            held.count += 1
            held.last_observed = micro_time()
            EVENTS.labels("aggregated").inc()
            return
        if len(self._held) >= self._queue_size:
            EVENTS.labels("dropped").inc()
            return
        self._held[key] = _Held(event, time.monotonic())
        self._emptied.clear()
        self._arrived.set()

    def start(self, *, idle_for: Callable[[], float] | None = None) -> None:
        """Start writing; while ``idle_for()`` (seconds the work has been idle) is under ``quiet``,
        Events wait (see the module docstring)."""
        if idle_for is not None:
            self._idle_for = idle_for
        if self._task is None:
            self._draining = False
            self._task = asyncio.create_task(self._run(), name="event-recorder")

    async def stop(self, *, drain: float = 2.0) -> None:
        """Write what is held, busy or not (for up to ``drain`` seconds), flush series counts, stop."""
        if self._task is None:
            return
        self._draining = True
        self._arrived.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._emptied.wait(), timeout=drain)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self._task = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._flush(force=True), timeout=drain)

    # ------------------------------------------------------------------ writer

    async def _run(self) -> None:
        next_flush = time.monotonic() + self._flush_interval
        while True:
            now = time.monotonic()
            if now >= next_flush:
                await self._flush()
                next_flush = time.monotonic() + self._flush_interval
                continue
            key = next(iter(self._held), None)  # the oldest held
            wait = next_flush - now
            if key is not None:
                wait = min(wait, self._hold(self._held[key], now))
            if key is None or wait > 0:
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), timeout=wait)
                continue
            held = self._held.pop(key)
            try:
                await self._write(key, held)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                EVENTS.labels("failed").inc()
                event = held.event
                log.warning("event %s on %s not written: %s", event["reason"], _describe(event), exc)
            if not self._held:
                self._emptied.set()

    def _hold(self, held: _Held, now: float) -> float:
        """Seconds to hold the oldest Event before looking again; 0 to write it now."""
        if self._draining or now - held.recorded >= self._max_delay:
            return 0.0
        idle = self._idle_for()
        if idle >= self._quiet:
            return 0.0
        if self._busy_rate > 0:
            self._busy_tokens = min(1.0, self._busy_tokens + (now - self._busy_stamp) * self._busy_rate)
            self._busy_stamp = now
            if self._busy_tokens >= 1.0:
                self._busy_tokens -= 1.0
                return 0.0
        return max(0.001, min(self._poll, self._quiet - idle, self._max_delay - (now - held.recorded)))

    async def _write(self, key: EventKey, held: _Held) -> None:
        event = held.event
        ref = event["regarding"]
        now = time.monotonic()
        series = self._series.get(key)
        if series is not None and now - series.first_seen > self._window:
            del self._series[key]
            series = None
        if series is not None:
            series.count += held.count
            series.last_observed = held.last_observed
            if series.written_count > 1:
                EVENTS.labels("aggregated").inc()
                return  # the periodic flush writes the count
            await self._patch_series(series)
            return
        if not self._allow(ref.get("uid") or ref.get("name", ""), now):
            EVENTS.labels("dropped").inc()
            return
        moment = datetime.now(UTC)
        name = f"{ref.get('name', 'object')}.{time.time_ns():x}"
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ref.get("namespace") or "default"},
            "eventTime": micro_time(moment),
            "reportingController": self.controller,
            "reportingInstance": self.instance,
            **event,
        }
        if held.count > 1:  # counted while held: created as a series
            body["series"] = {"count": held.count, "lastObservedTime": held.last_observed}
        namespace = body["metadata"]["namespace"]
        await self._api.send(
            "POST",
            object_path(EVENTS_GROUP, "v1", "events", namespace),
            body,
            limits=self._timeout,
            accept=METADATA_ONLY,  # the answer is not read
        )
        self._series[key] = _Series(
            name=name,
            namespace=namespace,
            first_seen=now,
            count=held.count,
            written_count=held.count,
            last_observed=held.last_observed,
        )
        EVENTS.labels("created").inc()

    async def _patch_series(self, series: _Series) -> None:
        if not self._allow(f"series/{series.namespace}/{series.name}", time.monotonic()):
            return  # counted in memory; a later flush writes it
        body = {"series": {"count": series.count, "lastObservedTime": series.last_observed}}
        path = object_path(EVENTS_GROUP, "v1", "events", series.namespace, series.name)
        try:
            await self._api.send(
                "PATCH", path, body, content_type=MERGE_PATCH, limits=self._timeout, accept=METADATA_ONLY
            )
        except ApiError as exc:
            if exc.status != 404:
                raise
            # the Event expired (the API server keeps them an hour): start a new one next time
            self._series = {k: s for k, s in self._series.items() if s is not series}
            return
        series.written_count = series.count
        EVENTS.labels("series").inc()

    async def _flush(self, *, force: bool = False) -> None:
        for series in list(self._series.values()):
            if series.count != series.written_count and (force or series.written_count > 1):
                try:
                    await self._patch_series(series)
                except Exception as exc:
                    EVENTS.labels("failed").inc()
                    log.info("event series %s/%s not updated: %s", series.namespace, series.name, exc)
        horizon = time.monotonic() - self._window
        self._series = {k: s for k, s in self._series.items() if s.first_seen >= horizon}

    def _allow(self, key: str, now: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(tokens=float(self._burst), stamp=now)
            if len(self._buckets) > 50_000:  # forget the fullest buckets of long-gone objects
                self._buckets = {k: b for k, b in self._buckets.items() if b.tokens < self._burst}
        bucket.tokens = min(float(self._burst), bucket.tokens + (now - bucket.stamp) * self._refill)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True


def _always_idle() -> float:
    return float("inf")


def _key(event: Mapping[str, Any]) -> EventKey:
    ref = event["regarding"]
    related = event.get("related") or {}
    return (
        ref.get("uid", ""),
        ref.get("name", ""),
        related.get("uid", ""),
        related.get("name", ""),
        event["type"],
        event["reason"],
        event["action"],
    )


def _describe(event: Mapping[str, Any]) -> str:
    ref = event.get("regarding") or {}
    return f"{ref.get('kind')} {ref.get('namespace')}/{ref.get('name')}"
