"""User-fairness queue (spec §10, ``ENABLE_FAIRNESS_SCHEDULING=true``), global across replicas.

Each model has a priority queue; a request's priority is its user's recent usage of that model,
``tokenWeight·T + requestNumWeight·R`` over a sliding window (T = input·inputWeight +
output·outputWeight summed over per-second buckets, R = completions), so light users go first,
one user's requests stay FIFO, and anonymous requests (no JWT subject) come last. Requests leave
the queue at ``FAIRNESS_MAX_QPS`` (a ticker) or, with ``FAIRNESS_MAX_CONCURRENT > 0``, whenever
one of that many permits is free. A request waits at most ``FAIRNESS_QUEUE_TIMEOUT`` (504); one
whose client has gone is skipped (503). Kthena keeps the usage window in Redis so that every
replica sees it; here each replica publishes the usage it records on ``ferry.fairness.usage``
(core NATS) and adds what the others publish, so priorities are global without a store.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from prometheus_client import Counter, Gauge, Histogram

from ferry_router.admission import (
    AdmissionQueue,
    ModelQueues,
    Publish,
    QueueMetrics,
    env_duration,
    env_enabled,
    env_number,
    share,
)

log = logging.getLogger(__name__)

USAGE_SUBJECT = "ferry.fairness.usage"
ALL = "_all"
QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
SIZE = Gauge(
    "kthena_router_fairness_queue_size", "Requests waiting in the fairness queue.", ["model", "user_id"]
)
WAITED = Histogram(
    "kthena_router_fairness_queue_duration_seconds",
    "Time requests spent in the fairness queue.",
    ["model", "user_id"],
    buckets=QUEUE_BUCKETS,
)
CANCELLED = Counter(
    "kthena_router_fairness_queue_cancelled_total",
    "Requests that left the queue unserved.",
    ["model", "user_id"],
)
DEQUEUED = Counter("kthena_router_fairness_queue_dequeue_total", "Requests admitted.", ["model", "user_id"])
INFLIGHT = Gauge("kthena_router_fairness_queue_inflight", "Admitted requests still running.", ["model"])
USAGE = Counter(
    "ferry_router_fairness_usage_records_total",
    "Completed requests charged to a user's window: local (here) or peer (another replica, via NATS).",
    ["source"],
)


@dataclass(frozen=True, slots=True)
class FairnessSettings:
    """Kthena's environment variables (invalid values fall back to the default with a warning)."""

    enabled: bool = False
    queue_timeout: float = 60.0
    window: float = 300.0
    input_weight: float = 1.0
    output_weight: float = 2.0
    token_weight: float = 1.0
    request_weight: float = 0.0
    max_concurrent: int = 0
    max_qps: float = 100.0

    @classmethod
    def from_env(cls) -> FairnessSettings:
        return cls(
            enabled=env_enabled("ENABLE_FAIRNESS_SCHEDULING"),
            queue_timeout=env_duration("FAIRNESS_QUEUE_TIMEOUT", 60.0),
            window=env_duration("FAIRNESS_WINDOW_SIZE", 300.0, low=59.999, high=3600.0),
            input_weight=env_number("FAIRNESS_INPUT_TOKEN_WEIGHT", 1.0),
            output_weight=env_number("FAIRNESS_OUTPUT_TOKEN_WEIGHT", 2.0),
            token_weight=env_number("FAIRNESS_PRIORITY_TOKEN_WEIGHT", 1.0),
            request_weight=env_number("FAIRNESS_PRIORITY_REQUEST_NUM_WEIGHT", 0.0),
            max_concurrent=int(env_number("FAIRNESS_MAX_CONCURRENT", 0)),
            max_qps=env_number("FAIRNESS_MAX_QPS", 100.0) or 100.0,
        )


@dataclass
class _Usage:
    buckets: deque[tuple[int, float, int]] = field(default_factory=deque)  # (second, tokens, requests)


class TokenTracker:
    """Per (user, model): weighted tokens and completions in per-second buckets over the window."""

    def __init__(self, settings: FairnessSettings, clock: Callable[[], float] = time.time) -> None:
        self._s = settings
        self._clock = clock
        self._usage: dict[tuple[str, str], _Usage] = {}

    def record(
        self, user: str, model: str, input_tokens: int, output_tokens: int, at: float | None = None
    ) -> None:
        second = int(self._clock() if at is None else at)
        tokens = input_tokens * self._s.input_weight + output_tokens * self._s.output_weight
        usage = self._usage.setdefault((user, model), _Usage())
        if usage.buckets and usage.buckets[-1][0] == second:
            _, t, r = usage.buckets[-1]
            usage.buckets[-1] = (second, t + tokens, r + 1)
        else:
            usage.buckets.append((second, tokens, 1))

    def priority(self, user: str, model: str) -> float:
        """Lower goes first; anonymous requests last."""
        if not user:
            return math.inf
        usage = self._usage.get((user, model))
        if usage is None:
            return 0.0
        horizon = self._clock() - self._s.window
        while usage.buckets and usage.buckets[0][0] < horizon:
            usage.buckets.popleft()
        tokens = sum(b[1] for b in usage.buckets)
        requests = sum(b[2] for b in usage.buckets)
        return self._s.token_weight * tokens + self._s.request_weight * requests


class FairQueue(AdmissionQueue):
    """One model's fairness queue: lower usage first; released at a rate or by permits."""

    def __init__(self, model: str, tracker: TokenTracker, settings: FairnessSettings) -> None:
        self.model = model
        self._tracker = tracker
        self._s = settings
        metrics = QueueMetrics(
            SIZE.labels(model, ALL), WAITED.labels(model, ALL), CANCELLED.labels(model, ALL),
            DEQUEUED.labels(model, ALL), INFLIGHT.labels(model),
        )  # fmt: skip
        super().__init__(f"fairness-{model}", settings.queue_timeout, metrics)

    async def admit(self, user: str, gone: Callable[[], bool]) -> None:
        """Wait for this request's turn; raises the 504/503 the spec names."""
        await self.enter((self._tracker.priority(user, self.model),), gone)

    async def dispatch(self) -> None:
        interval = 1.0 / self._s.max_qps
        while True:
            if not self.heap:
                await self.idle()
            elif self._s.max_concurrent > 0:
                while self.inflight < self._s.max_concurrent and self.pop():
                    pass
                await self.idle()  # a release or an arrival
            else:
                self.pop()
                await asyncio.sleep(interval)


class Fairness(ModelQueues[FairQueue]):
    """The queues of every model, the shared usage tracker and its NATS exchange."""

    def __init__(self, settings: FairnessSettings, publish: Publish | None = None, replica: str = "") -> None:
        self.settings = settings
        self.tracker = TokenTracker(settings)
        self._publish = publish
        self._replica = replica or os.urandom(6).hex()
        super().__init__(lambda model: FairQueue(model, self.tracker, settings))

    async def record(self, user: str, model: str, input_tokens: int, output_tokens: int) -> None:
        """Charge a completed request to its user here and, through NATS, on every other replica."""
        at = time.time()
        self.tracker.record(user, model, input_tokens, output_tokens, at)
        USAGE.labels("local").inc()
        if user:
            message = {"replica": self._replica, "user": user, "model": model,
                       "input": input_tokens, "output": output_tokens, "at": at}  # fmt: skip
            await share(self._publish, USAGE_SUBJECT, message)

    def on_usage_message(self, data: bytes) -> None:
        try:
            m = orjson.loads(data)
            if m.get("replica") == self._replica:
                return
            self.tracker.record(
                str(m["user"]), str(m["model"]), int(m["input"]), int(m["output"]), float(m["at"])
            )
            USAGE.labels("peer").inc()
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            log.warning("bad usage message %r", data[:200])
