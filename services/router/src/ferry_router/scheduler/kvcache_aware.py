"""``kvcache-aware``: prefer the endpoint whose engine already holds the prompt's leading KV blocks.

Kthena's plugin (spec/router.md §7.7) with the KV index fed from the bus instead of Redis: the
prompt is tokenized by one candidate engine's ``/tokenize`` (vLLM or SGLang body), its tokens are
cut into blocks of ``blockSizeToHash`` (at most ``maxBlocksToMatch``) and hashed as the runtime
sidecar hashes what the engines cache (:func:`ferry_schemas.kv.token_block_hashes`, chained, so a
match is a real prefix match). An endpoint holding the first k of n blocks scores
``int(100*k/n)``; one without block 0 scores 0.

A request for a LoRA adapter (its route matched ``loraAdapters``, or an engine lists the name as an
adapter in ``/v1/models``) is hashed from :func:`ferry_schemas.kv.lora_root` of the adapter's name,
as the sidecars key the blocks an engine stores for that adapter (vLLM's ``BlockStored.lora_id``
/ ``lora_name``; ``ferry_runtime.lora_names``): it matches the adapter's KV on every pod, whatever
id each engine gave the adapter, and never the base model's.

Ferry extension: ``pendingTTLSeconds`` (default 10; 0 turns it off, as Kthena has it): the blocks of
a prompt this router sends to a pod count as held there for that long, or until the pod's events
evict them (:meth:`KvIndex.expect`) -- the events only list a prefix once the pod has queued and
prefilled it, and meanwhile the prefix's next requests would go elsewhere and be prefilled again.

Ferry extension, the **affinity filter** (``kvcache-aware`` enabled under ``Filter`` too): keep the
endpoints holding the longest cached prefix of the prompt (when it covers at least ``minMatchRatio``
of its blocks, default 0.5), so the scorers choose among the holders; but when every holder has
requests waiting and an endpoint is underused -- nothing waiting and fewer requests in flight than
``underusedInflightRatio`` (default 0.25) of the candidates' mean -- keep the underused ones
instead. A prompt no one holds goes to the endpoints whose caches hold the fewest blocks (within
one prompt's worth). A prefix then stays with its holders however loaded they are, unless an
engine would otherwise idle beside them, and new prefixes spread over the caches
(:func:`affinity_keep`; bench/routing/README.md, "The affinity filter").

Tokenization is asynchronous, so it runs in :meth:`prepare` before the (synchronous) scoring.
A failed tokenization scores every endpoint 0 and counts ``..._errors_total{stage="tokenize"}``.

Ferry extension: ``localTokenizer: <name>`` tokenizes in the router instead, with no round trip,
when the router has the engines' own tokenizer (:data:`LOCAL_TOKENIZERS`; today the engine
simulator's, ``ferry-mock-engine``). Its time is observed in the same tokenize histogram. An
unknown name is a configuration error (:func:`validate_tokenizer`), not a silent fallback.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
from ferry_schemas import sim_tokenizer
from ferry_schemas.kv import ROOT_HASH, lora_root, token_block_hashes
from prometheus_client import Counter

from ferry_router.loop_metrics import LoopHistogram
from ferry_router.scheduler.framework import SchedulingContext
from ferry_router.state.kv_index import KvIndex
from ferry_router.state.table import Endpoint

log = logging.getLogger(__name__)

_RATIO_BUCKETS = (0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
MATCH_RATIO = LoopHistogram(
    "kthena_router_kvcache_aware_match_ratio",
    "Best KV-cache prefix match ratio per scheduled request.",
    ["model"],
    buckets=_RATIO_BUCKETS,
)
TOKENIZE_DURATION = LoopHistogram(
    "kthena_router_kvcache_aware_tokenize_duration_seconds",
    "Time to tokenize a prompt through an engine's /tokenize.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
INDEX_DURATION = LoopHistogram(
    "kthena_router_kvcache_aware_index_duration_seconds",
    "Time to look a prompt's blocks up in the KV index (Kthena: ..._redis_duration_seconds).",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
ERRORS = Counter("kthena_router_kvcache_aware_errors_total", "kvcache-aware failures.", ["model", "stage"])
UNSUPPORTED_ENGINE = Counter(
    "kthena_router_tokenizer_unsupported_engine_total",
    "Requests whose candidates had no engine with a /tokenize this router can call.",
    ["model", "engine"],
)

_DEFAULTS = {"blockSizeToHash": 16, "maxBlocksToMatch": 128}
DEFAULT_PENDING_TTL = 10.0
DEFAULT_MIN_MATCH = 0.5
DEFAULT_UNDERUSED = 0.25
_ENGINES = ("vllm", "sglang")
TOKENS_KEY = "kvcache_hashes"
MATCHED_KEY = "kvcache_matched"  # the filter's index lookup, for the scoring that follows it

LocalTokenizer = Callable[[dict[str, Any]], list[int]]
LOCAL_TOKENIZERS: dict[str, LocalTokenizer] = {"ferry-mock-engine": sim_tokenizer.tokenize}


def validate_tokenizer(args: dict[str, Any]) -> None:
    """``ValueError`` naming the field when ``localTokenizer`` names no tokenizer this router has."""
    name = args.get("localTokenizer")
    if name is not None and name not in LOCAL_TOKENIZERS:
        raise ValueError(
            f"scheduler.pluginConfig[kvcache-aware].args.localTokenizer: unknown tokenizer {name!r}; "
            f"known: {', '.join(sorted(LOCAL_TOKENIZERS))}"
        )


def validate_args(args: dict[str, Any]) -> None:
    """``ValueError`` naming the field for a configuration this plugin refuses (at load)."""
    validate_tokenizer(args)
    _seconds(args, "pendingTTLSeconds", DEFAULT_PENDING_TTL)
    _ratio(args, "minMatchRatio", DEFAULT_MIN_MATCH)
    _ratio(args, "underusedInflightRatio", DEFAULT_UNDERUSED)


def _number(
    args: dict[str, Any], key: str, default: float, valid: Callable[[float], bool], want: str
) -> float:
    """``args[key]`` as a number ``valid`` accepts; ``ValueError`` naming the field otherwise (fatal at
    load)."""
    raw = args.get(key, default)
    try:
        value = float(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"kvcache-aware: {key} {raw!r} is not a number") from exc
    if not valid(value):
        raise ValueError(f"kvcache-aware: {key} must be {want}, got {raw!r}")
    return value


def _ratio(args: dict[str, Any], key: str, default: float) -> float:
    return _number(args, key, default, lambda v: 0 <= v <= 1, "a number from 0 to 1")


def _seconds(args: dict[str, Any], key: str, default: float) -> float:
    return _number(
        args, key, default, lambda v: math.isfinite(v) and v >= 0, "a finite number of seconds >= 0"
    )


def affinity_keep(
    held: Sequence[int],
    blocks: int,
    waiting: Sequence[float],
    inflight: Sequence[int],
    footprint: Sequence[int],
    min_match: float = DEFAULT_MIN_MATCH,
    underused: float = DEFAULT_UNDERUSED,
) -> list[int]:
    """Which candidates the affinity filter keeps, by position.

    ``held``: leading blocks of the prompt's ``blocks`` each candidate holds; ``waiting``: its
    engine's waiting requests as last read; ``inflight``: the requests this router has there;
    ``footprint``: the blocks it holds or was sent (:meth:`KvIndex.footprint`).

    * A new prompt (no candidate holds ``min_match`` of it) goes to the candidates holding the
      fewest blocks, within one prompt's worth of the fewest (SGLang's cache-aware router sends it
      to the smallest tree): new prefixes spread over the caches, not by the load of the moment.
    * Otherwise the holders of the longest prefix, unless every holder queues and some candidate is
      underused (nothing waiting, fewer in flight than ``underused`` times the mean): then those.
    """
    top = max(held, default=0)
    if top <= 0 or top < min_match * blocks:
        fewest = min(footprint) + blocks
        return [i for i, f in enumerate(footprint) if f <= fewest]
    holders = [i for i, h in enumerate(held) if h == top]
    if all(waiting[i] > 0 for i in holders):
        bar = underused * sum(inflight) / len(inflight)
        idle = [i for i, w in enumerate(waiting) if w <= 0 and inflight[i] < bar]
        if idle:
            return idle
    return holders


def _positive(args: dict[str, Any], key: str, default: int) -> int:
    try:
        value = int(args.get(key, default))
    except (TypeError, ValueError):
        return default
    return value if value > 0 else default


def _port(args: dict[str, Any], key: str) -> int | None:
    """An explicit tokenizer port (1..65535), else ``None``: the endpoint's own workload port."""
    if key not in args:
        return None
    try:
        value = int(args[key])
    except (TypeError, ValueError):
        return None
    return value if 0 < value < 65536 else None


def chain_root(ctx: SchedulingContext, endpoints: Sequence[Endpoint]) -> int:
    """Where the prompt's block chain starts: the base model's root, or the adapter's."""
    adapter = ctx.upstream_model
    if ctx.lora or any(
        m.models is not None and adapter in m.models and adapter not in m.base_models
        for m in (e.metrics for e in endpoints)
    ):
        return lora_root(adapter)
    return ROOT_HASH


def tokenize_body(engine: str, model: str, body: dict[str, Any] | None, prompt: str) -> dict[str, Any]:
    """vLLM's or SGLang's ``/tokenize`` body for a chat or a completion request (spec §7.7)."""
    messages = body.get("messages") if body else None
    vllm = engine == "vllm"
    if isinstance(messages, list):
        out: dict[str, Any] = {"model": model, "messages": messages, "add_special_tokens": False}
        if vllm:
            out |= {"add_generation_prompt": True, "return_token_strs": False}
        return out
    out = {"model": model, "prompt": prompt, "add_special_tokens": True}
    if vllm:
        out["return_token_strs"] = False
    return out


class KVCacheAware:
    name = "kvcache-aware"

    def __init__(self, args: dict[str, Any] | None = None) -> None:
        args = args or {}
        self.block_size = _positive(args, "blockSizeToHash", _DEFAULTS["blockSizeToHash"])
        self.max_blocks = _positive(args, "maxBlocksToMatch", _DEFAULTS["maxBlocksToMatch"])
        self.ports = {"vllm": _port(args, "vllmTokenizerPort"), "sglang": _port(args, "sglangTokenizerPort")}
        validate_tokenizer(args)
        self.local: LocalTokenizer | None = LOCAL_TOKENIZERS.get(args.get("localTokenizer", ""))
        self.timeout = aiohttp.ClientTimeout(total=5.0)
        self.index = KvIndex(pending_ttl=_seconds(args, "pendingTTLSeconds", DEFAULT_PENDING_TTL))
        self.min_match = _ratio(args, "minMatchRatio", DEFAULT_MIN_MATCH)
        self.underused = _ratio(args, "underusedInflightRatio", DEFAULT_UNDERUSED)
        self._session: aiohttp.ClientSession | None = None
        self._rng = random.Random()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _tokenizers(self, endpoints: Sequence[Endpoint]) -> list[tuple[Endpoint, str, int]]:
        """Candidates with an engine this router can tokenize with, from a random start."""
        if not endpoints:
            return []
        start = self._rng.randrange(len(endpoints))
        ordered = [*endpoints[start:], *endpoints[:start]]
        usable: list[tuple[Endpoint, str, int]] = []
        for endpoint in ordered:
            engine = endpoint.engine.lower()
            if engine in _ENGINES:
                usable.append((endpoint, engine, self.ports[engine] or endpoint.port))
        return usable

    async def prepare(self, ctx: SchedulingContext, endpoints: Sequence[Endpoint]) -> None:
        """Tokenize the prompt (one engine, one retry on another) and hash its blocks into ``ctx``."""
        if TOKENS_KEY in ctx.scratch:
            return
        ctx.scratch[TOKENS_KEY] = []
        root = chain_root(ctx, endpoints)
        if self.local is not None:
            self._tokenize_locally(ctx, self.local, root)
            return
        tokenizers = self._tokenizers(endpoints)
        if not tokenizers:
            engine = endpoints[0].engine if endpoints else "none"
            UNSUPPORTED_ENGINE.labels(ctx.metrics_model, engine).inc()
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        start = time.perf_counter()
        for endpoint, engine, port in tokenizers[:2]:
            host = f"[{endpoint.pod.ip}]" if ":" in endpoint.pod.ip else endpoint.pod.ip
            body = tokenize_body(engine, ctx.upstream_model, ctx.body, ctx.prompt)
            try:
                async with self._session.post(f"http://{host}:{port}/tokenize", json=body) as resp:
                    if resp.status != 200:
                        raise ValueError(f"/tokenize answered {resp.status}: {(await resp.text())[:200]}")
                    answer = await resp.json(content_type=None)
                tokens = answer["tokens"]
                if not isinstance(tokens, list):
                    raise ValueError("/tokenize answered no token list")
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
                ERRORS.labels(ctx.metrics_model, "tokenize").inc()
                log.warning("tokenize via %s failed: %r", endpoint.key, exc)
                continue
            TOKENIZE_DURATION.labels(ctx.metrics_model).observe(time.perf_counter() - start)
            ctx.scratch[TOKENS_KEY] = token_block_hashes(tokens, self.block_size, self.max_blocks, root)
            return

    def _tokenize_locally(self, ctx: SchedulingContext, tokenizer: LocalTokenizer, root: int) -> None:
        start = time.perf_counter()
        messages = ctx.body.get("messages") if ctx.body else None
        body = {"messages": messages} if isinstance(messages, list) else {"prompt": ctx.prompt}
        try:
            tokens = tokenizer(body)
        except ValueError as exc:
            ERRORS.labels(ctx.metrics_model, "tokenize").inc()
            log.warning("local tokenization failed: %r", exc)
            return
        TOKENIZE_DURATION.labels(ctx.metrics_model).observe(time.perf_counter() - start)
        ctx.scratch[TOKENS_KEY] = token_block_hashes(tokens, self.block_size, self.max_blocks, root)

    def filter(self, ctx: SchedulingContext, endpoints: list[Endpoint]) -> list[Endpoint]:
        """The affinity filter (:func:`affinity_keep`); everyone when the prompt has no blocks."""
        hashes: list[int] = ctx.scratch.get(TOKENS_KEY) or []  # type: ignore[assignment]
        if not hashes or len(endpoints) < 2:
            return endpoints
        found = ctx.scratch[MATCHED_KEY] = self.index.match(hashes, {e.key for e in endpoints})
        kept = affinity_keep(
            [found.get(e.key, 0) for e in endpoints],
            len(hashes),
            [e.metrics.waiting for e in endpoints],
            [e.inflight for e in endpoints],
            [self.index.footprint(e.key) for e in endpoints],
            self.min_match,
            self.underused,
        )
        return endpoints if len(kept) == len(endpoints) else [endpoints[i] for i in kept]

    def score(self, ctx: SchedulingContext, endpoints: Sequence[Endpoint]) -> list[float]:
        hashes: list[int] = ctx.scratch.get(TOKENS_KEY) or []  # type: ignore[assignment]
        if not hashes:
            MATCH_RATIO.labels(ctx.metrics_model).observe(0.0)
            return [0.0] * len(endpoints)
        # the filter looked the same prompt up over these endpoints or more (one rank: filters first)
        found: dict[str, int] | None = ctx.scratch.pop(MATCHED_KEY, None)  # type: ignore[assignment]
        if found is None:
            start = time.perf_counter()
            found = self.index.match(hashes, {e.key for e in endpoints})
            INDEX_DURATION.labels(ctx.metrics_model).observe(time.perf_counter() - start)
        n = len(hashes)
        matched = [found.get(e.key, 0) for e in endpoints]
        MATCH_RATIO.labels(ctx.metrics_model).observe(max(matched, default=0) / n)
        return [float(int(k / n * 100)) for k in matched]

    def on_dispatch(self, ctx: SchedulingContext, endpoint: Endpoint) -> None:
        hashes: list[int] = ctx.scratch.get(TOKENS_KEY) or []  # type: ignore[assignment]
        self.index.expect(endpoint.key, hashes)

    def forget(self, endpoint: Endpoint) -> None:
        self.index.drop_pod(endpoint.key)
