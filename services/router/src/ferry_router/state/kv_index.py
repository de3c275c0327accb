"""Which pod holds which KV block, from the runtime sidecars' messages on ``FERRY_KV``.

Every router replica reads the whole stream from its start (the stream keeps a few minutes, and
each sidecar publishes a snapshot of its pod's blocks periodically), then follows it: a snapshot
replaces what the index held for that pod, a change adds and removes blocks. A message already
applied (same sidecar epoch, not a newer sequence) changes nothing. A pod that leaves the routing
table drops its blocks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

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
    def __init__(self) -> None:
        self.pods: dict[str, set[int]] = {}  # pod key (ns/name) -> block hashes
        self.owners: dict[int, set[str]] = {}  # block hash -> pod keys
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
            if h not in held:
                held.add(h)
                self.owners.setdefault(h, set()).add(key)
                self._size += 1
        for h in msg.removed:
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

    def match(self, hashes: Sequence[int], candidates: set[str]) -> dict[str, int]:
        """Pod → number of leading blocks of ``hashes`` it holds, for candidates holding block 0."""
        if not hashes:
            return {}
        found: dict[str, int] = {}
        for pod in self.owners.get(hashes[0], ()):
            if pod not in candidates:
                continue
            held = self.pods[pod]
            count = 1
            while count < len(hashes) and hashes[count] in held:
                count += 1
            found[pod] = count
        return found

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
