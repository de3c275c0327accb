"""The generation guard: never let an older desired set overwrite a newer one (design rule 1).

The last applied owner generation lives in the JetStream KV bucket
``APPLIED_GENERATIONS_BUCKET`` under ``kv_key(resource, ns, name)`` as ``{"uid", "generation"}``,
so every applier replica (and a restarted one) sees the same value.

A reconcile reads the entry once (:meth:`GenerationGuard.applied`, under the owner's lease) and
hands what it read to :meth:`GenerationGuard.record`: nothing is written when the entry already
holds this generation (every reconcile after an owner's first, e.g. a drift repair or a resync),
and otherwise the compare-and-set names the revision read, so one more round trip is spent only
when another replica wrote the entry in between.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass

from ferry_schemas.bus import OwnerKey, kv_key
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue


@dataclass(frozen=True)
class AppliedGeneration:
    uid: str
    generation: int
    revision: int  # the KV entry's revision, for compare-and-set


class Unread:
    """No entry was read yet (``None`` means: read, and there is none)."""


UNREAD = Unread()


def is_stale(owner: OwnerKey, applied: AppliedGeneration | None) -> bool:
    """True when ``owner`` is an older generation of the same object than the one applied."""
    return applied is not None and applied.uid == owner.uid and owner.generation < applied.generation


class GenerationGuard:
    """Reads and advances the last applied generation per owner."""

    def __init__(self, kv: KeyValue, *, attempts: int = 5) -> None:
        self._kv = kv
        self._attempts = attempts

    @staticmethod
    def key(owner: OwnerKey) -> str:
        return kv_key(owner.resource, owner.namespace, owner.name)

    async def applied(self, owner: OwnerKey) -> AppliedGeneration | None:
        try:
            entry = await self._kv.get(self.key(owner))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        try:
            data = json.loads(entry.value)
            return AppliedGeneration(
                uid=str(data["uid"]), generation=int(data["generation"]), revision=int(entry.revision or 0)
            )
        except (ValueError, KeyError, TypeError):
            return None  # an unreadable entry never blocks reconciling; the next record overwrites it

    async def record(self, owner: OwnerKey, read: AppliedGeneration | Unread | None = UNREAD) -> None:
        """Advance to ``owner.generation`` unless a newer one is already recorded (CAS, retried).

        ``read`` is the entry as :meth:`applied` returned it earlier in this reconcile: no second
        read then (a stale ``read`` only costs a failed compare-and-set and a re-read).
        """
        value = json.dumps({"uid": owner.uid, "generation": owner.generation}).encode()
        for _ in range(self._attempts):
            current = await self.applied(owner) if isinstance(read, Unread) else read
            read = UNREAD
            if current is not None and current.uid == owner.uid and current.generation >= owner.generation:
                return
            try:
                if current is None:
                    try:
                        await self._kv.create(self.key(owner), value)
                    except KeyWrongLastSequenceError:
                        continue  # another replica created it meanwhile: re-read and compare
                else:
                    await self._kv.update(self.key(owner), value, last=current.revision)
                return
            except KeyWrongLastSequenceError:
                continue

    async def forget(self, owner: OwnerKey) -> None:
        """The owner is gone: drop its entry (a new object with the same name starts afresh)."""
        with contextlib.suppress(KeyNotFoundError):
            await self._kv.delete(self.key(owner))
