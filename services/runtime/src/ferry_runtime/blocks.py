"""Engine block hashes → Ferry's routing hashes, and the set of blocks the pod holds.

The engine names a block by a hash only it can compute; ``BlockStored`` also carries the block's
token ids and its parent's engine hash, so the bridge recomputes each block's
:func:`ferry_schemas.kv.block_hash` chained from its parent's and remembers the mapping for the
``BlockRemoved`` that names only engine hashes. A block whose parent the bridge never saw (it
started after the engine) cannot be chained and is skipped (counted).

A LoRA adapter's blocks (``lora_id`` set: vLLM hashes the adapter into them) are chained from
:func:`ferry_schemas.kv.lora_root` of the adapter's *name* (the event's ``lora_name``, or its
``lora_id`` looked up in :class:`ferry_runtime.lora_names.LoraNames`) instead of the base model's
root: a prompt scored for the base model never matches KV only the adapter can use, and one scored
for the adapter matches it on every pod, whatever id that pod's engine gave the adapter. A block of
an adapter whose name is not known is skipped (counted) like one whose parent is unknown.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ferry_schemas.kv import ROOT_HASH, block_hash, lora_root

from ferry_runtime.vllm_events import Cleared, Event, Removed, Stored

LoraName = Callable[[int], str | None]


@dataclass
class Change:
    """The net effect of one engine batch on the pod's block set."""

    stored: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    cleared: bool = False
    skipped: int = 0  # blocks whose parent was unknown

    def __bool__(self) -> bool:
        return bool(self.stored or self.removed or self.cleared)


def unknown_adapter(events: list[Event], lora_name: LoraName) -> bool:
    """Whether a block starting a chain names its adapter by a ``lora_id`` ``lora_name`` cannot name."""
    return any(
        isinstance(e, Stored)
        and e.parent_block_hash is None
        and e.lora_id is not None
        and e.lora_name is None
        and lora_name(e.lora_id) is None
        for e in events
    )


class BlockTranslator:
    def __init__(self, lora_name: LoraName | None = None) -> None:
        """``lora_name``: the adapter's name for an engine ``lora_id`` (``None``: not known)."""
        self.lora_name = lora_name or (lambda _: None)
        self.by_engine: dict[int, int] = {}
        self.held: Counter[int] = Counter()  # Ferry hash -> engine blocks holding it
        self.block_size: int | None = None

    def apply(self, events: list[Event]) -> Change:
        change = Change()
        before: dict[int, bool] = {}  # Ferry hash -> held before this batch (first touch only)

        def touch(h: int) -> None:
            before.setdefault(h, self.held[h] > 0)

        for event in events:
            if isinstance(event, Cleared):
                self.by_engine.clear()
                self.held.clear()
                before.clear()
                change = Change(cleared=True, skipped=change.skipped)
            elif isinstance(event, Stored):
                change.skipped += self._store(event, touch)
            elif isinstance(event, Removed):
                for engine_hash in event.block_hashes:
                    ferry_hash = self.by_engine.pop(engine_hash, None)
                    if ferry_hash is None:
                        continue
                    touch(ferry_hash)
                    self.held[ferry_hash] -= 1
                    if self.held[ferry_hash] <= 0:
                        del self.held[ferry_hash]
        for h, was_held in before.items():
            now_held = self.held[h] > 0 if h in self.held else False
            if now_held and not was_held:
                change.stored.append(h)
            elif was_held and not now_held:
                change.removed.append(h)
        return change

    def _store(self, event: Stored, touch: Callable[[int], None]) -> int:
        size = event.block_size
        if size < 1 or len(event.token_ids) < size * len(event.block_hashes):
            return len(event.block_hashes)
        self.block_size = size
        if event.parent_block_hash is None:
            adapter = event.lora_name
            if adapter is None and event.lora_id is not None:
                adapter = self.lora_name(event.lora_id)
                if adapter is None:
                    return len(event.block_hashes)
            parent = ROOT_HASH if adapter is None else lora_root(adapter)
        else:
            known = self.by_engine.get(event.parent_block_hash)
            if known is None:
                return len(event.block_hashes)
            parent = known
        for i, engine_hash in enumerate(event.block_hashes):
            parent = block_hash(parent, event.token_ids[i * size : (i + 1) * size])
            if engine_hash in self.by_engine:
                continue
            self.by_engine[engine_hash] = parent
            touch(parent)
            self.held[parent] += 1
        return 0

    def snapshot(self) -> list[int]:
        return sorted(self.held)
