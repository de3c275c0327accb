"""Token rate limits from ``ModelRoute.spec.rateLimit`` (spec §8), local or across replicas.

A route's limit is a pair of token buckets (input, output) of capacity ``XTokensPerUnit`` that
refill continuously over one ``unit``. Input tokens (the router's estimate) are taken before the
request is proxied; a request is refused while the output bucket is empty, and completion tokens
are charged after the response (which may drive the bucket into debt, so the limit holds).

Buckets belong to the route (``namespace/name``), not to the model string, so LoRA routes are
limited too and two routes never overwrite each other. With ``rateLimit.global`` the bucket lives
in the NATS KV bucket ``ferry_rate_limits`` and every router replica shares it (compare-and-set
updates); the Redis address Kthena needs is ignored. If the KV store cannot be reached the
request is allowed (fail open) and ``ferry_router_rate_limit_store_errors_total`` counts it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import orjson
from ferry_schemas.bus import encode_token
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from prometheus_client import Counter

from ferry_router import errors
from ferry_router.state.resources import RateLimitSpec, Route

log = logging.getLogger(__name__)

STORE_ERRORS = Counter(
    "ferry_router_rate_limit_store_errors_total", "Global rate-limit KV operations that failed (allowed)."
)


class TokenBucket:
    """A continuously refilling bucket; starts full."""

    def __init__(self, capacity: float, unit_seconds: float, now: float | None = None) -> None:
        self.capacity = capacity
        self.rate = capacity / unit_seconds
        self.tokens = capacity
        self.updated = time.monotonic() if now is None else now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def available(self, now: float | None = None) -> float:
        self._refill(time.monotonic() if now is None else now)
        return self.tokens

    def take(self, n: float, now: float | None = None) -> bool:
        """Take ``n`` tokens if they are all there."""
        self._refill(time.monotonic() if now is None else now)
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def charge(self, n: float, now: float | None = None) -> None:
        """Take ``n`` tokens unconditionally (the bucket may go negative: debt)."""
        self._refill(time.monotonic() if now is None else now)
        self.tokens -= n


class SharedBucket:
    """The same bucket, kept in a NATS KV entry ``{"tokens", "at"}`` updated by compare-and-set."""

    def __init__(self, kv: KeyValue, key: str, capacity: float, unit_seconds: float) -> None:
        self._kv = kv
        self.key = key
        self.capacity = capacity
        self.rate = capacity / unit_seconds

    async def _update(self, n: float, *, only_if_enough: bool, check_positive: bool = False) -> bool:
        for _ in range(16):
            now = time.time()
            try:
                entry = await self._kv.get(self.key)
                state = orjson.loads(entry.value or b"{}")
                revision: int | None = entry.revision
                tokens = min(
                    self.capacity, float(state["tokens"]) + max(now - float(state["at"]), 0) * self.rate
                )
            except KeyNotFoundError:
                revision, tokens = None, self.capacity
            if check_positive:
                return tokens >= 1
            allowed = tokens >= n
            if only_if_enough and not allowed:
                return False
            value = orjson.dumps({"tokens": tokens - n, "at": now})
            try:
                if revision is None:
                    await self._kv.create(self.key, value)
                else:
                    await self._kv.update(self.key, value, last=revision)
                return allowed
            except KeyWrongLastSequenceError:
                continue  # another replica moved first: re-read and retry
        raise RuntimeError(f"rate-limit key {self.key} kept changing under contention")

    async def take(self, n: float) -> bool:
        return await self._update(n, only_if_enough=True)

    async def charge(self, n: float) -> None:
        await self._update(n, only_if_enough=False)

    async def has_tokens(self) -> bool:
        return await self._update(0, only_if_enough=False, check_positive=True)


Bucket = TokenBucket | SharedBucket


@dataclass
class RouteLimit:
    spec: RateLimitSpec
    input: Bucket | None
    output: Bucket | None


class RateLimiter:
    """Per-route limits, reconfigured from route events (``RoutingTable.route_listeners``)."""

    def __init__(self, kv: KeyValue | None = None) -> None:
        self._kv = kv
        self._limits: dict[str, RouteLimit] = {}

    def on_route(self, key: str, route: Route | None) -> None:
        spec = route.rate_limit if route is not None else None
        if spec is None:
            self._limits.pop(key, None)
            return
        current = self._limits.get(key)
        if current is not None and current.spec == spec:
            return  # unchanged limit: keep the bucket's state
        self._limits[key] = RouteLimit(
            spec, self._bucket(key, spec, "input"), self._bucket(key, spec, "output")
        )

    def _bucket(self, route_key: str, spec: RateLimitSpec, kind: str) -> Bucket | None:
        capacity = spec.input_per_unit if kind == "input" else spec.output_per_unit
        if capacity is None:
            return None
        if spec.is_global:
            if self._kv is None:
                log.warning(
                    "route %s asks for a global rate limit but no KV store is configured; local", route_key
                )
            else:
                namespace, name = route_key.split("/", 1)
                key = f"{encode_token(namespace)}.{encode_token(name)}.{kind}"
                return SharedBucket(self._kv, key, capacity, spec.unit_seconds)
        return TokenBucket(capacity, spec.unit_seconds)

    def has_limit(self, key: str) -> bool:
        return key in self._limits

    async def admit(self, key: str, model: str, input_tokens: int) -> None:
        """Raise 429 when the route's input or output budget is spent."""
        limit = self._limits.get(key)
        if limit is None:
            return
        try:
            if limit.input is not None and not await _maybe(limit.input.take(input_tokens)):
                raise errors.rate_limited("input", model, _wait_for(limit.input, input_tokens))
            if limit.output is not None and not await _has_tokens(limit.output):
                raise errors.rate_limited("output", model, _wait_for(limit.output, 1))
        except errors.RouterError:
            raise
        except Exception as exc:
            STORE_ERRORS.inc()
            log.warning("rate-limit store unavailable for %s (allowing): %r", key, exc)

    async def record_output(self, key: str, tokens: int) -> None:
        limit = self._limits.get(key)
        if limit is None or limit.output is None or tokens <= 0:
            return
        try:
            await _maybe(limit.output.charge(tokens))
        except Exception as exc:
            STORE_ERRORS.inc()
            log.warning("could not charge %d output tokens to %s: %r", tokens, key, exc)


async def _maybe(value: object) -> object:
    if asyncio.iscoroutine(value):
        return await value
    return value


def _wait_for(bucket: Bucket, tokens: float) -> float | None:
    """Seconds until a local bucket holds ``tokens`` (None: never, or not known for shared ones)."""
    if isinstance(bucket, SharedBucket) or tokens > bucket.capacity:
        return None
    return max(tokens - bucket.available(), 0.0) / bucket.rate


async def _has_tokens(bucket: Bucket) -> bool:
    if isinstance(bucket, SharedBucket):
        return await bucket.has_tokens()
    return bucket.available() >= 1
