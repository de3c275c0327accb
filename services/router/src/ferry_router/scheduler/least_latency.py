"""``least-latency``: prefer low time-to-first-token and time-per-output-token.

Each measure is scaled min→100, max→0 over the candidates and the two are mixed as
``a*TTFT + (1 - a)*TPOT`` with a = ``TTFTTPOTWeightFactor`` (0.5 by default, must be in [0, 1]).
With nothing measured anywhere every endpoint scores 50; an endpoint not measured among measured
ones is taken to cost what they cost on average per request queued (:func:`as_the_measured`).

Each measure is what a request sent now would see there, projected onto the queue it would meet:

* from the streams this router relayed there in the last 30 s when it has any
  (:mod:`ferry_router.state.observed_latency`): TTFT per request ahead times the requests awaiting a
  first token there + 1, TPOT per request in flight times the requests in flight + 1;
* otherwise from the engine's histograms, the means over the last reading interval that had
  samples, projected from the load they were measured at to the load now:
  ``x * max(now, 1) / max(then, 1)``, where ``then`` is running + waiting at the reading that
  brought the samples (``ttft_load`` / ``tpot_load``) and ``now`` is running + waiting at the latest
  reading plus the requests this router sent since (:attr:`Endpoint.unsampled`).

Read raw, as Kthena does, the lowest reading draws every request until the next one, and the
engines take turns being swamped; the histograms' means lag by the TTFT itself and describe the
queue their requests met, so even projected they let a burst pile onto one engine. The router's own
measurements see every first token as it passes and the queue each request met (``bench/routing``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ferry_router.scheduler.framework import SchedulingContext
from ferry_router.state import observed_latency
from ferry_router.state.observed_latency import MAX_AGE
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
        # floats as the formulas above, at a third of the calls.
        ttfts: list[float] = []  # projected; 0.0 where unmeasured
        tpots: list[float] = []
        fresh = observed_latency.clock() - MAX_AGE
        for e in endpoints:
            m, seen = e.metrics, e.latency
            now = m.running + m.waiting + e.unsampled
            now = 1.0 if now < 1.0 else now
            if seen.ttft_at > fresh:
                f = seen.ttft_unit * (seen.awaiting_first + 1)
            else:
                then = m.ttft_load
                f = m.ttft * now / (1.0 if then < 1.0 else then)
            if seen.tpot_at > fresh:
                p = seen.tpot_unit * (e.inflight + 1)
            else:
                then = m.tpot_load
                p = m.tpot * now / (1.0 if then < 1.0 else then)
            ttfts.append(f if f > 0 else 0.0)
            tpots.append(p if p > 0 else 0.0)
        if not any(ttfts) and not any(tpots):
            return [50.0] * len(endpoints)
        if not all(ttfts):
            ttfts = as_the_measured([e.latency.awaiting_first + 1 for e in endpoints], ttfts)
        if not all(tpots):
            tpots = as_the_measured([e.inflight + 1 for e in endpoints], tpots)
        return [
            float(int(self.factor * s_f + (1 - self.factor) * s_p))
            for s_f, s_p in zip(scaled(ttfts), scaled(tpots), strict=True)
        ]


UNTRIED = 0.99  # what an unmeasured engine costs, per request queued, against the measured mean


def as_the_measured(queues: list[int], values: list[float]) -> list[float]:
    """Fill each unmeasured (0) value as if its engine cost a shade less (:data:`UNTRIED`) than the
    measured ones cost on average per request in this router's queue there, so an engine not
    measured yet is tried once, before a measured one of the same queue (Kthena scores it 50, so a
    pool whose slowest engine was measured first never tries the others; at the mean itself, a pool
    whose slow engine was measured first would toss a coin between the two until the other had been
    tried). All unmeasured: left as they are."""
    units = [v / q for v, q in zip(values, queues, strict=True) if v > 0]
    if not units:
        return values
    unit = UNTRIED * sum(units) / len(units)
    return [v if v > 0 else unit * q for v, q in zip(values, queues, strict=True)]


def scaled(values: list[float]) -> list[float]:
    """min -> 100, max -> 0; all equal (or all unmeasured) -> 100."""
    lo, hi = min(values), max(values)
    if hi == lo:
        return [100.0] * len(values)
    span = hi - lo
    return [100.0 * (hi - v) / span for v in values]
