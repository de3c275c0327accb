"""vLLM's LoRA ``lora_id`` → the adapter's name, as the engine assigns them.

A ``BlockStored`` of an adapter's KV carries the adapter's ``lora_id`` (vLLM's ``lora_int_id``) and,
in recent releases, its ``lora_name``. The id means nothing off the engine: vLLM's OpenAI server
numbers adapters with a counter as it loads them (``--lora-modules`` in order from 1, then each
``/v1/load_lora_adapter``), never reusing an id after ``/v1/unload_lora_adapter``; so one adapter
has different ids on two pods. What a request names, and what routing keys blocks by, is the name.

``/v1/models`` lists the adapters (entries with a ``parent``) in load order but not their ids, so
this map follows the counter: adapters first seen together get the next ids in listing order; an
adapter that disappears frees its name, not its id. That is exact when the sidecar starts with its
engine (the usual pod) and for every engine that sends ``lora_name``. A sidecar started after an
unload on an engine that sends ids only can misnumber the adapters loaded before it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import aiohttp
import orjson

log = logging.getLogger(__name__)


def listed_adapters(body: bytes) -> list[str]:
    """The LoRA adapters of a ``/v1/models`` answer, in its (load) order."""
    data = orjson.loads(body).get("data") or []
    return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m and m.get("parent")]


class LoraNames:
    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        self._ids: dict[str, int] = {}
        self._last = 0

    def name(self, lora_id: int) -> str | None:
        return self.names.get(lora_id)

    def observe(self, adapters: Iterable[str]) -> None:
        """One ``/v1/models`` listing: number the new adapters, forget the unloaded ones."""
        listed = list(dict.fromkeys(adapters))
        for gone in set(self._ids) - set(listed):
            del self.names[self._ids.pop(gone)]
        for adapter in listed:
            if adapter not in self._ids:
                self._last += 1
                self._ids[adapter] = self._last
                self.names[self._last] = adapter

    async def refresh(self, session: aiohttp.ClientSession, base_url: str) -> None:
        """Read the engine's ``/v1/models`` (an event named an id this map does not know yet)."""
        try:
            async with session.get(f"{base_url.rstrip('/')}/v1/models") as response:
                response.raise_for_status()
                self.observe(listed_adapters(await response.read()))
        except (aiohttp.ClientError, TimeoutError, OSError, orjson.JSONDecodeError, AttributeError) as exc:
            log.warning("reading the engine's LoRA adapters failed: %r", exc)
