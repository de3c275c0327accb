"""The last engine load per pod from ``FERRY_LOAD``, with its age (router replicas and the autoscaler).

Each message's age starts at what the sender's clock says it is (never negative, so a clock
ahead of ours only makes load look fresh by that skew) and grows on our monotonic clock. Load
older than ``stale_after`` is unknown: :meth:`LoadBoard.fresh` returns ``None`` and the reader
falls back to its own scrape (or to no load at all).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter
from pydantic import ValidationError

from ferry_schemas.bus import LOAD_STALE_SECONDS, LOAD_STREAM
from ferry_schemas.load import LOAD_FILTER, EngineLoad
from ferry_schemas.runtime.follow import StreamFollower

log = logging.getLogger(__name__)

LOAD_MESSAGES = Counter("ferry_load_messages_total", "Engine load messages read from the bus.", ["result"])

T = TypeVar("T")

LoadCallback = Callable[[EngineLoad, float], None]
"""``callback(load, received)``: ``received`` on :func:`time.monotonic`'s clock."""


class LatestLoads(Generic[T]):
    """The newest reading per pod with the monotonic time its sidecar took it."""

    def __init__(self, stale_after: float, clock: Callable[[], float]) -> None:
        self.stale_after = stale_after
        self._clock = clock
        self._latest: dict[str, tuple[T, float]] = {}

    def __len__(self) -> int:
        return len(self._latest)

    def put(self, pod_key: str, value: T, received: float) -> None:
        self._latest[pod_key] = (value, received)

    def pop(self, pod_key: str) -> T | None:
        """The pod's reading if it is fresh, forgetting it either way."""
        value = self.fresh(pod_key)
        self._latest.pop(pod_key, None)
        return value

    def age(self, pod_key: str) -> float | None:
        """Seconds since the pod's sidecar read its engine's load (``None``: never heard of)."""
        entry = self._latest.get(pod_key)
        return None if entry is None else self._clock() - entry[1]

    def fresh(self, pod_key: str) -> T | None:
        """The pod's load, unless it is older than ``stale_after``."""
        entry = self._latest.get(pod_key)
        if entry is None or self._clock() - entry[1] > self.stale_after:
            return None
        return entry[0]

    def prune(self) -> int:
        """Forget pods whose load went stale (their sidecar stopped); returns how many."""
        limit = self._clock() - self.stale_after
        gone = [key for key, (_, received) in self._latest.items() if received < limit]
        for key in gone:
            del self._latest[key]
        return len(gone)


class LoadBoard(LatestLoads[EngineLoad]):
    def __init__(
        self,
        js: JetStreamContext | None,
        *,
        stale_after: float = LOAD_STALE_SECONDS,
        stream: str = LOAD_STREAM,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(stale_after, clock)
        self._wall = wall
        self.callbacks: list[LoadCallback] = []
        self._follower = (
            StreamFollower(js, stream, {"load": LOAD_FILTER}, self._handle, name="load-board")
            if js is not None
            else None
        )

    @property
    def synced(self) -> bool:
        return self._follower is None or self._follower.synced

    async def start(self) -> None:
        if self._follower is not None:
            await self._follower.start()

    async def stop(self) -> None:
        if self._follower is not None:
            await self._follower.stop()

    def apply(self, load: EngineLoad) -> None:
        """Record one message (also how tests feed a board without a bus)."""
        received = self._clock() - max(0.0, self._wall() - load.sent_at)
        current = self._latest.get(load.pod_key)
        if current is not None and current[0].epoch == load.epoch and current[0].seq >= load.seq:
            return  # an older message of the same sidecar (redelivered snapshot)
        self._latest[load.pod_key] = (load, received)
        for callback in self.callbacks:
            try:
                callback(load, received)
            except Exception:
                log.exception("load callback failed for %s", load.pod_key)

    def _handle(self, key: str, msg: Msg) -> None:
        try:
            load = EngineLoad.model_validate_json(msg.data)
        except ValidationError as exc:
            LOAD_MESSAGES.labels("bad").inc()
            log.error("undecodable engine load on %s: %s", msg.subject, exc)
            return
        LOAD_MESSAGES.labels("ok").inc()
        self.apply(load)
