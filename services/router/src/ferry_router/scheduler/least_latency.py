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


class LeastLatency:
    name = "least-latency"

    def __init__(self, args: dict[str, Any] | None = None) -> None:
        self.factor = validate_factor(args)

    def score(self, ctx: SchedulingContext, endpoints: Sequence[Endpoint]) -> list[float]:
        # Runs per request on every candidate: one pass reads each endpoint once, and the arithmetic
        # is written out (``1.0 if x < 1.0 else x`` is ``max(x, 1.0)``, NaN included) -- the same
        # floats as the formula above, at a third of the calls.
        ttfts: list[float] = []  # projected; 0.0 where unmeasured
        tpots: list[float] = []
        for e in endpoints:
            m = e.metrics
            load = m.running + m.waiting
            now = load + e.unsampled
            growth = (1.0 if now < 1.0 else now) / (1.0 if load < 1.0 else load)
            f, p = m.ttft * growth, m.tpot * growth
            if not (f > 0 and p > 0):
                f = p = 0.0
            ttfts.append(f)
            tpots.append(p)
        known_f = [f for f in ttfts if f > 0]
        if not known_f:
            return [50.0] * len(endpoints)
        known_p = [p for p in tpots if p > 0]
        lo_f, hi_f, lo_p, hi_p = min(known_f), max(known_f), min(known_p), max(known_p)
        span_f, span_p, w_f, w_p = hi_f - lo_f, hi_p - lo_p, self.factor, 1 - self.factor
        flat_f, flat_p = hi_f == lo_f, hi_p == lo_p
        return [
            float(
                int(
                    w_f * (100.0 if flat_f else 100.0 * (hi_f - f) / span_f)
                    + w_p * (100.0 if flat_p else 100.0 * (hi_p - p) / span_p)
                )
            )
            if f > 0
            else 50.0
            for f, p in zip(ttfts, tpots, strict=True)
        ]
