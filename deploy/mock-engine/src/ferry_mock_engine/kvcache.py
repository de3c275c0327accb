"""A KV block pool with prefix caching, after vLLM v1's ``BlockPool``/``KVCacheManager``.

* A full block of tokens — prompt or generated, as vLLM v1 caches both — is identified by a hash
  chained over the token ids: ``h_i = H(h_{i-1}, tokens of block i, extra keys)``, where the extra
  key is the LoRA adapter's name (vLLM's ``extra_keys``: an adapter's KV is not the base model's),
  starting from a per-process random ``NONE_HASH`` (as
  vLLM does unless ``PYTHONHASHSEED`` is set), so two engines never agree on hashes and consumers
  must key on token ids, as vLLM's consumers do.
* A request first takes the longest run of cached blocks matching its prompt (a cache hit; at
  least one prompt token is always computed), then fresh blocks from the free queue.
* Freed blocks keep their hash and stay reusable until a fresh allocation takes them: the free
  queue is an LRU (least recently freed at the head; a request's blocks are freed tail first so
  the end of a prompt is evicted before its shared beginning). Evicting a cached block emits
  ``BlockRemoved``; caching one emits ``BlockStored``.
* Usage is ``1 - free/total`` (cached but unused blocks count as free), as vLLM reports it.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from ferry_mock_engine.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KVEvent


def _none_hash() -> int:
    seed = os.environ.get("PYTHONHASHSEED")
    raw = hashlib.sha256(seed.encode()).digest() if seed else os.urandom(32)
    return int.from_bytes(raw[:8], "big")


NONE_HASH = _none_hash()


def chain_hash(parent: int, tokens: Sequence[int], extra: bytes = b"") -> int:
    """64-bit hash of one block given its parent's hash (vLLM's external int form)."""
    data = struct.pack(f">Q{len(tokens)}I", parent, *tokens) + extra
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


def lora_key(lora: str | None) -> bytes:
    """The extra hash key of a LoRA adapter's blocks (empty for the base model)."""
    return b"" if lora is None else b"lora:" + lora.encode()


def prompt_block_hashes(
    tokens: Sequence[int], block_size: int, seed: int = NONE_HASH, extra: bytes = b""
) -> list[int]:
    """Hashes of every *full* block of ``tokens``."""
    hashes: list[int] = []
    extend_block_hashes(hashes, tokens, block_size, len(tokens) // block_size, seed, extra)
    return hashes


def extend_block_hashes(
    hashes: list[int],
    tokens: Sequence[int],
    block_size: int,
    count: int,
    seed: int = NONE_HASH,
    extra: bytes = b"",
) -> None:
    """Append the hashes of blocks ``len(hashes)..count-1`` of ``tokens`` (chained from the last)."""
    parent = hashes[-1] if hashes else seed
    for i in range(len(hashes), count):
        parent = chain_hash(parent, tokens[i * block_size : (i + 1) * block_size], extra)
        hashes.append(parent)


@dataclass(slots=True, eq=False)
class Block:
    id: int
    ref: int = 0
    hash: int | None = None


@dataclass
class BlockPool:
    num_blocks: int
    block_size: int
    enable_caching: bool = True
    blocks: list[Block] = field(init=False)
    free: OrderedDict[int, Block] = field(init=False)  # LRU: the head is taken (evicted) first
    cached: dict[int, Block] = field(init=False)
    events: list[KVEvent] = field(init=False)

    def __post_init__(self) -> None:
        if self.num_blocks < 1 or self.block_size < 1:
            raise ValueError("a KV pool needs at least one block of at least one token")
        self.blocks = [Block(i) for i in range(self.num_blocks)]
        self.free = OrderedDict((b.id, b) for b in self.blocks)
        self.cached = {}
        self.events = []

    @property
    def usage(self) -> float:
        return 1.0 - len(self.free) / self.num_blocks

    def cached_prefix(self, hashes: Sequence[int]) -> list[Block]:
        """The longest run of cached blocks matching ``hashes`` from the first."""
        hits: list[Block] = []
        if not self.enable_caching:
            return hits
        for h in hashes:
            block = self.cached.get(h)
            if block is None:
                break
            hits.append(block)
        return hits

    def touch(self, blocks: Sequence[Block]) -> None:
        """Take a reference on cache hits (they leave the free queue while in use)."""
        for block in blocks:
            if block.ref == 0:
                self.free.pop(block.id, None)
            block.ref += 1

    def allocate(self, n: int) -> list[Block] | None:
        """``n`` fresh blocks from the head of the free queue (evicting cached ones), or ``None``."""
        if n > len(self.free):
            return None
        taken: list[Block] = []
        removed: list[int] = []
        for _ in range(n):
            _, block = self.free.popitem(last=False)
            if block.hash is not None:
                if self.cached.get(block.hash) is block:
                    del self.cached[block.hash]
                    removed.append(block.hash)
                block.hash = None
            block.ref = 1
            taken.append(block)
        if removed:
            self.events.append(BlockRemoved(removed))
        return taken

    def cache(
        self,
        blocks: Sequence[Block],
        hashes: Sequence[int],
        parent: int | None,
        tokens: Sequence[int],
        lora_id: int | None = None,
    ) -> None:
        """Register newly computed full blocks under their hashes and emit one ``BlockStored``.

        A block whose hash another block already holds (two requests computed the same prefix at
        once) stays uncached, so the pool never has two blocks for one hash.
        """
        if not self.enable_caching:
            return
        stored: list[int] = []
        stored_tokens: list[int] = []
        event_parent = previous = parent
        size = self.block_size
        for i, (block, h) in enumerate(zip(blocks, hashes, strict=True)):
            if block.hash is None and h not in self.cached:
                if not stored:
                    event_parent = previous
                block.hash = h
                self.cached[h] = block
                stored.append(h)
                stored_tokens.extend(tokens[i * size : (i + 1) * size])
            else:  # keep every event a contiguous chain
                self._emit_stored(stored, event_parent, stored_tokens, lora_id)
                stored, stored_tokens = [], []
            previous = h
        self._emit_stored(stored, event_parent, stored_tokens, lora_id)

    def _emit_stored(
        self, hashes: list[int], parent: int | None, tokens: list[int], lora_id: int | None
    ) -> None:
        if hashes:
            self.events.append(BlockStored(hashes, parent, tokens, self.block_size, lora_id))

    def release(self, blocks: Sequence[Block]) -> None:
        """Drop one reference per block, tail first; unreferenced blocks join the free queue's tail."""
        for block in reversed(blocks):
            block.ref -= 1
            if block.ref == 0:
                self.free[block.id] = block

    def reset(self) -> bool:
        """vLLM's ``reset_prefix_cache``: forget every cached block (``AllBlocksCleared``); refused
        (False) while a request holds blocks."""
        if any(block.ref > 0 for block in self.blocks):
            return False
        for block in self.blocks:
            block.hash = None
        self.cached.clear()
        self.events.append(AllBlocksCleared())
        return True

    def take_events(self) -> list[KVEvent]:
        events, self.events = self.events, []
        return events
