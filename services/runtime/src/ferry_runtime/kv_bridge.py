"""The KV-event publisher: the engine's ZMQ ``KVEventBatch`` stream → ``ferry.kv.<ns>.<model>.<pod>``.

Each engine batch that changes the pod's block set becomes one :class:`KvBlockEvents` message (in
order, published to JetStream and acknowledged before the next). A snapshot of every block goes
out when the bridge starts (empty: a new epoch tells consumers to forget what an earlier sidecar
of this pod reported) and every ``snapshot_interval`` seconds, so a consumer reading the stream
(kept ``KV_MAX_AGE_SECONDS``) always finds one. A sequence gap in the engine's frames is counted
(``ferry_runtime_kv_gaps_total``); the next snapshot carries what the bridge knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import aiohttp
import zmq
import zmq.asyncio
from ferry_schemas.bus import MSG_ID_HEADER
from ferry_schemas.kv import KvBlockEvents
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge

from ferry_runtime.blocks import BlockTranslator, Change, unknown_adapter
from ferry_runtime.lora_names import LoraNames
from ferry_runtime.settings import RuntimeSettings
from ferry_runtime.vllm_events import BadBatch, Cleared, Event, decode_batch

log = logging.getLogger(__name__)

BATCHES = Counter("ferry_runtime_kv_batches_total", "Engine KV event batches received.")
PUBLISHED = Counter("ferry_runtime_kv_messages_total", "KV messages published on the bus.", ["kind"])
ERRORS = Counter("ferry_runtime_kv_errors_total", "KV bridge failures.", ["stage"])
GAPS = Counter("ferry_runtime_kv_gaps_total", "Engine batches missed (sequence gaps) and not replayed.")
REPLAYED = Counter("ferry_runtime_kv_replayed_total", "Engine batches recovered from the replay socket.")
SKIPPED = Counter("ferry_runtime_kv_skipped_blocks_total", "Stored blocks whose parent was never seen.")
HELD = Gauge("ferry_runtime_kv_blocks", "Blocks the engine holds, as the bridge knows them.")


class KvEventBridge:
    name = "kv-events"

    def __init__(self, settings: RuntimeSettings, js: JetStreamContext) -> None:
        self.settings = settings
        self.js = js
        self.loras = LoraNames()
        self.blocks = BlockTranslator(self.loras.name)
        self._session: aiohttp.ClientSession | None = None  # for /v1/models (adapter names)
        self.epoch = uuid.uuid4().hex[:12]
        self.seq = 0
        self.connected = False
        self._last_engine_seq: int | None = None
        self._lock = asyncio.Lock()  # one message at a time, in order
        HELD.set_function(lambda: len(self.blocks.held))

    def message(self, change: Change | None) -> KvBlockEvents:
        """The next message: ``change``, or a snapshot when ``None``."""
        self.seq += 1
        s = self.settings
        common = {
            "namespace": s.namespace, "pod": s.pod, "model": s.model, "epoch": self.epoch,
            "seq": self.seq, "block_size": self.blocks.block_size or 0,
        }  # fmt: skip
        if change is None:
            return KvBlockEvents(snapshot=True, stored=self.blocks.snapshot(), **common)
        return KvBlockEvents(cleared=change.cleared, stored=change.stored, removed=change.removed, **common)

    async def publish(self, change: Change | None) -> None:
        async with self._lock:
            msg = self.message(change)
            data = msg.to_bytes()
            while True:
                try:
                    await self.js.publish(
                        msg.subject, data, headers={MSG_ID_HEADER: f"{self.epoch}/{msg.seq}"}
                    )
                    break
                except Exception as exc:  # NATS away: keep the order, retry until it is back
                    ERRORS.labels("publish").inc()
                    log.warning("publishing %s failed, retrying: %r", msg.subject, exc)
                    await asyncio.sleep(0.5)
            PUBLISHED.labels("snapshot" if msg.snapshot else "changes").inc()

    def handle(self, frames: list[bytes]) -> Change | None:
        """One ZMQ message ``(topic, seq, payload)`` → the change it makes (None if nothing)."""
        decoded = self.decode(frames)
        return None if decoded is None else self.apply(decoded)

    def decode(self, frames: list[bytes]) -> list[Event] | None:
        """One ZMQ message's events (a ``Cleared`` first when the engine restarted); None if bad."""
        if len(frames) != 3:
            ERRORS.labels("decode").inc()
            log.warning("ignoring a KV event message of %d frames", len(frames))
            return None
        _, seq_bytes, payload = frames
        seq = int.from_bytes(seq_bytes, "big", signed=True)
        last = self._last_engine_seq
        restarted = last is not None and seq <= last  # a new engine process numbers from 0 again
        if restarted:
            log.warning("engine KV sequence went back from %d to %d: a new engine, an empty cache", last, seq)
        elif last is not None and seq > last + 1:
            GAPS.inc(seq - last - 1)
            log.warning("missed engine KV batches %d..%d", last + 1, seq - 1)
        self._last_engine_seq = seq
        try:
            _, events = decode_batch(payload)
        except BadBatch as exc:
            ERRORS.labels("decode").inc()
            log.warning("undecodable KV event batch %d: %s", seq, exc)
            return None
        BATCHES.inc()
        return [Cleared(), *events] if restarted else events

    def apply(self, events: list[Event]) -> Change | None:
        change = self.blocks.apply(events)
        if change.skipped:
            SKIPPED.inc(change.skipped)
        return change if change else None

    async def receive(self, frames: list[bytes]) -> None:
        """Apply one engine message, first replaying the batches missed before it (when possible)."""
        if self.settings.kv_events_replay_endpoint and len(frames) == 3:
            seq = int.from_bytes(frames[1], "big", signed=True)
            last = self._last_engine_seq
            first = 0 if last is None or seq <= last else last + 1
            if seq > first:
                for missed in await self.replay(first, seq):
                    REPLAYED.inc()
                    await self._bridge(missed)
        await self._bridge(frames)

    async def _bridge(self, frames: list[bytes]) -> None:
        events = self.decode(frames)
        if events is None:
            return
        if unknown_adapter(events, self.loras.name):
            await self._read_adapters()
        if (change := self.apply(events)) is not None:
            await self.publish(change)

    async def _read_adapters(self) -> None:
        """An event named an adapter by an id not known yet: read the engine's ``/v1/models``."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0, connect=0.5))
        await self.loras.refresh(self._session, self.settings.engine_base_url)

    async def replay(self, first: int, until: int) -> list[list[bytes]]:
        """Batches ``first``..``until - 1`` that the engine's replay socket still has (vLLM's protocol:
        a DEALER sends ``[b"", first]``, the answers are ``[b"", seq, payload]`` up to seq -1)."""
        endpoint = self.settings.kv_events_replay_endpoint
        assert endpoint is not None
        socket = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        socket.connect(endpoint)
        found: list[list[bytes]] = []
        try:
            await socket.send_multipart([b"", first.to_bytes(8, "big")])
            while True:
                reply = await asyncio.wait_for(socket.recv_multipart(), self.settings.replay_timeout)
                if len(reply) != 3:
                    continue
                seq = int.from_bytes(reply[1], "big", signed=True)
                if seq < 0:
                    break
                if first <= seq < until:
                    found.append([b"", reply[1], reply[2]])
        except TimeoutError:
            ERRORS.labels("replay").inc()
            log.warning("the replay socket %s did not answer for batches %d..%d", endpoint, first, until - 1)
        finally:
            socket.close(linger=0)
        return found

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        socket = zmq.asyncio.Context.instance().socket(zmq.SUB)
        socket.setsockopt(zmq.RCVHWM, 100_000)
        socket.connect(s.kv_events_endpoint)
        socket.setsockopt(zmq.SUBSCRIBE, s.kv_events_topic.encode())
        self.connected = True
        log.info("bridging KV events from %s (topic %r) to the bus", s.kv_events_endpoint, s.kv_events_topic)
        await self.publish(None)
        snapshots = asyncio.create_task(self._snapshots(stop), name="kv-snapshots")
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                receive = asyncio.ensure_future(socket.recv_multipart())
                done, _ = await asyncio.wait({receive, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if receive not in done:
                    receive.cancel()
                    break
                await self.receive(receive.result())
        finally:
            snapshots.cancel()
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await snapshots
            socket.close(linger=0)
            if self._session is not None:
                await self._session.close()
                self._session = None

    async def _snapshots(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.snapshot_interval)
            if not stop.is_set():
                await self.publish(None)
