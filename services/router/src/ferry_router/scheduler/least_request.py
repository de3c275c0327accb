"""``least-request``: filter out endpoints with a long engine queue; prefer few requests in flight.

Score (Kthena's current formula): ``base = inflight + 100*max(inflight - running, 0)``; the busiest
endpoint scores 0, an idle set scores 100 each. ``inflight - running`` stands for the requests the
engine has not started, weighed 100 to one.

The queue term reads the engine's gauges, taken up to an interval ago, and counts only a real queue:
requests waiting at a reading when the engine was full, with at least :data:`FULL_KV_USAGE` of its
KV cache in use (vLLM admits waiting requests while blocks allow). Then ``running`` stays as read
and what this router sent since waits too. In an engine that was not full, what waited at the
reading were the arrivals of the step under way (a long prefill step), admitted at the next one:
they run, and so do the requests this router sent there since, net of those it saw end
(:attr:`Endpoint.unsampled`) -- ``running`` is projected to now, as gpu-usage and least-latency
project their gauges, and never below 0: a reading scraped before a request reached the engine but
applied after the router sent it counts that request as seen, and once it ends the projection would
go negative (and an idle holder of a prompt's prefix scored as if it queued one; CI, test_kv_routing).
What is left of ``inflight - running`` is what the engine did not report at all (on its way there
at the reading), as in Kthena.

Read raw, as Kthena does, the gauge makes every request sent since the last reading count as 100
waiting ones, and one that ended since as a free slot: right after a reading the endpoint that just
took requests scores 0 and one whose requests just ended scores near 100, which outweighs a
kvcache-aware match (bench/routing/README.md). An engine never read (or whose reading went stale)
is judged by the router's in-flight count alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ferry_router.scheduler.framework import SchedulingContext
from ferry_router.state.table import Endpoint

DEFAULT_MAX_WAITING = 10
FULL_KV_USAGE = 0.9
"""KV-cache usage (0..1) at which an engine's waiting requests are a queue, not a step's arrivals
(``bench/routing/offline.py``: 0.9 and 0.98 pick alike; 0.7 calls transient queues full)."""


class LeastRequest:
    name = "least-request"

    def __init__(self, args: dict[str, Any] | None = None) -> None:
        raw = (args or {}).get("maxWaitingRequests", DEFAULT_MAX_WAITING)
        try:
            value = int(raw)
        except (TypeError, ValueError):
            value = DEFAULT_MAX_WAITING
        self.max_waiting = value if value > 0 else DEFAULT_MAX_WAITING

    def filter(self, ctx: SchedulingContext, endpoints: list[Endpoint]) -> list[Endpoint]:
        max_waiting = self.max_waiting
        return [e for e in endpoints if e.metrics.waiting < max_waiting]

    def score(self, ctx: SchedulingContext, endpoints: Sequence[Endpoint]) -> list[float]:
        bases = []
        for e in endpoints:
            m, inflight = e.metrics, e.inflight
            full = m.waiting > 0 and m.kv_cache_usage >= FULL_KV_USAGE
            running = m.running if full else m.running + m.waiting + e.unsampled
            running = running if running > 0 else 0
            bases.append(inflight + (100 * (inflight - running) if inflight > running else 0))
        top = max(bases)
        if top <= 0:
            return [100.0] * len(bases)
        return [float(int((top - b) / top * 100)) for b in bases]
