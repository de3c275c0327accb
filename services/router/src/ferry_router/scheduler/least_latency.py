"""``least-latency``: prefer low time-to-first-token and time-per-output-token.

Endpoints without measurements score 50. Others are scaled min→100, max→0 per measure and mixed
as ``a*TTFT + (1 - a)*TPOT`` with a = ``TTFTTPOTWeightFactor`` (0.5 by default, must be in [0, 1]).

The measures are means over the engine's last reading interval; both grow with its load, so each is
projected to now by the load this router added since (:attr:`Endpoint.unsampled`):
``x * max(load + unsampled, 1) / max(load, 1)`` with ``load = running + waiting`` at the reading.
Read raw, as Kthena does, the lowest reading draws every request until the next one, and the
engines take turns being swamped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ferry_router.scheduler.framework import SchedulingContext
from ferry_router.state.table import Endpoint


def validate_factor(args: dict[str, Any] | None) -> float:
    """a from the plugin args; raises ``ValueError`` for values outside [0, 1] (fatal at load)."""
    raw = (args or {}).get("TTFTTPOTWeightFactor", 0.5)
    try:
        value = float(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"least-latency: TTFTTPOTWeightFactor {raw!r} is not a number") from exc
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"least-latency: TTFTTPOTWeightFactor must be within [0, 1], got {raw!r}")
    return value


def _projection(endpoint: Endpoint) -> float:
    """How much the engine's latency has grown since its reading, by its load then and now."""
    load = endpoint.metrics.running + endpoint.metrics.waiting
    return max(load + endpoint.unsampled, 1.0) / max(load, 1.0)


def _scale(value: float, low: float, high: float) -> float:
    return 100.0 if high == low else 100.0 * (high - value) / (high - low)


class LeastLatency:
    name = "least-latency"

    def __init__(self, args: dict[str, Any] | None = None) -> None:
        self.factor = validate_factor(args)

    def score(self, ctx: SchedulingContext, endpoints: Sequence[Endpoint]) -> list[float]:
        growth = [_projection(e) for e in endpoints]
        readings = [(e.metrics.ttft * g, e.metrics.tpot * g) for e, g in zip(endpoints, growth, strict=True)]
        measured = [(f, p) for f, p in readings if f > 0 and p > 0]
        if not measured:
            return [50.0] * len(endpoints)
        ttfts = [f for f, _ in measured]
        tpots = [p for _, p in measured]
        lo_f, hi_f, lo_p, hi_p = min(ttfts), max(ttfts), min(tpots), max(tpots)
        w_f, w_p = self.factor, 1 - self.factor
        scores = []
        for f, p in readings:
            if f <= 0 or p <= 0:
                scores.append(50.0)
                continue
            scores.append(float(int(w_f * _scale(f, lo_f, hi_f) + w_p * _scale(p, lo_p, hi_p))))
        return scores
