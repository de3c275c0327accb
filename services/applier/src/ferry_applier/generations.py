"""The generation guard: never let an older desired set overwrite a newer one (design rule 1), and
say whether a delivered desired set may be applied without reading ``FERRY_DESIRED``.

The entry per owner lives in the JetStream KV bucket ``APPLIED_GENERATIONS_BUCKET`` under
``kv_key(resource, ns, name)`` as ``{"uid", "generation", "sequence", "deleted"}``: the owner
generation last applied, the ``FERRY_DESIRED`` stream sequence of the desired set it came from (0 in
an entry written before sequences were kept) and whether that set was the owner's tombstone (a
deleted owner's entry stays, so "no entry" means no desired set of that name was ever applied).
Every applier replica (and a restarted one) sees the same value.

A reconcile advances the entry once, under the owner's lease, *before* it applies
(:meth:`GenerationGuard.advance`):

* nothing is written when the entry already says this set (every reconcile after the one that
  applied it: a drift repair, a resync); otherwise the compare-and-set names the revision read, so
  a write by another replica in between costs a failed compare-and-set and a re-read;
* an owner's first desired set, as delivered, is created without reading first (one round trip
  instead of a read and a create); an entry that exists after all costs the read it would have;
* **stale**: an older generation of the same object than the one recorded is dropped;
* **behind**: a desired set that was *delivered* (not read as the subject's last message) is applied
  only when the entry names no later sequence of its subject. The caller then reads the subject's
  last message and advances with it. Why a delivered set needs no read otherwise, with any number of
  replicas sharing the consumer: the entry is written under the owner's lease before every apply,
  so a later message of the subject is either recorded (then this set is *behind*), or its
  reconcile has not run yet — and it runs after this one (the lease serialises them; its sequence
  is not below the entry's), so the newest set applied is the newest delivered — or it is not
  published yet. A redelivered older message, or one of a deleted and recreated owner (the
  tombstone is recorded, not deleted), is behind and read afresh.

Recording before applying claims no more than recording after: a reconcile that fails is retried
from the latest set, whose sequence is not below the one recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum

from ferry_schemas.bus import OwnerKey, kv_key
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from ferry_applier.errors import TransientError


@dataclass(frozen=True, slots=True)
class AppliedGeneration:
    uid: str
    generation: int
    revision: int  # the KV entry's revision, for compare-and-set
    sequence: int = 0  # the FERRY_DESIRED stream sequence of the set (0: not known)
    deleted: bool = False


class Verdict(Enum):
    APPLY = "apply"
    """Recorded: apply the set."""
    STALE = "stale"
    """An older generation of the same object than the one applied: drop the set."""
    BEHIND = "behind"
    """A later desired set of the subject was recorded (or it cannot be told): read the last one."""


def is_stale(owner: OwnerKey, applied: AppliedGeneration | None) -> bool:
    """True when ``owner`` is an older generation of the same object than the one applied."""
    return applied is not None and applied.uid == owner.uid and owner.generation < applied.generation


def verdict(owner: OwnerKey, sequence: int, applied: AppliedGeneration | None, *, latest: bool) -> Verdict:
    """What to do with ``owner``'s desired set at ``sequence`` given the entry ``applied``; ``latest``:
    the set was read as its subject's last message (so no later one can exist)."""
    if is_stale(owner, applied):
        return Verdict.STALE
    if not latest and applied is not None and (applied.sequence == 0 or sequence < applied.sequence):
        return Verdict.BEHIND
    return Verdict.APPLY


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
        revision = int(entry.revision or 0)
        if not entry.value:
            return None
        try:
            data = json.loads(entry.value)
            return AppliedGeneration(
                uid=str(data["uid"]),
                generation=int(data["generation"]),
                revision=revision,
                sequence=int(data.get("sequence", 0)),
                deleted=bool(data.get("deleted", False)),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            # unreadable: it never blocks reconciling, and the compare-and-set overwrites it
            return AppliedGeneration(uid="", generation=0, revision=revision)

    async def advance(
        self, owner: OwnerKey, sequence: int, *, latest: bool, deleted: bool = False
    ) -> Verdict:
        """Record ``owner``'s desired set at stream ``sequence`` as applied, unless the entry makes it
        stale or behind (module docstring). A delivered first set (``not latest``, generation ≤ 1)
        is created without a read."""
        key = self.key(owner)
        if not latest and not deleted and owner.generation <= 1:
            try:
                await self._kv.create(key, _entry(owner, sequence, deleted))
                return Verdict.APPLY
            except KeyWrongLastSequenceError:
                pass  # an entry exists: read it
        for _ in range(self._attempts):
            current = await self.applied(owner)
            decided = verdict(owner, sequence, current, latest=latest)
            if decided is not Verdict.APPLY:
                return decided
            # a set read as the last message may be below the entry (another replica applied a later
            # one after the read, or the stream was recreated): the entry's sequence never goes back
            recorded = sequence if current is None else max(sequence, current.sequence)
            wanted = AppliedGeneration(owner.uid, owner.generation, 0, recorded, deleted)
            if current is not None and _facts(current) == _facts(wanted):
                return Verdict.APPLY  # already recorded: nothing to write
            try:
                if current is None:
                    await self._kv.create(key, _entry(owner, recorded, deleted))
                else:
                    await self._kv.update(key, _entry(owner, recorded, deleted), last=current.revision)
                return Verdict.APPLY
            except KeyWrongLastSequenceError:
                continue  # another replica wrote it meanwhile: re-read and compare
        raise TransientError(f"the applied generation of {key} kept changing under us")


def _entry(owner: OwnerKey, sequence: int, deleted: bool) -> bytes:
    fields: dict[str, object] = {"uid": owner.uid, "generation": owner.generation, "sequence": sequence}
    if deleted:
        fields["deleted"] = True
    return json.dumps(fields).encode()


def _facts(entry: AppliedGeneration) -> tuple[str, int, int, bool]:
    return entry.uid, entry.generation, entry.sequence, entry.deleted
