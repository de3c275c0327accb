"""Which live replica of a service handles which key: heartbeats in a JetStream KV bucket, and
rendezvous hashing of keys over the live members.

Every replica of a service follows every object change (its view); :meth:`Members.owns` says which of
them acts on a key, so each key is handled by one replica while they all run, and a departed
replica's keys move to the others (and only its keys: highest-random-weight hashing moves nothing
else). controller-runtime gets the same from one leader per controller; here the work is spread.

* **Heartbeat.** Each member puts its key (``<scope>.<member_id>``, below) every ``ttl / 3``
  seconds. The bucket keeps entries ``ttl`` seconds (``max_age``), and a stopping member deletes its
  key, so the others drop it at once.
* **Live set.** The bucket is followed from its snapshot (a
  :class:`~ferry_schemas.runtime.follow.StreamFollower`: subscribed again after a reconnect). A member
  whose last heartbeat is older than ``ttl`` is dropped locally: nats-server before 2.11 tells a
  watcher nothing when ``max_age`` removes a key (nats-server#4640), so expiry is judged here, from
  the heartbeat's server timestamp. The member itself always counts as live, even when its own
  heartbeats do not get through: two replicas owning a key at once is safe, none owning it is not.
* **Until the snapshot is read** a member owns every key.
* :meth:`Members.on_change` callbacks run after the live set changed; a service re-queues then every
  key it owns now (level-triggered: its resync), which covers the keys it just took over.

Overlap is expected and safe: while the members disagree about the live set (a heartbeat or a
deletion seen by one before the other, a member starting with everything) two replicas may act on
one key. What makes that safe is what already made shared consumers safe: the work a key causes is
serialised across replicas by a lease (the applier's owner lease), and every action is a
level-triggered reconcile of the whole key from current state.

**Scopes.** Members split one key space only with members that see the same keys: replicas of an
applier limited to one namespace (``FERRY_APPLIER_NAMESPACE``) must not hand keys to an applier of
another namespace, which would never act on them. A member's key is ``<scope>.<member_id>`` and it
splits keys only with the members of its scope; ``scope`` is ``_`` (the default: everything) or a
namespace's token (a namespace is never ``_``). What it can tell about the whole bucket — whether it
is alone in it (:attr:`Members.alone`), whether every member carries a mark — counts every scope:
an all-namespace applier and one limited to a namespace act on that namespace's owners both.

**Marks.** A member's heartbeat carries its ``mark`` (bytes, empty by default): what a release of the
service can do that an older one cannot. :meth:`Members.all_marked` says whether every live member
carries one, so a service can keep taking an older release's precautions while such a replica runs
(the applier's owner lease during a rolling upgrade, its README); :meth:`Members.on_others` callbacks
run whenever another member of any scope appears or goes.

**Buckets.** One bucket per service, ``ferry_<service>_members`` (:func:`members_bucket`:
``ferry_applier_members``, ``ferry_status_members``), owned by that service's NATS user alone: a
service can neither read nor forge another service's membership (least privilege), and a service's
keys are spread over its own replicas only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from ferry_schemas.bus import encode_token
from ferry_schemas.runtime.follow import StreamFollower
from ferry_schemas.runtime.jetstream import key_value, until_answered
from ferry_schemas.runtime.tasks import cancel_and_wait

log = logging.getLogger(__name__)

ChangeCallback = Callable[[], None]
ALL = "_"
"""The scope of members that see every key (a namespace token is never ``_``)."""


def members_bucket(service: str) -> str:
    """The membership bucket of ``service`` (``applier`` → ``ferry_applier_members``)."""
    return f"ferry_{service.removeprefix('ferry-')}_members"


def replica_id() -> str:
    """A member id for this process: host, pid and a random suffix (a restarted process is new)."""
    return encode_token(f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")


def key_name(key: tuple[str, ...]) -> str:
    """A (resource, namespace, name) key as members split keys: ``resource/namespace/name``."""
    return "/".join(key)


def weight(member: str, key: str) -> bytes:
    """The rendezvous weight of ``key`` on ``member``: stable across processes (not ``hash()``)."""
    return hashlib.blake2b(f"{member}\x00{key}".encode(), digest_size=8).digest()


def owner(key: str, members: Iterable[str]) -> str | None:
    """The member with the highest weight for ``key`` (ties, which need equal digests, by name)."""
    return max(members, key=lambda m: (weight(m, key), m), default=None)


class Members:
    """This replica (``member_id``, a valid KV key) among the live members of ``scope`` in ``bucket``."""

    def __init__(
        self,
        js: JetStreamContext,
        bucket: str,
        member_id: str,
        *,
        ttl: float = 15.0,
        scope: str = ALL,
        mark: bytes = b"",
    ) -> None:
        self._js = js
        self.bucket = bucket
        self.member_id = member_id
        self.ttl = ttl
        self.scope = scope
        self._key = f"{scope}.{member_id}"
        self._scoped = f"{scope}."
        self._prefix = f"$KV.{bucket}."
        self.mark = mark
        self._beats: dict[str, float] = {}
        """Member key (``<scope>.<member_id>``, every scope) → the monotonic time of its last heartbeat."""
        self._marks: dict[str, bytes] = {}
        """Member key → the mark its last heartbeat carried."""
        self._live: frozenset[str] = frozenset({member_id})
        self._others: frozenset[str] = frozenset()
        """The live member keys of every scope but this member's own."""
        self._callbacks: list[ChangeCallback] = []
        self._others_callbacks: list[ChangeCallback] = []
        self._kv: KeyValue | None = None
        self._follower: StreamFollower | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def known(self) -> bool:
        """Whether the bucket's snapshot was read (before that this member owns everything)."""
        return self._follower is not None and self._follower.synced

    @property
    def live(self) -> frozenset[str]:
        """The live members, this one included."""
        return self._live

    @property
    def alone(self) -> bool:
        """Whether this member is known to be the only live one in the bucket (of any scope)."""
        return self.known and not self._others

    def all_marked(self, mark: bytes) -> bool:
        """Whether every live member (of any scope) is known to carry ``mark`` (False until the
        snapshot is read)."""
        return self.known and all(self._marks.get(key) == mark for key in self._others)

    def owns(self, key: str) -> bool:
        """Whether this member handles ``key`` (every key while the live set is not known yet)."""
        live = self._live
        return len(live) == 1 or not self.known or owner(key, live) == self.member_id

    def on_change(self, callback: ChangeCallback) -> None:
        """Call ``callback()`` after every change of the live set."""
        self._callbacks.append(callback)

    def on_others(self, callback: ChangeCallback) -> None:
        """Call ``callback()`` after another member of any scope appeared or went."""
        self._others_callbacks.append(callback)

    async def start(self) -> None:
        """Bind (or create) the bucket, put the first heartbeat and follow the bucket; heartbeats
        then go out from a task. Returns before the snapshot is read (:attr:`known`)."""
        self._kv = await key_value(self._js, self.bucket, ttl=self.ttl)
        await until_answered(self._beat, f"first heartbeat in {self.bucket}")
        every_member = {"members": f"{self._prefix}>"}  # every scope's: alone and marks count them all
        name = f"members-{self.bucket}"
        self._follower = StreamFollower(self._js, f"KV_{self.bucket}", every_member, self._handle, name=name)
        await self._follower.start()
        self._task = asyncio.create_task(self._run(), name=f"members-{self.bucket}")

    async def wait_known(self) -> None:
        assert self._follower is not None, "start() first"
        await self._follower.wait_synced()

    async def stop(self) -> None:
        """Stop heartbeating and leave: the key is deleted, so the others take over at once."""
        if self._task is not None:
            await cancel_and_wait(self._task)  # its heartbeat's request can swallow one cancel
        if self._follower is not None:
            await self._follower.stop()
        if self._kv is not None:
            try:
                await self._kv.delete(self._key)
            except Exception as exc:  # NATS away: the key expires after ttl instead
                log.warning("%s: could not leave (%s); the key expires in %.0fs", self.bucket, exc, self.ttl)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            self._prune()
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS briefly away: this member still counts itself live
                log.warning("%s: heartbeat of %s failed: %s", self.bucket, self.member_id, exc)

    async def _beat(self) -> None:
        assert self._kv is not None
        await self._kv.put(self._key, self.mark)

    def _handle(self, _: str, msg: Msg) -> None:
        member = msg.subject[len(self._prefix) :]  # <scope>.<member_id>
        operation = (msg.headers or {}).get(KV_OP)
        if operation in (KV_DEL, KV_PURGE):
            self._beats.pop(member, None)
            self._marks.pop(member, None)
        else:
            self._marks[member] = msg.data or b""
            try:  # how long ago it beat, by the server's clock (a snapshot holds beats up to ttl old)
                age = time.time() - msg.metadata.timestamp.timestamp()
            except Exception:
                age = 0.0
            self._beats[member] = time.monotonic() - min(max(age, 0.0), self.ttl)
        self._prune()

    def _prune(self) -> None:
        """Drop members whose last heartbeat is older than ``ttl``; call the callbacks on a change."""
        horizon = time.monotonic() - self.ttl
        for member in [m for m, beat in self._beats.items() if beat < horizon]:
            del self._beats[member]
            self._marks.pop(member, None)
        others = frozenset(key for key in self._beats if key != self._key)
        scoped = (key.partition(".")[2] for key in others if key.startswith(self._scoped))
        live = frozenset({self.member_id, *scoped})
        if others == self._others:
            return
        self._others = others
        if self.known:
            self._call(self._others_callbacks)
        if live == self._live:
            return
        log.info("%s: live members %s (were %s)", self.bucket, sorted(live), sorted(self._live))
        self._live = live
        if self.known:  # before, while the snapshot is read, this member owned everything
            self._call(self._callbacks)

    def _call(self, callbacks: list[ChangeCallback]) -> None:
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("%s: membership callback failed", self.bucket)
