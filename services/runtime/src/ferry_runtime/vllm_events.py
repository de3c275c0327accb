"""Decoding vLLM's ``KVEventBatch`` (``vllm/distributed/kv_events.py``) with msgpack, as its consumers do.

vLLM's structs are tagged msgspec structs. Releases up to 0.11 encode them ``array_like`` —
``[ts, [["BlockStored", hashes, parent, token_ids, block_size, lora_id, medium, ...], ...], dp_rank]``
— and later ones as maps (``{"ts", "events": [{"type": "BlockStored", "block_hashes", ...}]}``).
Both are read. Block hashes are ints, or bytes with ``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0``;
bytes are read as big-endian ints (only their identity matters here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack


class BadBatch(ValueError):
    """A payload that is not a KVEventBatch."""


@dataclass(frozen=True, slots=True)
class Stored:
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None  # the LoRA adapter whose KV this is: its id on this engine (load order)
    lora_name: str | None = None  # ... and its name (vLLM releases that send it; older send the id only)


@dataclass(frozen=True, slots=True)
class Removed:
    block_hashes: list[int]


@dataclass(frozen=True, slots=True)
class Cleared:
    pass


Event = Stored | Removed | Cleared

_STORED_FIELDS = (
    "block_hashes",
    "parent_block_hash",
    "token_ids",
    "block_size",
    "lora_id",
    "medium",
    "lora_name",
)


def _hash(value: Any) -> int:
    if isinstance(value, bytes):
        return int.from_bytes(value, "big")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise BadBatch(f"a block hash must be an int or bytes, not {type(value).__name__}")


def _event(raw: Any) -> Event | None:
    fields: dict[str, Any]
    if isinstance(raw, (list, tuple)) and raw and isinstance(raw[0], str):
        tag, values = raw[0], list(raw[1:])
        if tag == "BlockStored":
            fields = dict(zip(_STORED_FIELDS, values, strict=False))
        elif tag == "BlockRemoved":
            fields = {"block_hashes": values[0] if values else []}
        else:
            fields = {}
    elif isinstance(raw, dict) and isinstance(raw.get("type"), str):
        tag, fields = raw["type"], raw
    else:
        raise BadBatch(f"not a KV cache event: {raw!r:.80}")
    try:
        if tag == "BlockStored":
            parent, lora_id, lora_name = (
                fields.get(k) for k in ("parent_block_hash", "lora_id", "lora_name")
            )
            return Stored(
                [_hash(h) for h in fields["block_hashes"]],
                None if parent is None else _hash(parent),
                [int(t) for t in fields["token_ids"]],
                int(fields["block_size"]),
                None if lora_id is None else int(lora_id),
                None if lora_name is None else str(lora_name),
            )
        if tag == "BlockRemoved":
            return Removed([_hash(h) for h in fields["block_hashes"]])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadBatch(f"malformed {tag}: {exc}") from exc
    if tag == "AllBlocksCleared":
        return Cleared()
    return None  # an event kind this bridge does not know: skipped


def decode_batch(payload: bytes) -> tuple[float, list[Event]]:
    """(ts, events) of one msgpack ``KVEventBatch``."""
    try:
        raw = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise BadBatch(f"not msgpack: {exc}") from exc
    if isinstance(raw, (list, tuple)) and len(raw) >= 2:
        ts, events = raw[0], raw[1]
    elif isinstance(raw, dict):
        ts, events = raw.get("ts"), raw.get("events")
    else:
        raise BadBatch("a KVEventBatch is [ts, events, ...] or {ts, events}")
    if not isinstance(events, list) or not isinstance(ts, int | float):
        raise BadBatch("a KVEventBatch needs a timestamp and a list of events")
    decoded = [e for e in (_event(raw_event) for raw_event in events) if e is not None]
    return float(ts), decoded
