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
import heapq
import itertools
import logging
import math
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from prometheus_client import Counter, Gauge, Histogram

from ferry_router import errors
from ferry_router.durations import parse_duration

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


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        value = float(raw) if raw else default
    except ValueError:
        log.warning("%s=%r is not a number; using %s", name, raw, default)
        return default
    if not math.isfinite(value) or value < 0:
        log.warning("%s=%r must be finite and >= 0; using %s", name, raw, default)
        return default
    return value


def _env_duration(name: str, default: float, low: float = 0.0, high: float = math.inf) -> float:
    raw = os.environ.get(name)
    try:
        value = parse_duration(raw) if raw else default
    except ValueError:
        log.warning("%s=%r is not a duration; using %ss", name, raw, default)
        return default
    if not low < value <= high:
        log.warning("%s=%r out of range; using %ss", name, raw, default)
        return default
    return value


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
            enabled=os.environ.get("ENABLE_FAIRNESS_SCHEDULING", "").strip().lower() in ("1", "true", "yes"),
            queue_timeout=_env_duration("FAIRNESS_QUEUE_TIMEOUT", 60.0),
            window=_env_duration("FAIRNESS_WINDOW_SIZE", 300.0, 59.999, 3600.0),
            input_weight=_env_float("FAIRNESS_INPUT_TOKEN_WEIGHT", 1.0),
            output_weight=_env_float("FAIRNESS_OUTPUT_TOKEN_WEIGHT", 2.0),
            token_weight=_env_float("FAIRNESS_PRIORITY_TOKEN_WEIGHT", 1.0),
            request_weight=_env_float("FAIRNESS_PRIORITY_REQUEST_NUM_WEIGHT", 0.0),
            max_concurrent=int(_env_float("FAIRNESS_MAX_CONCURRENT", 0)),
            max_qps=_env_float("FAIRNESS_MAX_QPS", 100.0) or 100.0,
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


@dataclass(order=True)
class _Entry:
    priority: float
    seq: int
    admitted: asyncio.Future[None] = field(compare=False)
    gone: Callable[[], bool] = field(compare=False)


class FairQueue:
    """One model's queue and its dispatcher."""

    def __init__(self, model: str, tracker: TokenTracker, settings: FairnessSettings) -> None:
        self.model = model
        self._tracker = tracker
        self._s = settings
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self.inflight = 0
        self._task = asyncio.get_running_loop().create_task(self._dispatch(), name=f"fairness-{model}")

    async def admit(self, user: str, gone: Callable[[], bool]) -> None:
        """Wait for this request's turn; raises the 504/503 the spec names."""
        loop = asyncio.get_running_loop()
        entry = _Entry(self._tracker.priority(user, self.model), next(self._seq), loop.create_future(), gone)
        heapq.heappush(self._heap, entry)
        SIZE.labels(self.model, ALL).inc()
        self._wake.set()
        started = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.shield(entry.admitted), self._s.queue_timeout)
        except TimeoutError:
            if not (entry.admitted.done() and not entry.admitted.cancelled()):
                entry.admitted.cancel()
                CANCELLED.labels(self.model, ALL).inc()
                raise errors.RouterError(
                    504, "Request processing timed out in queue", type="server_error",
                    code="queue_timeout", reason="scheduling",
                ) from None  # fmt: skip
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not entry.admitted.cancelled() or (task is not None and task.cancelling()):
                raise
            # the dispatcher found the client gone, or the model's last route went away
            raise errors.RouterError(
                503, "Client disconnected while waiting in queue", type="server_error",
                code="client_disconnected", reason="scheduling",
            ) from None  # fmt: skip
        WAITED.labels(self.model, ALL).observe(time.perf_counter() - started)

    def release(self) -> None:
        self.inflight -= 1
        INFLIGHT.labels(self.model).set(self.inflight)
        if self._s.max_concurrent > 0:
            self._wake.set()

    def _pop(self) -> bool:
        """Admit the best waiting request; False when none is waiting."""
        while self._heap:
            entry = heapq.heappop(self._heap)
            SIZE.labels(self.model, ALL).dec()
            if entry.admitted.done():
                continue  # timed out meanwhile
            if entry.gone():
                entry.admitted.cancel()
                CANCELLED.labels(self.model, ALL).inc()
                continue
            entry.admitted.set_result(None)  # the request now runs and calls release() when done
            self.inflight += 1
            INFLIGHT.labels(self.model).set(self.inflight)
            DEQUEUED.labels(self.model, ALL).inc()
            return True
        return False

    async def _dispatch(self) -> None:
        interval = 1.0 / self._s.max_qps
        while True:
            if not self._heap:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._s.max_concurrent > 0:
                while self.inflight < self._s.max_concurrent and self._pop():
                    pass
                self._wake.clear()
                await self._wake.wait()  # a release or an arrival
            else:
                self._pop()
                await asyncio.sleep(interval)

    def close(self) -> None:
        self._task.cancel()
        for entry in self._heap:
            if not entry.admitted.done():
                entry.admitted.cancel()
        self._heap.clear()


Publish = Callable[[str, bytes], Awaitable[None]]


class Fairness:
    """The queues of every model, the shared usage tracker and its NATS exchange."""

    def __init__(self, settings: FairnessSettings, publish: Publish | None = None, replica: str = "") -> None:
        self.settings = settings
        self.tracker = TokenTracker(settings)
        self._queues: dict[str, FairQueue] = {}
        self._publish = publish
        self._replica = replica or os.urandom(6).hex()

    def queue(self, model: str) -> FairQueue:
        queue = self._queues.get(model)
        if queue is None:
            queue = self._queues[model] = FairQueue(model, self.tracker, self.settings)
        return queue

    def models(self) -> list[str]:
        return list(self._queues)

    def forget_model(self, model: str) -> None:
        queue = self._queues.pop(model, None)
        if queue is not None:
            queue.close()

    async def record(self, user: str, model: str, input_tokens: int, output_tokens: int) -> None:
        """Charge a completed request to its user here and, through NATS, on every other replica."""
        at = time.time()
        self.tracker.record(user, model, input_tokens, output_tokens, at)
        USAGE.labels("local").inc()
        if self._publish is not None and user:
            message = {"replica": self._replica, "user": user, "model": model,
                       "input": input_tokens, "output": output_tokens, "at": at}  # fmt: skip
            try:
                await self._publish(USAGE_SUBJECT, orjson.dumps(message))
            except Exception as exc:  # usage exchange is best effort; the local tracker has it
                log.warning("usage publish failed: %r", exc)

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

    def close(self) -> None:
        for queue in self._queues.values():
            queue.close()
        self._queues.clear()
