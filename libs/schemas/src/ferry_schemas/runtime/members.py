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
follows ``<scope>.>`` only; ``scope`` is ``_`` (the default: everything) or a namespace's token (a
namespace is never ``_``).

**Buckets.** One bucket per service, ``ferry_<service>_members`` (:func:`members_bucket`:
``ferry_applier_members``, ``ferry_status_members``), owned by that service's NATS user alone: a
service can neither read nor forge another service's membership (least privilege), and a service's
keys are spread over its own replicas only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from ferry_schemas.runtime.follow import StreamFollower
from ferry_schemas.runtime.jetstream import key_value

log = logging.getLogger(__name__)

ChangeCallback = Callable[[], None]
ALL = "_"
"""The scope of members that see every key (a namespace token is never ``_``)."""


def members_bucket(service: str) -> str:
    """The membership bucket of ``service`` (``applier`` → ``ferry_applier_members``)."""
    return f"ferry_{service.removeprefix('ferry-')}_members"


def weight(member: str, key: str) -> bytes:
    """The rendezvous weight of ``key`` on ``member``: stable across processes (not ``hash()``)."""
    return hashlib.blake2b(f"{member}\x00{key}".encode(), digest_size=8).digest()


def owner(key: str, members: Iterable[str]) -> str | None:
    """The member with the highest weight for ``key`` (ties, which need equal digests, by name)."""
    return max(members, key=lambda m: (weight(m, key), m), default=None)


class Members:
    """This replica (``member_id``, a valid KV key) among the live members of ``scope`` in ``bucket``."""

    def __init__(
        self, js: JetStreamContext, bucket: str, member_id: str, *, ttl: float = 15.0, scope: str = ALL
    ) -> None:
        self._js = js
        self.bucket = bucket
        self.member_id = member_id
        self.ttl = ttl
        self.scope = scope
        self._key = f"{scope}.{member_id}"
        self._prefix = f"$KV.{bucket}.{scope}."
        self._beats: dict[str, float] = {}
        """Member → the monotonic time of its last heartbeat seen."""
        self._live: frozenset[str] = frozenset({member_id})
        self._callbacks: list[ChangeCallback] = []
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

    def owns(self, key: str) -> bool:
        """Whether this member handles ``key`` (every key while the live set is not known yet)."""
        live = self._live
        return len(live) == 1 or not self.known or owner(key, live) == self.member_id

    def on_change(self, callback: ChangeCallback) -> None:
        """Call ``callback()`` after every change of the live set."""
        self._callbacks.append(callback)

    async def start(self) -> None:
        """Bind (or create) the bucket, put the first heartbeat and follow the bucket; heartbeats
        then go out from a task. Returns before the snapshot is read (:attr:`known`)."""
        self._kv = await key_value(self._js, self.bucket, ttl=self.ttl)
        await self._beat()
        every_member = {"members": f"{self._prefix}>"}
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
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
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
        await self._kv.put(self._key, b"")

    def _handle(self, _: str, msg: Msg) -> None:
        member = msg.subject[len(self._prefix) :]
        operation = (msg.headers or {}).get(KV_OP)
        if operation in (KV_DEL, KV_PURGE):
            self._beats.pop(member, None)
        else:
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
        live = frozenset({self.member_id, *self._beats})
        if live == self._live:
            return
        log.info("%s: live members %s (were %s)", self.bucket, sorted(live), sorted(self._live))
        self._live = live
        if not self.known:
            return  # the snapshot is still being read: this member owned everything until now
        for callback in self._callbacks:
            try:
                callback()
            except Exception:
                log.exception("%s: membership callback failed", self.bucket)
