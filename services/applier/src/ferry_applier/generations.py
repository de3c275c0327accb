"""The owner record: the generation guard and the owner's lease in one KV entry.

**The guard** never lets an older desired set overwrite a newer one (design rule 1), and says whether
a delivered desired set may be applied without reading ``FERRY_DESIRED``. The entry per owner lives
in the JetStream KV bucket ``APPLIED_GENERATIONS_BUCKET`` under ``kv_key(resource, ns, name)`` as
``{"uid", "generation", "sequence", "deleted", "holder", "until"}``: the owner generation last
applied, the ``FERRY_DESIRED`` stream sequence of the desired set it came from (0 in an entry written
before sequences were kept), whether that set was the owner's tombstone (a deleted owner's entry
stays, so "no entry" means no desired set of that name was ever applied), and the lease.

**The lease** (one reconcile of an owner at a time across replicas): a replica holds an owner while
the entry names it as ``holder`` until ``until``; an entry naming nobody, or whose ``until`` passed (a
replica died holding it), is free. Taking it *is* the guard's write: the first
:meth:`HeldRecord.advance` of a reconcile writes the new facts and the holder in one compare-and-set
(a create, without a read, for an owner's first delivered set), so a reconcile costs one KV round
trip where it cost three (lease create, guard create, lease release). While the reconcile runs the
entry is heart-beaten every ``ttl / 3`` (the same compare-and-set moving ``until``). At the end it is
released — the entry rewritten without a holder, published with ``Nats-Expected-Last-Subject-Sequence``
and *without a reply subject* (one message, not a round trip: a release rejected because the
revision moved on is exactly the no-op it should be, and one that never arrives expires) — unless this
replica runs alone (``alone()``, from the members bucket): then it keeps the entry and the revision it
wrote, and its next reconcile of the owner takes it with one compare-and-set naming that revision, no
read. Kept entries are released as soon as another replica appears (:meth:`OwnerRecords.release_kept`,
on every membership change) and when the replica stops; one that dies leaves them to expire after
``ttl`` (the members' TTL: the time its owners take to move to the others anyway).

Guard decisions (:func:`verdict`), made from the entry the compare-and-set names:

* nothing changes in the facts when the entry already says this set (a drift repair, a resync);
  a write by another replica in between costs a failed compare-and-set and a re-read;
* **stale**: an older generation of the same object than the one recorded is dropped;
* **behind**: a desired set that was *delivered* (not read as the subject's last message) is applied
  only when the entry names no later sequence of its subject. The caller then reads the subject's
  last message and advances with it, under the lease it holds. Why a delivered set needs no read
  otherwise, with any number of replicas sharing the consumer: the entry is written under the lease
  before every apply, so a later message of the subject is either recorded (then this set is
  *behind*), or its reconcile has not run yet — and it runs after this one (the lease serialises
  them; its sequence is not below the entry's), so the newest set applied is the newest delivered —
  or it is not published yet. A redelivered older message, or one of a deleted and recreated owner
  (the tombstone is recorded, not deleted), is behind and read afresh.

Recording before applying claims no more than recording after: a reconcile that fails is retried
from the latest set, whose sequence is not below the one recorded.

Replicas of the release before this one took a lease in ``ferry_applier_leases`` and ignore the
record's holder: while one may run, the service takes that lease too (``lease.py``, README).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from enum import Enum

from ferry_schemas.bus import APPLIED_GENERATIONS_BUCKET, OwnerKey, kv_key
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from ferry_applier.errors import TransientError

log = logging.getLogger(__name__)

EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
KEPT_MAX = 100_000
"""Entries kept held while alone, at most (the oldest are released first)."""


class LeaseBusy(TransientError):
    """Another replica holds the owner for longer than we may wait."""


class LeaseLost(TransientError):
    """Another replica took the owner over while this reconcile held it (its lease had expired)."""


@dataclass(frozen=True, slots=True)
class AppliedGeneration:
    uid: str
    generation: int
    revision: int  # the KV entry's revision, for compare-and-set
    sequence: int = 0  # the FERRY_DESIRED stream sequence of the set (0: not known)
    deleted: bool = False
    holder: str = ""
    until: float = 0.0


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


def record_key(owner: OwnerKey) -> str:
    return kv_key(owner.resource, owner.namespace, owner.name)


class OwnerRecords:
    """The owner records in ``kv`` (bucket ``bucket``), held as ``holder``; ``nc``: the connection the
    releases go out on; ``alone()``: whether no other replica runs (then held entries are kept)."""

    def __init__(
        self,
        nc: Client,
        kv: KeyValue,
        holder: str,
        *,
        ttl: float,
        alone: Callable[[], bool] = lambda: False,
        poll: float = 0.05,
        attempts: int = 5,
        bucket: str = APPLIED_GENERATIONS_BUCKET,
    ) -> None:
        self._nc = nc
        self._kv = kv
        self._subject_prefix = f"$KV.{bucket}."
        self.holder = holder
        self.ttl = ttl
        self.poll = poll
        self.attempts = attempts
        self._alone = alone
        self._kept: dict[str, AppliedGeneration] = {}
        """Entries this replica holds between reconciles (while alone), as written: key → entry."""

    @property
    def kept(self) -> int:
        return len(self._kept)

    @contextlib.asynccontextmanager
    async def hold(self, key: str, *, wait: float) -> AsyncIterator[HeldRecord]:
        """The owner's record for one reconcile: the lease is taken by the first ``advance`` (with the
        facts it writes), renewed every ttl/3 while held, and released (or kept) at the end."""
        held = HeldRecord(self, key, wait, self._kept.pop(key, None))
        try:
            yield held
        finally:
            await held.stop()  # not cancelled: a renewal in flight must finish so the release names it
            if held.entry is not None and held.entry.holder == self.holder:
                if self._alone():
                    self._keep(key, held.entry)
                else:
                    await self._release(key, held.entry)

    async def read(self, key: str) -> AppliedGeneration | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        return parse(entry.value, int(entry.revision or 0))

    async def release_kept(self) -> int:
        """Release every entry kept between reconciles (another replica appeared, or this one stops)."""
        released = 0
        while self._kept:  # one at a time: a stop that cancels this leaves the rest for the next call
            key, entry = self._kept.popitem()
            await self._release(key, entry)
            released += 1
        return released

    def _keep(self, key: str, entry: AppliedGeneration) -> None:
        self._kept[key] = entry
        while len(self._kept) > KEPT_MAX:  # never reached in practice: it would expire anyway
            del self._kept[next(iter(self._kept))]

    async def _release(self, key: str, entry: AppliedGeneration) -> None:
        """The entry without a holder, unless someone took it over since (module docstring: published
        without waiting for an answer)."""
        headers = {EXPECTED_LAST_SUBJECT_SEQUENCE: str(entry.revision)}
        await self._nc.publish(f"{self._subject_prefix}{key}", encode(entry, holder=""), headers=headers)

    async def _write(self, key: str, entry: AppliedGeneration, last: int | None) -> int:
        """Create (``last`` None) or compare-and-set the entry; its new revision."""
        value = encode(entry, holder=self.holder)
        if last is None:
            return int(await self._kv.create(key, value))
        return int(await self._kv.update(key, value, last=last))


class HeldRecord:
    """One reconcile's hold on an owner's record (:meth:`OwnerRecords.hold`)."""

    def __init__(self, records: OwnerRecords, key: str, wait: float, kept: AppliedGeneration | None) -> None:
        self._records = records
        self.key = key
        self._wait = wait
        self._kept = kept
        self.entry: AppliedGeneration | None = None
        """The entry as this hold last wrote it (None: not taken yet)."""
        self._heartbeat: Heartbeat | None = None

    async def advance(
        self, owner: OwnerKey, sequence: int, *, latest: bool, deleted: bool = False
    ) -> Verdict:
        """Record ``owner``'s desired set at stream ``sequence`` as applied, unless the entry makes it
        stale or behind (module docstring); the first call takes the lease in the same write."""
        if self.entry is None:
            return await self._take(owner, sequence, latest=latest, deleted=deleted)
        decided, wanted = _decide(owner, sequence, self.entry, latest=latest, deleted=deleted)
        if wanted != self.entry:
            try:
                revision = await self._records._write(self.key, wanted, self.entry.revision)
            except KeyWrongLastSequenceError as exc:
                raise LeaseLost(f"another replica took {self.key} over") from exc
            self.entry = replace(wanted, revision=revision)
        return decided

    async def _take(self, owner: OwnerKey, sequence: int, *, latest: bool, deleted: bool) -> Verdict:
        records = self._records
        deadline = time.monotonic() + self._wait
        current = self._kept  # as this replica wrote it: a compare-and-set on its revision needs no read
        unread = current is None and not latest and not deleted and owner.generation <= 1
        attempts = records.attempts
        while True:
            if current is None and not unread:
                current = await records.read(self.key)
            if (
                current is not None
                and current.holder not in ("", records.holder)
                and current.until > time.time()
            ):
                if time.monotonic() >= deadline:
                    raise LeaseBusy(f"{self.key} is held by another replica")
                await asyncio.sleep(records.poll)
                current = None
                continue
            decided, wanted = _decide(owner, sequence, current, latest=latest, deleted=deleted)
            wanted = replace(wanted, holder=records.holder, until=time.time() + records.ttl)
            try:
                revision = await records._write(
                    self.key, wanted, None if current is None else current.revision
                )
            except KeyWrongLastSequenceError:  # another replica wrote it meanwhile: read and decide again
                attempts -= 1
                if attempts <= 0:
                    raise TransientError(f"the record of {self.key} kept changing under us") from None
                current, unread = None, False
                continue
            self.entry = replace(wanted, revision=revision)
            self._heartbeat = Heartbeat(records.ttl / 3, self._renew)
            return decided

    async def _renew(self) -> bool:
        """One heartbeat: move ``until`` forward (False once another replica took the owner over)."""
        entry = self.entry
        assert entry is not None
        records = self._records
        renewed = replace(entry, until=time.time() + records.ttl)
        try:
            self.entry = replace(renewed, revision=await records._write(self.key, renewed, entry.revision))
        except KeyWrongLastSequenceError:
            log.error("lost the lease on %s: another replica took it over", self.key)
            self.entry = replace(entry, holder="")  # nothing to release or keep
            return False
        except Exception as exc:  # NATS briefly away: keep trying while the lease lasts
            log.warning("could not renew the lease on %s: %s", self.key, exc)
        return True

    async def stop(self) -> None:
        if self._heartbeat is not None:
            await self._heartbeat.stop()


class Heartbeat:
    """Awaits ``beat()`` every ``every`` seconds from a timer (not a task: most holds end before the
    first beat is due) until stopped or a beat returns False."""

    def __init__(self, every: float, beat: Callable[[], Awaitable[bool]]) -> None:
        self._every = every
        self._beat = beat
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(every, self._due)
        self._beating: asyncio.Task[None] | None = None

    def _due(self) -> None:
        self._timer = None
        self._beating = self._loop.create_task(self._run())

    async def _run(self) -> None:
        if await self._beat():
            self._timer = self._loop.call_later(self._every, self._due)

    async def stop(self) -> None:
        """Stop beating; a beat in flight is awaited (not cancelled: what it writes must be known)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._beating is not None:
            await self._beating
            if self._timer is not None:  # the beat that just finished scheduled the next one
                self._timer.cancel()
                self._timer = None


def _decide(
    owner: OwnerKey, sequence: int, current: AppliedGeneration | None, *, latest: bool, deleted: bool
) -> tuple[Verdict, AppliedGeneration]:
    """The verdict and the entry to write (the current facts when the set is not applied)."""
    decided = verdict(owner, sequence, current, latest=latest)
    if decided is not Verdict.APPLY:
        assert current is not None
        return decided, current
    # a set read as the last message may be below the entry (another replica applied a later one
    # after the read, or the stream was recreated): the entry's sequence never goes back
    if current is None:
        return decided, AppliedGeneration(owner.uid, owner.generation, 0, sequence, deleted)
    recorded = max(sequence, current.sequence)
    return decided, replace(
        current, uid=owner.uid, generation=owner.generation, sequence=recorded, deleted=deleted
    )


def parse(raw: bytes | None, revision: int) -> AppliedGeneration | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return AppliedGeneration(
            uid=str(data["uid"]),
            generation=int(data["generation"]),
            revision=revision,
            sequence=int(data.get("sequence", 0)),
            deleted=bool(data.get("deleted", False)),
            holder=str(data.get("holder", "")),
            until=float(data.get("until", 0.0)),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        # unreadable: it never blocks reconciling, and the compare-and-set overwrites it
        return AppliedGeneration(uid="", generation=0, revision=revision)


def encode(entry: AppliedGeneration, *, holder: str) -> bytes:
    fields: dict[str, object] = {"uid": entry.uid, "generation": entry.generation, "sequence": entry.sequence}
    if entry.deleted:
        fields["deleted"] = True
    if holder:
        fields["holder"] = holder
        fields["until"] = round(entry.until, 3)
    return json.dumps(fields).encode()
