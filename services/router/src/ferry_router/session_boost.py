"""Session boost (spec §11, ``ENABLE_SESSION_BOOST=true``), global across replicas.

Requests wait in a per-model queue; those whose session (header ``SESSION_BOOST_HEADER``,
``X-Session-ID``) completed recently — it is in an LRU of ``SESSION_BOOST_MAX_SESSIONS`` — go
first, the most recently completed first; the rest are FIFO. A request is admitted while the
model's in-flight count is below ``SESSION_BOOST_INFLIGHT_PER_POD`` times its endpoints and at least
one endpoint reports no waiting requests (no endpoints: allowed), re-checked on every arrival and
release and, while blocked, every ``RECHECK`` seconds (the engines' queues drain without telling
us). ``SESSION_BOOST_GRACE_PERIOD`` holds a freed slot that long before admitting;
``SESSION_BOOST_TIMEOUT`` bounds the wait (≤ 0: none). Kthena's LRU lives in one process; here a
completed session is also published on ``ferry.sessionboost.completed`` (core NATS) and every
replica adds it to its LRU, so a session's next turn is boosted whichever replica takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from prometheus_client import Counter, Gauge, Histogram

from ferry_router.admission import (
    AdmissionQueue,
    ModelQueues,
    Publish,
    QueueMetrics,
    env_count,
    env_duration,
    env_enabled,
    share,
)
from ferry_router.state.table import Endpoint

log = logging.getLogger(__name__)

COMPLETED_SUBJECT = "ferry.sessionboost.completed"
RECHECK = 0.05
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
SIZE = Gauge(
    "kthena_router_session_boost_queue_size", "Requests waiting in the session-boost queue.", ["model"]
)
WAITED = Histogram(
    "kthena_router_session_boost_queue_duration_seconds", "Time spent in the session-boost queue.",
    ["model"], buckets=BUCKETS,
)  # fmt: skip
CANCELLED = Counter(
    "kthena_router_session_boost_queue_cancelled_total", "Requests that left the queue unserved.", ["model"]
)
DEQUEUED = Counter("kthena_router_session_boost_queue_dequeue_total", "Requests admitted.", ["model"])
INFLIGHT = Gauge("kthena_router_session_boost_queue_inflight", "Admitted requests still running.", ["model"])
COMPLETIONS = Counter(
    "ferry_router_session_boost_completions_total",
    "Session completions added to the LRU: local (here) or peer (another replica, via NATS).",
    ["source"],
)


@dataclass(frozen=True, slots=True)
class SessionBoostSettings:
    enabled: bool = False
    header: str = "X-Session-ID"
    max_sessions: int = 4096
    inflight_per_pod: int = 16
    grace_period: float = 0.0
    timeout: float = 30.0

    @classmethod
    def from_env(cls) -> SessionBoostSettings:
        return cls(
            enabled=env_enabled("ENABLE_SESSION_BOOST"),
            header=os.environ.get("SESSION_BOOST_HEADER") or "X-Session-ID",
            max_sessions=env_count("SESSION_BOOST_MAX_SESSIONS", 4096),
            inflight_per_pod=env_count("SESSION_BOOST_INFLIGHT_PER_POD", 16),
            grace_period=env_duration("SESSION_BOOST_GRACE_PERIOD", 0.0),
            timeout=env_duration("SESSION_BOOST_TIMEOUT", 30.0, signed=True),
        )


class RecentSessions:
    """LRU of completed sessions → the time of their last completion."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._done: OrderedDict[str, float] = OrderedDict()

    def completed(self, session: str, at: float) -> None:
        if at < self._done.get(session, 0.0):
            return
        self._done[session] = at
        self._done.move_to_end(session)
        while len(self._done) > self._limit:
            self._done.popitem(last=False)

    def last(self, session: str) -> float | None:
        return self._done.get(session)


Endpoints = Callable[[], list[Endpoint]]


class SessionQueue(AdmissionQueue):
    """One model's session-boost queue."""

    def __init__(self, model: str, sessions: RecentSessions, settings: SessionBoostSettings) -> None:
        self.model = model
        self._sessions = sessions
        self._s = settings
        self._endpoints: Endpoints = list
        self._released_at = 0.0
        metrics = QueueMetrics(SIZE.labels(model), WAITED.labels(model), CANCELLED.labels(model),
                               DEQUEUED.labels(model), INFLIGHT.labels(model))  # fmt: skip
        super().__init__(f"session-boost-{model}", settings.timeout, metrics)

    async def admit(self, session: str, endpoints: Endpoints, gone: Callable[[], bool]) -> None:
        self._endpoints = endpoints
        last = self._sessions.last(session) if session else None
        # boosted first, the most recent completion first; then everyone else FIFO
        await self.enter((0, -last) if last is not None else (1, 0.0), gone)

    def release(self) -> None:
        self._released_at = time.monotonic()
        super().release()

    def allowed(self) -> bool:
        endpoints = self._endpoints()
        limit = self._s.inflight_per_pod * max(len(endpoints), 1)
        if self.inflight >= limit:
            return False
        return not endpoints or any(e.metrics.waiting == 0 for e in endpoints)

    async def dispatch(self) -> None:
        while True:
            if not self.heap:
                await self.idle()
                continue
            grace = self._released_at + self._s.grace_period - time.monotonic()
            if grace > 0:
                await asyncio.sleep(grace)
                continue
            while self.heap and self.allowed() and self.pop():
                pass
            if self.heap:  # blocked: wait for a release, an arrival or the engines to drain
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), RECHECK)


class SessionBoost(ModelQueues[SessionQueue]):
    """Every model's session queue, the shared LRU and its NATS exchange."""

    def __init__(self, settings: SessionBoostSettings, publish: Publish | None = None) -> None:
        self.settings = settings
        self.sessions = RecentSessions(settings.max_sessions)
        self._publish = publish
        super().__init__(lambda model: SessionQueue(model, self.sessions, settings))

    async def completed(self, session: str) -> None:
        if not session:
            return
        at = time.time()
        self.sessions.completed(session, at)
        COMPLETIONS.labels("local").inc()
        await share(self._publish, COMPLETED_SUBJECT, {"session": session, "at": at})

    def on_completed_message(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
            self.sessions.completed(str(message["session"]), float(message["at"]))
            COMPLETIONS.labels("peer").inc()
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("bad session completion message %r", data[:200])
