"""Which pod holds which KV block, from the runtime sidecars' messages on ``FERRY_KV``.

Every router replica reads the whole stream from its start (the stream keeps a few minutes, and
each sidecar publishes a snapshot of its pod's blocks periodically), then follows it: a snapshot
replaces what the index held for that pod, a change adds and removes blocks. A message already
applied (same sidecar epoch, not a newer sequence) changes nothing. A pod that leaves the routing
table drops its blocks.

Between sending a prompt to a pod and that pod's events listing the prompt's blocks lie the pod's
queue, its prefill and the event path -- under a burst, seconds, in which every request of the same
prefix would otherwise look new and go to the least loaded pod, which prefills it again. So the
index also holds *pending* blocks: those of the prompts this router just sent (:meth:`KvIndex.expect`),
counted as held for ``ttl`` seconds or until events say otherwise. llm-d's approximate prefix index
and Kthena's prefix-cache plugin remember their own routing the same way; here it only bridges the
gap until the events confirm or evict.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

from ferry_schemas.bus import KV_STREAM
from ferry_schemas.kv import KV_FILTER, KvBlockEvents
from ferry_schemas.runtime.follow import StreamFollower
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

log = logging.getLogger(__name__)

KV_MESSAGES = Counter("ferry_router_kv_messages_total", "KV block messages applied to the index.", ["kind"])
KV_BAD = Counter("ferry_router_kv_bad_messages_total", "KV block messages that could not be decoded.")
KV_BLOCKS = Gauge("ferry_router_kv_index_blocks", "(pod, block) pairs in the KV index.")


class KvIndex:
    def __init__(self, pending_ttl: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.pods: dict[str, set[int]] = {}  # pod key (ns/name) -> block hashes
        self.owners: dict[int, set[str]] = {}  # block hash -> pod keys
        self.pending_ttl = pending_ttl
        self._clock = clock
        self._pending: dict[int, dict[str, float]] = {}  # block hash -> pod key -> expiry (not held)
        self._pending_count: dict[str, int] = {}  # pod key -> its entries in _pending
        self._expiries: deque[tuple[float, int, str]] = deque()  # in expiry order (one ttl)
        self._position: dict[str, tuple[str, int]] = {}  # pod key -> (epoch, seq) last applied
        self._size = 0
        KV_BLOCKS.set_function(lambda: self._size)

    def apply(self, msg: KvBlockEvents) -> bool:
        """Apply one message; False when it was already applied."""
        key = msg.pod_key
        last = self._position.get(key)
        if last is not None and last[0] == msg.epoch and msg.seq <= last[1]:
            return False
        self._position[key] = (msg.epoch, msg.seq)
        if msg.snapshot or msg.cleared:
            self._clear(key)
        held = self.pods.setdefault(key, set())
        for h in msg.stored:
            if (pods := self._pending.get(h)) is not None and key in pods:
                self._unexpect(h, key, pods)  # confirmed: held from now on
            if h not in held:
                held.add(h)
                self.owners.setdefault(h, set()).add(key)
                self._size += 1
        for h in msg.removed:
            if (pods := self._pending.get(h)) is not None and key in pods:
                self._unexpect(h, key, pods)  # evicted: no longer expected there either
            if h in held:
                held.discard(h)
                self._unown(h, key)
                self._size -= 1
        return True

    def _unown(self, h: int, key: str) -> None:
        owners = self.owners.get(h)
        if owners is not None:
            owners.discard(key)
            if not owners:
                del self.owners[h]

    def _clear(self, key: str) -> None:
        for h in self.pods.pop(key, ()):
            self._unown(h, key)
            self._size -= 1

    def drop_pod(self, key: str) -> None:
        """The pod is gone: forget its blocks (a later snapshot from it would bring them back)."""
        self._clear(key)
        self._position.pop(key, None)
        self._pending_count.pop(key, None)
        for pods in self._pending.values():
            pods.pop(key, None)

    def expect(self, key: str, hashes: Sequence[int]) -> None:
        """A prompt of these blocks was just sent to pod ``key``: count them as held for a while."""
        if self.pending_ttl <= 0 or not hashes:
            return
        now = self._clock()
        self._expire(now)
        until = now + self.pending_ttl
        held = self.pods.get(key, ())
        counts = self._pending_count
        for h in hashes:
            if h in held:
                continue
            pods = self._pending.setdefault(h, {})
            if key not in pods:
                counts[key] = counts.get(key, 0) + 1
            pods[key] = until
            self._expiries.append((until, h, key))

    def _unexpect(self, h: int, key: str, pods: dict[str, float]) -> None:
        del pods[key]
        if not pods:
            del self._pending[h]
        self._pending_count[key] -= 1

    def _expire(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            until, h, key = self._expiries.popleft()
            pods = self._pending.get(h)
            if pods is not None and pods.get(key) == until:  # not renewed since
                self._unexpect(h, key, pods)

    def match(self, hashes: Sequence[int], candidates: set[str]) -> dict[str, int]:
        """Pod → number of leading blocks of ``hashes`` it holds (or is about to: pending), for the
        candidates holding block 0."""
        if not hashes:
            return {}
        if self._expiries:
            self._expire(self._clock())
        pending = self._pending
        found: dict[str, int] = {}
        for pod in {*self.owners.get(hashes[0], ()), *pending.get(hashes[0], ())}:
            if pod not in candidates:
                continue
            held = self.pods.get(pod, set())
            count = 1
            while count < len(hashes) and (hashes[count] in held or pod in pending.get(hashes[count], ())):
                count += 1
            found[pod] = count
        return found

    def footprint(self, key: str) -> int:
        """Blocks pod ``key`` holds or is expected to hold: what this router knows of its cache."""
        if self._expiries:
            self._expire(self._clock())
        return len(self.pods.get(key, ())) + self._pending_count.get(key, 0)

    def blocks_of(self, key: str) -> set[int]:
        return self.pods.get(key, set())


class KvFeed:
    """Feeds a :class:`KvIndex` from ``ferry.kv.>`` (an ordered consumer from the stream's start)."""

    def __init__(self, js: JetStreamContext, index: KvIndex, stream: str = KV_STREAM) -> None:
        self._index = index
        self._follower = StreamFollower(
            js,
            stream,
            {"kv": KV_FILTER},
            self._on_message,
            name="router-kv-feed",
            deliver_policy=DeliverPolicy.ALL,
        )

    async def start(self) -> None:
        await self._follower.start()

    def _on_message(self, _: str, msg: Msg) -> None:
        try:
            event = KvBlockEvents.model_validate_json(msg.data)
        except ValidationError as exc:
            KV_BAD.inc()
            log.error("undecodable KV message on %s: %s", msg.subject, exc)
            return
        if self._index.apply(event):
            KV_MESSAGES.labels("snapshot" if event.snapshot else "changes").inc()

    async def stop(self) -> None:
        await self._follower.stop()
