"""The scheduling framework (spec §7.1-7.3).

Filters run in order and may drop endpoints (dropping all is an error naming the plugin). Scorers
return one number per endpoint, nominally 0..100; the final score is sum of weight x score. Endpoints
are ranked best first with ties broken at random (Kthena leaves them to Go map order) and the top
five kept, which is also the retry order. PD servers are scheduled as decode first, then the best
prefill endpoint of the same group for each ranked decode endpoint.

Fleet scale (a Ferry extension): with ``sample_size`` k > 0, a server with more than k endpoints is
scheduled over a bounded candidate set -- k endpoints drawn at random plus the endpoints that
:class:`NominatePlugin` scorers ask for (prefix-cache's longest matches) -- so filters and scorers
cost O(k) per request instead of O(endpoints). When every sampled endpoint is filtered out the
filters run again over all endpoints, so sampling never refuses a request that had a taker.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import add
from typing import Any, Protocol, runtime_checkable

from ferry_router.loop_metrics import LoopHistogram, LoopHistogramChild
from ferry_router.state.table import Endpoint, PDSets

TOP_N = 5

PLUGIN_DURATION = LoopHistogram(
    "kthena_router_scheduler_plugin_duration_seconds",
    "Time spent in one scheduler plugin.",
    ["model", "plugin", "type"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5),
)


class SchedulingError(Exception):
    """No endpoint can take the request (every one filtered out, or no PD pair)."""


@dataclass(slots=True)
class SchedulingContext:
    model: str  # the request's model name (metrics label, prefix-cache key)
    upstream_model: str  # the name the engine serves (lora-affinity)
    prompt: str
    metrics_model: str = "unknown"
    scratch: dict[str, object] = field(default_factory=dict)  # per-request plugin cache
    body: dict[str, Any] | None = None  # the parsed request (kvcache-aware tokenizes its messages)
    lora: bool = False  # upstream_model is a LoRA adapter (the route matched its loraAdapters)


@runtime_checkable
class FilterPlugin(Protocol):
    name: str

    def filter(self, ctx: SchedulingContext, endpoints: list[Endpoint]) -> list[Endpoint]: ...


@runtime_checkable
class ScorePlugin(Protocol):
    name: str

    def score(self, ctx: SchedulingContext, endpoints: Sequence[Endpoint]) -> list[float]: ...


@runtime_checkable
class PreparePlugin(Protocol):
    """A scorer that needs I/O before scoring (tokenization); runs once per request, before ``rank``."""

    async def prepare(self, ctx: SchedulingContext, endpoints: Sequence[Endpoint]) -> None: ...


@runtime_checkable
class NominatePlugin(Protocol):
    """A scorer that knows, without scanning the endpoints, which ones it would score highest."""

    def nominate(self, ctx: SchedulingContext, members: Mapping[str, Endpoint]) -> list[Endpoint]: ...


@runtime_checkable
class DispatchPlugin(Protocol):
    """A scorer told where a request is being sent, when it is sent (not when it is answered)."""

    def on_dispatch(self, ctx: SchedulingContext, endpoint: Endpoint) -> None: ...


@runtime_checkable
class PostSchedulePlugin(Protocol):
    def on_served(self, ctx: SchedulingContext, endpoints: Sequence[Endpoint]) -> None: ...


@dataclass(slots=True)
class PDPair:
    decode: Endpoint
    prefill: Endpoint


class Scheduler:
    def __init__(
        self,
        filters: Sequence[FilterPlugin],
        scorers: Sequence[tuple[ScorePlugin, float]],
        rng: random.Random | None = None,
        sample_size: int = 0,
    ) -> None:
        self.filters = list(filters)
        self.sample_size = sample_size
        self.scorers = list(scorers)
        unique = {id(p): p for p in [*self.filters, *(p for p, _ in scorers)]}
        self.plugins: list[object] = list(unique.values())
        """Every plugin once, filters first (a plugin enabled as filter and scorer is one instance)."""
        self.post_hooks = [p for p in self.plugins if isinstance(p, PostSchedulePlugin)]
        self.dispatch_hooks = [p for p in self.plugins if isinstance(p, DispatchPlugin)]
        self.preparers = [p for p in self.plugins if isinstance(p, PreparePlugin)]
        self.nominators = [p for p, _ in scorers if isinstance(p, NominatePlugin)]
        self._rng = rng or random.Random()
        self._timers: dict[str, tuple[list[LoopHistogramChild], list[LoopHistogramChild]]] = {}
        """metrics model -> the duration histograms of (filters, scorers), in plugin order."""

    def _timers_of(self, model: str) -> tuple[list[LoopHistogramChild], list[LoopHistogramChild]]:
        timers = self._timers.get(model)
        if timers is None:
            timers = self._timers[model] = (
                [PLUGIN_DURATION.labels(model, f.name, "filter") for f in self.filters],
                [PLUGIN_DURATION.labels(model, p.name, "score") for p, _ in self.scorers],
            )
        return timers

    async def prepare(self, ctx: SchedulingContext, endpoints: Sequence[Endpoint]) -> None:
        for plugin in self.preparers:
            await plugin.prepare(ctx, endpoints)

    async def close(self) -> None:
        for plugin in self.plugins:
            close = getattr(plugin, "close", None)
            if close is not None:
                await close()

    def _sample(
        self, ctx: SchedulingContext, endpoints: Sequence[Endpoint], members: Mapping[str, Endpoint] | None
    ) -> list[Endpoint]:
        """k random endpoints plus the nominees of :class:`NominatePlugin` scorers (O(k)), in a
        uniformly random order (so ``rank`` needs no shuffle for its random tie-break)."""
        n, k, draw = len(endpoints), self.sample_size, self._rng.random
        # k draws at once, repeats dropped (first kept), then one at a time until k are distinct (k < n:
        # a few redraws at most): the same draws, in the same order, as drawing one at a time
        drawn = dict.fromkeys([int(draw() * n) for _ in range(k)])
        while len(drawn) < k:
            drawn.setdefault(int(draw() * n))
        picked = [endpoints[i] for i in drawn]  # draw order is a random order
        if self.nominators:
            if members is None:
                members = {e.key: e for e in endpoints}
            nominees = [e for plugin in self.nominators for e in plugin.nominate(ctx, members)]
            if nominees:
                seen = set(map(id, picked))  # endpoints are one object per pod
                for endpoint in nominees:
                    if id(endpoint) not in seen:
                        seen.add(id(endpoint))
                        j = int(draw() * (len(picked) + 1))  # inside-out shuffle: still uniform
                        picked.append(endpoint)
                        picked[j], picked[-1] = picked[-1], picked[j]
        return picked

    def _filter(self, ctx: SchedulingContext, candidates: list[Endpoint]) -> list[Endpoint]:
        clock = time.perf_counter
        for flt, timer in zip(self.filters, self._timers_of(ctx.metrics_model)[0], strict=True):
            start = clock()
            candidates = flt.filter(ctx, candidates)
            timer.observe(clock() - start)
            if not candidates:
                raise SchedulingError(f'endpoints have all been filtered out by "{flt.name}"')
        return candidates

    def rank(
        self,
        ctx: SchedulingContext,
        endpoints: Sequence[Endpoint],
        top: int = TOP_N,
        members: Mapping[str, Endpoint] | None = None,
    ) -> list[Endpoint]:
        """Filter, score and rank; raises :class:`SchedulingError` when nothing is left.

        ``members`` (the same endpoints by key, when the caller holds such a map) lets nominating
        plugins resolve their picks without a per-request index."""
        if not endpoints:
            raise SchedulingError("no endpoints")
        shuffled = False
        if 0 < self.sample_size < len(endpoints):
            try:
                candidates = self._filter(ctx, self._sample(ctx, endpoints, members))
                shuffled = True  # filters keep the order
            except SchedulingError:
                candidates = self._filter(ctx, list(endpoints))
        else:
            candidates = self._filter(ctx, list(endpoints))
        if len(candidates) == 1:
            return candidates
        if not shuffled:
            self._rng.shuffle(candidates)  # random tie-break under the stable sort below
        if not self.scorers:
            return candidates[:top]
        totals = [0.0] * len(candidates)
        clock = time.perf_counter
        for (plugin, weight), timer in zip(self.scorers, self._timers_of(ctx.metrics_model)[1], strict=True):
            start = clock()
            scores = plugin.score(ctx, candidates)
            timer.observe(clock() - start)
            if weight == 1:  # x + 1 * v is x + v exactly: the same totals, one multiply fewer
                totals = list(map(add, totals, scores))
            elif weight:
                totals = list(map(add, totals, map(float(weight).__mul__, scores)))
        order = sorted(range(len(candidates)), key=totals.__getitem__, reverse=True)
        return [candidates[i] for i in order[:top]]

    def rank_pd(self, ctx: SchedulingContext, sets: PDSets) -> list[PDPair]:
        """Ranked (decode, prefill) pairs of the same PD group (spec §7.3)."""
        if not sets.decode:
            raise SchedulingError("no decode endpoint found")
        pairs: list[PDPair] = []
        for decode in self.rank(ctx, sets.decode):
            prefill_candidates = sets.prefill_for(decode)
            if not prefill_candidates:
                continue
            try:
                best = self.rank(ctx, prefill_candidates, top=1)
            except SchedulingError:
                continue
            pairs.append(PDPair(decode=decode, prefill=best[0]))
        if not pairs:
            raise SchedulingError("no valid prefill-decode endpoint pairs found")
        return pairs

    def dispatching(self, ctx: SchedulingContext, endpoint: Endpoint) -> None:
        for hook in self.dispatch_hooks:
            hook.on_dispatch(ctx, endpoint)

    def served(self, ctx: SchedulingContext, endpoints: Sequence[Endpoint]) -> None:
        for hook in self.post_hooks:
            hook.on_served(ctx, endpoints)
