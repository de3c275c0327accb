"""``least-request``: filter out endpoints with a long engine queue; prefer few requests in flight.

Score (Kthena's current formula): ``base = inflight + 100*max(inflight - running, 0)``; the busiest
endpoint scores 0, an idle set scores 100 each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ferry_router.scheduler.framework import SchedulingContext
from ferry_router.state.table import Endpoint

DEFAULT_MAX_WAITING = 10


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
            inflight, running = e.inflight, e.metrics.running
            bases.append(inflight + (100 * (inflight - running) if inflight > running else 0))
        top = max(bases)
        if top <= 0:
            return [100.0] * len(bases)
        return [float(int((top - b) / top * 100)) for b in bases]
