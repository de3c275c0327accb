"""KV-cache block events on the bus: the runtime sidecar publishes them, the router indexes them.

An engine (vLLM with ``--kv-events-config``) reports the blocks it caches and evicts under its own
block hashes, which are seeded per process and mean nothing elsewhere. The sidecar re-keys every
block by :func:`token_block_hashes` — a hash chained over the token ids of the block and all the
blocks before it — which the router can compute from a prompt's tokens too, so "pod P holds the
first k blocks of this prompt" is a set lookup.

Subject: ``ferry.kv.<ns>.<model>.<pod>`` (names encoded as on every Ferry subject) in the stream
``FERRY_KV`` (every message kept for ``KV_MAX_AGE_SECONDS``). A message either lists changes
(``stored``/``removed``/``cleared``) or is a ``snapshot`` of every block the pod holds, published
when the sidecar starts and then periodically, so a consumer that reads the stream from its start
has, for every live pod, a snapshot followed by the changes after it.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

from ferry_schemas.bus import KV_PREFIX, KV_SNAPSHOT_SECONDS, KV_STREAM, Envelope, encode_token

__all__ = [
    "KV_FILTER",
    "KV_SNAPSHOT_SECONDS",
    "KV_STREAM",
    "KvBlockEvents",
    "kv_subject",
    "lora_root",
    "token_block_hashes",
]

KV_FILTER = f"{KV_PREFIX}.>"

ROOT_HASH = 0
_MASK = (1 << 63) - 1


def kv_subject(namespace: str, model: str, pod: str) -> str:
    """``ferry.kv.<ns>.<model>.<pod>``."""
    return f"{KV_PREFIX}.{encode_token(namespace)}.{encode_token(model)}.{encode_token(pod)}"


def lora_root(adapter: str) -> int:
    """The chain root of a LoRA adapter's blocks, apart from the base model's. Keyed by the adapter's
    *name* (what a request names, and what vLLM hashes into the adapter's blocks): the engine's
    ``lora_id`` is a per-process load counter, so the same adapter has different ids on two pods."""
    return int.from_bytes(hashlib.sha256(f"lora:{adapter}".encode()).digest()[:8], "big") & _MASK


def block_hash(parent: int, tokens: Sequence[int]) -> int:
    """63-bit SHA-256 of the parent's hash and the block's token ids (big-endian)."""
    data = struct.pack(f">Q{len(tokens)}I", parent, *(t & 0xFFFFFFFF for t in tokens))
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") & _MASK


def token_block_hashes(
    tokens: Sequence[int], block_size: int, max_blocks: int | None = None, parent: int = ROOT_HASH
) -> list[int]:
    """Hashes of the full blocks of ``tokens`` (at most ``max_blocks``), chained from ``parent``."""
    if block_size < 1:
        raise ValueError("block size must be positive")
    count = len(tokens) // block_size
    if max_blocks is not None:
        count = min(count, max_blocks)
    hashes: list[int] = []
    for i in range(count):
        parent = block_hash(parent, tokens[i * block_size : (i + 1) * block_size])
        hashes.append(parent)
    return hashes


class KvBlockEvents(Envelope):
    """What one pod's engine cached and evicted (or, with ``snapshot``, everything it holds)."""

    namespace: str
    pod: str
    model: str
    epoch: str  # one sidecar process: a new epoch starts with a snapshot
    seq: int  # per epoch, from 1
    block_size: int
    snapshot: bool = False
    cleared: bool = False  # the engine dropped every block (AllBlocksCleared) before ``stored``
    stored: list[int] = []
    removed: list[int] = []

    @property
    def pod_key(self) -> str:
        return f"{self.namespace}/{self.pod}"

    @property
    def subject(self) -> str:
        return kv_subject(self.namespace, self.model, self.pod)
