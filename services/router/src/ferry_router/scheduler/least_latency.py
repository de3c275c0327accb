"""``least-latency``: prefer low time-to-first-token and time-per-output-token.

Endpoints without measurements score 50. Others are scaled min→100, max→0 per measure and mixed
as ``a*TTFT + (1 - a)*TPOT`` with a = ``TTFTTPOTWeightFactor`` (0.5 by default, must be in [0, 1]).

The measures are means over the last reading interval that had samples; both grow with the
engine's load, so each is projected from the load it was measured at to the load now:
``x * max(now, 1) / max(then, 1)``, where ``then`` is running + waiting at the reading that brought
the samples (``ttft_load`` / ``tpot_load``) and ``now`` is running + waiting at the latest reading
plus the requests this router sent since (:attr:`Endpoint.unsampled`). Read raw, as Kthena does,
the lowest reading draws every request until the next one, and the engines take turns being swamped.
Scaled from the latest reading's load instead, an engine that drew nothing for a while kept the
latency it was last measured at while its queue drained, and stayed avoided (``bench/routing``).
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
            now = m.running + m.waiting + e.unsampled
            now = 1.0 if now < 1.0 else now
            ttft_then, tpot_then = m.ttft_load, m.tpot_load
            f = m.ttft * now / (1.0 if ttft_then < 1.0 else ttft_then)
            p = m.tpot * now / (1.0 if tpot_then < 1.0 else tpot_then)
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
