"""Follow a stream from the last message per subject: a snapshot of the world, then its changes.

One ordered push consumer per filter (nothing durable, nothing acked: every process reads
everything, and rebuilds what it holds from the stream on start). A filter is *synced* once its
snapshot is delivered -- at once when nothing matches, else at the message with ``num_pending ==
0`` -- and :meth:`StreamFollower.seen` tells the stream sequence of the last message handled, so a
reader can wait for a message it knows about (:meth:`StreamFollower.wait_for`). The bus-fed object
view, the router's routing-table feed, the engine-load board and (from the stream's start,
``DeliverPolicy.ALL``) the router's KV-block index all read the bus this way.

An ordered consumer lives only in the server's memory: a restarted nats-server has none. nats-py
notices that only after two missed idle heartbeats (10 to 20 s), and until then a follower is blind
while everything else (publishers, durable consumers) already runs again -- a reconcile triggered
then read a view without its trigger. So after every reconnect of the connection (made by
:func:`~ferry_schemas.runtime.jetstream.connect`) the follower subscribes again at once, from the
message after the last one it handled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from ferry_schemas.runtime.jetstream import ack_position, on_reconnect

log = logging.getLogger(__name__)

Handler = Callable[[str, Msg], None]
"""``handle(key, msg)``: one message of the filter named ``key``; it must not raise."""


class StreamFollower:
    """``filters`` names each subject filter of ``stream``; ``handle`` gets each message."""

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        filters: Mapping[str, str],
        handle: Handler,
        *,
        name: str = "stream-follower",
        deliver_policy: DeliverPolicy = DeliverPolicy.LAST_PER_SUBJECT,
    ) -> None:
        self._js = js
        self.stream = stream
        self.filters = dict(filters)
        self._handle = handle
        self._name = name
        self._deliver_policy = deliver_policy
        self._synced: dict[str, asyncio.Event] = {k: asyncio.Event() for k in self.filters}
        self._seen: dict[str, int] = dict.fromkeys(self.filters, 0)
        self._advanced: dict[str, asyncio.Event] = {k: asyncio.Event() for k in self.filters}
        self._subs: dict[str, Subscription] = {}
        self._generation = 0
        """Bumped on every resubscription: a message of an older subscription is not handled."""
        self._task: asyncio.Task[None] | None = None
        self._forget_reconnects: Callable[[], None] | None = None
        self._holding: set[asyncio.Task[None]] = set()

    @property
    def synced(self) -> bool:
        return all(event.is_set() for event in self._synced.values())

    async def wait_synced(self) -> None:
        await asyncio.gather(*(e.wait() for e in self._synced.values()))

    def seen(self, key: str) -> int:
        """The stream sequence of the last message of ``key`` handled (0: none yet)."""
        return self._seen.get(key, 0)

    async def wait_for(self, key: str, sequence: int, limit: float | None = 5.0) -> bool:
        """Wait until ``key`` is synced and its message ``sequence`` (or a later one) was handled;
        False after ``limit`` seconds (None: no limit). True at once for a key this follower does not
        read."""
        if key not in self._advanced:
            return True
        loop = asyncio.get_running_loop()
        deadline = None if limit is None else loop.time() + limit
        while not (self._synced[key].is_set() and self._seen[key] >= sequence):
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._advanced[key].wait(), timeout=remaining)
            except TimeoutError:
                return False
        return True

    def when_holds(self, key: str, sequence: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once ``key``'s message ``sequence`` (or a later one) was handled: what a
        reader that stopped waiting (:meth:`wait_for` said False) and acted on less does again then, so
        the message is acted on as it is, not lost (level-triggered)."""

        async def call_when_held() -> None:
            await self.wait_for(key, sequence, limit=None)
            try:
                callback()
            except Exception:
                log.exception("%s: callback for %s message %d failed", self._name, key, sequence)

        task = asyncio.create_task(call_when_held(), name=f"{self._name}-holds-{key}-{sequence}")
        self._holding.add(task)
        task.add_done_callback(self._holding.discard)

    async def start(self) -> None:
        """Subscribe (retrying until the stream exists) without blocking the caller; subscribe again
        after every reconnect."""
        self._forget_reconnects = on_reconnect(self._js._nc, self.resubscribe)  # nats-py: no public accessor
        self._task = asyncio.create_task(self._subscribe_all(self._generation, []), name=self._name)

    def resubscribe(self) -> None:
        """Drop the subscriptions and follow again from the message after the last one handled per
        filter (a filter not read at all yet starts with its snapshot). A subscribing still under way
        stops at its next step; messages of the dropped subscriptions are not handled."""
        self._generation += 1
        old = list(self._subs.values())
        self._subs.clear()
        log.info("%s: NATS reconnected; following %s again from where it stopped", self._name, self.stream)
        self._task = asyncio.create_task(self._subscribe_all(self._generation, old), name=self._name)

    async def stop(self) -> None:
        if self._forget_reconnects is not None:
            self._forget_reconnects()
        self._generation += 1
        if self._task is not None:
            self._task.cancel()
        for task in list(self._holding):
            task.cancel()
        await self._unsubscribe(list(self._subs.values()))
        self._subs.clear()

    @staticmethod
    async def _unsubscribe(subs: list[Subscription]) -> None:
        for sub in subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                log.debug("unsubscribe failed: %r", exc)

    async def _subscribe_all(self, generation: int, previous: list[Subscription]) -> None:
        await self._unsubscribe(previous)
        for key in self.filters:
            while generation == self._generation:
                try:
                    await self._subscribe(key, generation)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # stream not declared yet, NATS reconnecting...: keep trying
                    log.warning(
                        "%s: cannot subscribe to %s (%s), retrying: %r", self._name, self.stream, key, exc
                    )
                    await asyncio.sleep(1.0)

    async def _subscribe(self, key: str, generation: int) -> None:
        async def on_message(msg: Msg) -> None:
            if generation == self._generation:
                self._on_message(key, msg)

        after = self._seen[key]
        sub = await self._js.subscribe(
            self.filters[key],
            stream=self.stream,
            cb=on_message,
            ordered_consumer=True,
            config=ConsumerConfig(opt_start_seq=after + 1) if after else None,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after else self._deliver_policy,
        )
        try:
            info = await sub.consumer_info()
        except BaseException:
            await self._unsubscribe([sub])
            raise
        if generation != self._generation:  # resubscribed (or stopped) meanwhile
            await self._unsubscribe([sub])
            return
        self._subs[key] = sub
        # Nothing pending and nothing delivered yet: nothing matches, the snapshot is empty.
        # (delivered.stream_seq is not 0 then: it starts at the stream's last sequence.)
        if info.num_pending == 0 and (info.delivered is None or not info.delivered.consumer_seq):
            self._synced[key].set()

    def _on_message(self, key: str, msg: Msg) -> None:
        self._handle(key, msg)
        position = ack_position(msg.reply)
        pending = 0
        if position is not None:
            sequence, pending = position
            self._seen[key] = max(self._seen[key], sequence)
        if pending == 0:
            self._synced[key].set()
        advanced, self._advanced[key] = self._advanced[key], asyncio.Event()
        advanced.set()
