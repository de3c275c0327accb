"""``prefix-cache``: prefer endpoints that recently served a request with the same prompt prefix.

The prompt is cut into byte blocks of ``blockSizeToHash`` (at most ``maxBlocksToMatch``) and
chain-hashed with xxhash64 seeded by the model name (``h_i = xxh64(str(h_{i-1})  +  block_i)``),
exactly as Kthena does. The router remembers, per endpoint, the last ``maxHashCacheSize`` hashes
it sent there (LRU); an endpoint whose longest shared prefix covers k of n blocks scores floor(100*k/n).

A prompt is learned when its request is sent (as llm-d's prefix scorer does in its pre-request
hook), not when the answer ends as in Kthena: the engine holds the prefix from its prefill on, and
a prefix's next requests, sent while the first is still being answered, would otherwise look new
and be prefilled again on the least loaded endpoint. When another endpoint answers instead (a
retry), the prompt moves to the one that answered.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container, Mapping, Sequence
from typing import Any

import xxhash
from prometheus_client import Counter, Gauge

from ferry_router.loop_metrics import LoopHistogram
from ferry_router.scheduler.framework import SchedulingContext
from ferry_router.state.table import Endpoint

MATCH_RATIO = LoopHistogram(
    "kthena_router_prefix_cache_match_ratio",
    "Best prefix match ratio per scheduled request.",
    ["model"],
    buckets=(0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1),
)
EVICTIONS = Counter("kthena_router_prefix_cache_evictions_total", "Prefix-cache LRU evictions.", ["model"])
ENTRIES = Gauge("kthena_router_prefix_cache_entries", "Prefix-cache entries held by the router.")

_SENT_TO = "prefix_sent_to"  # scratch: the endpoint the request was sent to (learned there)
_DEFAULTS = {"blockSizeToHash": 64, "maxBlocksToMatch": 128, "maxHashCacheSize": 50000, "topKMatches": 5}


def hash_prompt(model: str, prompt: str, block_size: int, max_blocks: int) -> list[int]:
    data = prompt.encode()
    prev = xxhash.xxh64_intdigest(model.encode())
    hashes: list[int] = []
    for start in range(0, min(len(data), block_size * max_blocks), block_size):
        prev = xxhash.xxh64_intdigest(b"%d%b" % (prev, data[start : start + block_size]))
        hashes.append(prev)
    return hashes


class PrefixStore:
    """model → hash → endpoints, with a bounded LRU of (model, hash) per endpoint."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._owners: dict[str, dict[int, set[str]]] = {}
        self._lru: dict[str, OrderedDict[tuple[str, int], None]] = {}
        self._size = 0
        ENTRIES.set_function(lambda: self._size)

    def add(self, model: str, hashes: Sequence[int], endpoint: str) -> None:
        lru = self._lru.setdefault(endpoint, OrderedDict())
        owners = self._owners.setdefault(model, {})
        for h in hashes:
            key = (model, h)
            if key in lru:
                lru.move_to_end(key)
                continue
            lru[key] = None
            self._size += 1
            holders = owners.get(h)
            if holders is None:
                owners[h] = {endpoint}
            else:
                holders.add(endpoint)
            if len(lru) > self.capacity:
                (old_model, old_hash), _ = lru.popitem(last=False)
                self._size -= 1
                self._drop(old_model, old_hash, endpoint)
                EVICTIONS.labels(old_model).inc()

    def _drop(self, model: str, h: int, endpoint: str) -> None:
        owners = self._owners.get(model, {})
        holders = owners.get(h)
        if holders is not None:
            holders.discard(endpoint)
            if not holders:
                del owners[h]

    def discard(self, model: str, hashes: Sequence[int], endpoint: str) -> None:
        """Forget that ``endpoint`` holds these hashes (a request sent there was answered elsewhere)."""
        lru = self._lru.get(endpoint)
        if lru is None:
            return
        for h in hashes:
            key = (model, h)
            if key in lru:
                del lru[key]
                self._size -= 1
                self._drop(model, h, endpoint)

    def remove_endpoint(self, endpoint: str) -> None:
        for model, h in self._lru.pop(endpoint, OrderedDict()):
            self._size -= 1
            self._drop(model, h, endpoint)

    def match(
        self, model: str, hashes: Sequence[int], candidates: Container[str], top_k: int
    ) -> dict[str, int]:
        """Endpoint → number of leading blocks it holds (longest first, at most ``top_k``)."""
        owners = self._owners.get(model)
        found: dict[str, int] = {}
        if not owners:
            return found
        for i in range(len(hashes) - 1, -1, -1):
            for endpoint in owners.get(hashes[i], ()):
                if endpoint in candidates and endpoint not in found:
                    found[endpoint] = i + 1
                    if len(found) >= top_k:
                        return found
        return found

    def __len__(self) -> int:
        return self._size


class PrefixCache:
    name = "prefix-cache"

    def __init__(self, args: dict[str, Any] | None = None) -> None:
        values = dict(_DEFAULTS)
        for key, default in _DEFAULTS.items():
            try:
                value = int((args or {}).get(key, default))
            except (TypeError, ValueError):
                value = default
            values[key] = value if value > 0 else default
        self.block_size = values["blockSizeToHash"]
        self.max_blocks = values["maxBlocksToMatch"]
        self.top_k = values["topKMatches"]
        self.store = PrefixStore(values["maxHashCacheSize"])

    def _hashes(self, ctx: SchedulingContext) -> list[int]:
        cached = ctx.scratch.get("prefix_hashes")
        if cached is None:
            cached = hash_prompt(ctx.model, ctx.prompt, self.block_size, self.max_blocks)
            ctx.scratch["prefix_hashes"] = cached
        return cached  # type: ignore[return-value]

    def score(self, ctx: SchedulingContext, endpoints: Sequence[Endpoint]) -> list[float]:
        hashes = self._hashes(ctx)
        if not hashes:
            return [0.0] * len(endpoints)
        found = ctx.scratch.pop("prefix_nominees", None)  # this rank's nominees (one use: PD ranks twice)
        if found is None:
            found = self.store.match(ctx.model, hashes, {e.key for e in endpoints}, self.top_k)
        assert isinstance(found, dict)
        n = len(hashes)
        MATCH_RATIO.labels(ctx.metrics_model).observe(max(found.values(), default=0) / n)
        if not found:
            return [0.0] * len(endpoints)
        # at most topKMatches endpoints score above 0: their scores once, then a lookup per endpoint
        scores = {key: float(int(blocks / n * 100)) for key, blocks in found.items()}
        return [scores.get(e.key, 0.0) for e in endpoints]

    def nominate(self, ctx: SchedulingContext, members: Mapping[str, Endpoint]) -> list[Endpoint]:
        """The (at most ``topKMatches``) members holding the longest prefix of this prompt: the
        endpoints this plugin would score highest, found from the hash index without a scan."""
        hashes = self._hashes(ctx)
        if not hashes:
            return []
        found = self.store.match(ctx.model, hashes, members, self.top_k)
        # The candidates of this rank include these (unless a filter dropped one), so they are also
        # the top matches among the candidates: the score that follows reuses them.
        ctx.scratch["prefix_nominees"] = found
        return [members[key] for key in found]

    def on_dispatch(self, ctx: SchedulingContext, endpoint: Endpoint) -> None:
        hashes = self._hashes(ctx)
        if hashes:
            self.store.add(ctx.model, hashes, endpoint.key)
            ctx.scratch[_SENT_TO] = endpoint.key

    def on_served(self, ctx: SchedulingContext, endpoints: Sequence[Endpoint]) -> None:
        """The endpoints that answered (a PD pair's two; on the aggregated path the one sent to,
        already learned, unless a retry moved the request)."""
        hashes = self._hashes(ctx)
        if not hashes:
            return
        sent_to = ctx.scratch.get(_SENT_TO)
        for endpoint in endpoints:
            if endpoint.key != sent_to:
                self.store.add(ctx.model, hashes, endpoint.key)
        if isinstance(sent_to, str) and all(e.key != sent_to for e in endpoints):
            self.store.discard(ctx.model, hashes, sent_to)

    def forget(self, endpoint: Endpoint) -> None:
        self.store.remove_endpoint(endpoint.key)
